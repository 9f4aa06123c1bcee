"""Encrypted linear layers: ciphertext x plaintext-weight matmul by the diagonal method with
baby-step/giant-step and hoisted baby-step rotations, in either slot layout of packing.py.

For one token block and one (output chunk o, input chunk c) pair, with rot(v, k) moving
the input by k diagonals (a slot rotation by k * packing.rotation_unit) and K the
layout's diagonals per block:

    y_o = lanesum( sum_g rot( sum_c sum_b diag'[o][c][g*g1 + b] * rot(x_c, b), g*g1 ) )

where diag[k] = packing.diagonal(block (o, c), k) and diag' is diag pre-rotated by
-g*g1, so the g1 baby-step rotations of each input chunk are computed once (hoisted)
and shared by every output chunk, and only K/g1 giant-step rotations remain per
output chunk; lanesum adds the lanes of the lane layout (nothing in the token-batched
and the complex lane one). The complex lane layout has two diagonals per k, and the
sum over the second is conjugated before it is added: y = M z + conj(N' z) (see
packing.ComplexLanePacking). Plaintext diagonals are encoded once per layer and cached.
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import openfhe as fhe

from hsi.ckks.packing import AnyPacking
from zones.common.ckks.crypto import conjugation_index


@dataclass
class OpCounts:
    """Homomorphic operations performed, for benchmarks and the cost model."""

    rotations: int = 0
    hoisted_rotations: int = 0
    ptmults: int = 0
    adds: int = 0

    def add(self, other: OpCounts) -> None:
        """Accumulate another count."""
        self.rotations += other.rotations
        self.hoisted_rotations += other.hoisted_rotations
        self.ptmults += other.ptmults
        self.adds += other.adds


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="he-linear")


def plaintext_bytes(ring_dim: int, depth: int) -> int:
    """Memory one cached weight plaintext takes: its RNS polynomial over depth + 1 towers and its slot values
    (measured: 30,720 plaintexts at N=2^14, depth 1 held 12.8 GB, 417 KB each)."""
    return ring_dim * 8 * (depth + 1) + ring_dim * 8


def baby_giant_split(width: int) -> int:
    """Baby-step count g1 for a block of `width` diagonals.

    Hoisted baby steps cost ~0.6 of a full giant-step rotation, so g1 is the power of two
    near sqrt(width / 0.6) that minimises (g1 - 1) * 0.6 + (width / g1 - 1).
    """
    best, best_cost = 1, math.inf
    g1 = 1
    while g1 <= width:
        cost = (g1 - 1) * 0.6 + (width // g1 - 1)
        if cost < best_cost:
            best, best_cost = g1, cost
        g1 *= 2
    return best


def conjugate(cc: fhe.CryptoContext, ct: fhe.Ciphertext) -> fhe.Ciphertext:
    """The ciphertext of the slot-wise complex conjugate."""
    keys = fhe.CryptoContext.GetEvalAutomorphismKeyMap(ct.GetKeyTag())
    return cc.EvalAutomorphism(ct, conjugation_index(cc), keys)


def _accumulate(cc: fhe.CryptoContext, acc: fhe.Ciphertext | None, x: fhe.Ciphertext,
                counts: OpCounts) -> fhe.Ciphertext:
    """acc + x, adding in place into acc (x itself when acc is None, the first term)."""
    if acc is None:
        return x
    cc.EvalAddInPlace(acc, x)
    counts.adds += 1
    return acc


def rotation_indices(packing: AnyPacking) -> list[int]:
    """Slot rotations (positive, left) every linear layer needs under this packing, whatever its shape."""
    diagonals = packing.diagonals
    g1 = baby_giant_split(diagonals)
    b = packing.rotation_unit
    steps = {b * k for k in range(1, g1)} | {b * g * g1 for g in range(1, diagonals // g1)}
    return sorted(steps | set(packing.lane_sums))


@dataclass
class EncryptedLinear:
    """A linear layer y = x W^T + bias with W in plaintext, ready to run on packed ciphertexts."""

    cc: fhe.CryptoContext
    packing: AnyPacking  # of the input
    weight: np.ndarray  # (d_out, d_in)
    bias: np.ndarray | None
    cached: bool = True  # False: keep the diagonals as floats and encode them during each call (memory-bound)
    g1: int = field(init=False)
    _diags: dict[tuple[int, int, int, int], fhe.Plaintext] = field(init=False, default_factory=dict)
    _raw: dict[tuple[int, int, int, int], np.ndarray] = field(init=False, default_factory=dict)
    _bias: list[fhe.Plaintext] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if not self.packing.linear_input:
            raise ValueError(f"a linear layer does not take input packed {self.packing.meta()['packing']}")
        self.weight = np.asarray(self.weight, dtype=np.float64)
        self.g1 = baby_giant_split(self.packing.diagonals)
        self._encode()

    @property
    def d_out(self) -> int:
        """Output features."""
        return int(self.weight.shape[0])

    @property
    def d_in(self) -> int:
        """Input features."""
        return int(self.weight.shape[1])

    def _encode(self) -> None:
        packing, width, g1 = self.packing, self.packing.width, self.g1
        _, n_in = packing.grid(1, self.d_in)
        _, n_out = packing.grid(1, self.d_out)
        padded = np.zeros((n_out * width, n_in * width))
        padded[: self.d_out, : self.d_in] = self.weight
        jobs: list[tuple[tuple[int, int, int, int], np.ndarray]] = []
        for o in range(n_out):
            for c in range(n_in):
                block = padded[o * width:(o + 1) * width, c * width:(c + 1) * width]
                for k in range(packing.diagonals):
                    for term, diag in enumerate(packing.diagonal_terms(block, k)):
                        if not diag.any():
                            continue  # zero padding: nothing to multiply
                        g = k // g1
                        # pre-rotate by -g*g1 diagonals so the giant-step rotation lands it in place
                        jobs.append(((o, c, k, term), np.roll(diag, g * g1)))
        if not self.cached:
            self._raw = dict(jobs)
        else:
            # encoding runs partly outside the GIL: two threads encode a layer ~1.7x faster than one
            encoded = _pool().map(lambda job: self._encode_diag(job[1]), jobs)
            self._diags.update(zip((key for key, _ in jobs), encoded, strict=True))
        if self.bias is not None:
            padded_bias = np.zeros(n_out * width)
            padded_bias[: self.d_out] = self.bias
            # added after the rescale, so encoded for level 1
            self._bias = [self.cc.MakeCKKSPackedPlaintext(packing.bias_slots(padded_bias[o * width:(o + 1) * width]),
                                                          1, 1) for o in range(n_out)]

    def _encode_diag(self, diag: np.ndarray) -> fhe.Plaintext:
        return self.cc.MakeCKKSPackedPlaintext(self.packing.expand(diag))

    def _diag(self, key: tuple[int, int, int, int]) -> fhe.Plaintext | None:
        if self.cached:
            return self._diags.get(key)
        raw = self._raw.get(key)
        return None if raw is None else self._encode_diag(raw)

    @property
    def plaintexts(self) -> int:
        """Number of diagonal plaintexts (cached, or encoded per call)."""
        return len(self._diags) + len(self._raw)

    def forward_block(self, chunks: list[fhe.Ciphertext], counts: OpCounts) -> list[fhe.Ciphertext]:
        """Apply the layer to one token block (its input feature chunks); returns its output chunks."""
        cc, b, g1 = self.cc, self.packing.rotation_unit, self.g1
        m = 2 * cc.GetRingDimension()
        baby: list[list[fhe.Ciphertext]] = []
        for ct in chunks:
            pre = cc.EvalFastRotationPrecompute(ct)
            rotated = _pool().map(lambda s, ct=ct, pre=pre: cc.EvalFastRotation(ct, b * s, m, pre), range(1, g1))
            baby.append([ct, *rotated])
            counts.hoisted_rotations += g1 - 1
        _, n_out = self.packing.grid(1, self.d_out)

        def giant_step(o: int, g: int, term: int) -> tuple[fhe.Ciphertext | None, OpCounts]:
            local = OpCounts()
            inner = None
            for c, rotated in enumerate(baby):
                for s in range(g1):
                    pt = self._diag((o, c, g * g1 + s, term))
                    if pt is None:
                        continue
                    inner = _accumulate(cc, inner, cc.EvalMult(rotated[s], pt), local)
                    local.ptmults += 1
            if inner is not None and g:
                inner = cc.EvalRotate(inner, b * g * g1)
                local.rotations += 1
            return inner, local

        # Giant steps are independent; OpenFHE releases the GIL, so threads use every core.
        terms = self.packing.terms
        jobs = [(o, g, t) for o in range(n_out) for g in range(self.packing.diagonals // g1) for t in range(terms)]
        results = list(_pool().map(lambda job: giant_step(*job), jobs))
        outputs = []
        for o in range(n_out):
            sums: list[fhe.Ciphertext | None] = [None] * terms
            for (job_o, _, t), (inner, local) in zip(jobs, results, strict=True):
                if job_o != o:
                    continue
                counts.add(local)
                if inner is not None:
                    sums[t] = _accumulate(cc, sums[t], inner, counts)
            acc = sums[0]
            if terms == 2 and sums[1] is not None:
                acc = _accumulate(cc, acc, conjugate(cc, sums[1]), counts)
                counts.rotations += 1
            if acc is None:  # an all-zero weight block
                acc = cc.EvalMult(chunks[0], 0.0)
            for step in self.packing.lane_sums:
                cc.EvalAddInPlace(acc, cc.EvalRotate(acc, step))
                counts.rotations += 1
                counts.adds += 1
            acc = cc.Rescale(acc)
            if self._bias:
                acc = cc.EvalAdd(acc, self._bias[o])
                counts.adds += 1
            outputs.append(acc)
        return outputs

    def forward(self, blocks: list[list[fhe.Ciphertext]], counts: OpCounts | None = None) -> list[list[fhe.Ciphertext]]:
        """Apply the layer to every token block."""
        counts = counts if counts is not None else OpCounts()
        return [self.forward_block(chunks, counts) for chunks in blocks]
