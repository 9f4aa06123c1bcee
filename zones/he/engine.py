"""The HE zone's engine: linear layers and residual additions on CKKS ciphertexts, with public keys only."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import openfhe as fhe
from numpy.typing import NDArray

from hsi import kinds
from hsi.engine import RunContext, ZoneEngine
from hsi.ir import Graph, OpType, ZoneKind
from hsi.kinds import register_engine
from hsi.plan import Stage
from hsi.policy import Policy
from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from protos import tensor_pb2 as pb
from zones.common.ckks.tensor import CipherTensor
from zones.he.cache import PlaintextCache
from zones.he.ciphertexts import Ciphertexts
from zones.he.keys import KeyMaterial
from zones.he.layouts import Layouts
from zones.he.linear import OpCounts
from zones.he.masks import ConversionMasks, EncodedMask

__all__ = ["EncodedMask", "HeEngine"]


@register_engine(ZoneKind.HE)
class HeEngine(ZoneEngine):
    """CKKS evaluation with the policy's parameters; holds public and evaluation keys, never a secret key. Its
    parts: the key material, the layouts, the ciphertexts it reads and keeps, the plaintext cache and the
    conversion masks."""

    def __init__(self, policy: Policy, zone: str, party: str) -> None:
        self.keys = KeyMaterial(policy, zone, party)  # checks the parameters first
        self.policy, self.zone, self.party, self.spec = policy, zone, party, self.keys.spec
        self.layouts = Layouts.of(self.spec)
        self.packing, self.lane, self.single = self.layouts.batched, self.layouts.lane, self.layouts.single
        self.packings = self.layouts.accepted
        self.ciphertexts = Ciphertexts(self.keys, self.layouts)
        self.cache = PlaintextCache(policy, zone, self.keys, self.layouts)
        self.masks = ConversionMasks(self.keys, self.ciphertexts)
        self._graph: Graph | None = None
        self._lock = threading.Lock()
        self.counts = OpCounts()

    # --- key material (KeyedEngine)
    def rotations(self) -> list[int]:
        """Slot rotations the linear ops of this zone need (one set for every shape under each input layout)."""
        return self.layouts.rotations()

    def key_requirements(self) -> tuple[str, list[int], str]:
        """(key handle, rotations, CKKS parameters as JSON) the zone needs installed."""
        return self.keys.requirements(self.rotations())

    def install(self, data: bytes, meta: dict[str, str]) -> tuple[str, int]:
        """Install a public-material bundle; (key tag, rotation keys) on success. What was bound to the previous
        context goes: the encoded plaintexts, the ciphertexts kept deserialised and the masks made ahead."""
        key_tag = self.keys.install(data, meta)
        self.cache.clear()
        self.ciphertexts.clear()
        self.masks.clear()
        return key_tag, len(self.rotations())

    def fetch_material(self) -> None:
        """Take the public material from the policy's TEE key service, after verifying its attestation."""
        bundle = self.keys.fetch(self.rotations())
        if bundle is not None:
            self.install(*bundle)

    # --- pushed tensors (the zone service's CheckingEngine)
    def check_incoming(self, name: str, t: StoredTensor) -> None:
        """Refuse a pushed ciphertext tensor that would fail when a stage reads it (see Ciphertexts.admit), on
        push; public material is fetched first if none is installed yet."""
        if t.encoding != pb.CKKS:
            return
        if not self.keys.installed:
            self.fetch_material()
        self.keys.context()  # FAILED_PRECONDITION without material
        self.ciphertexts.admit(name, t)

    # --- conversions with MPC (MaskingEngine)
    def mask(self, name: str, t: StoredTensor, bits: int) -> tuple[NDArray[np.float64], StoredTensor]:
        """he->mpc: (r, ct(x - m)), see ConversionMasks.mask."""
        return self.masks.mask(name, t, bits)

    def piece(self, name: str, t: StoredTensor) -> StoredTensor | EncodedMask:
        """mpc->he: one piece as it is kept until the other arrives, see ConversionMasks.piece."""
        return self.masks.piece(name, t)

    def unmask(self, name: str, parts: list[StoredTensor | EncodedMask]) -> StoredTensor:
        """mpc->he: the two pieces made one ciphertext tensor, see ConversionMasks.unmask."""
        return self.masks.unmask(name, parts)

    # --- evaluation (ZoneEngine)
    def load_stage(self, stage: Stage, graph: Graph) -> None:
        """Encode the weight plaintexts of the stage's linear ops (see PlaintextCache.load); fetch public
        material first if needed."""
        if not self.keys.installed:
            self.fetch_material()
        self.keys.context()
        self._graph = graph
        self.cache.prepare(graph)
        runs = kinds.spec(ZoneKind.HE).runs
        for name in stage.ops:
            op = graph.op(name)
            if op.type not in runs:
                raise ZoneError(grpc.StatusCode.UNIMPLEMENTED, f"HE zone cannot run {op.type.value} op {name!r}")
            if op.type == OpType.LINEAR:
                self.cache.load(stage, op)

    def linear(self, stage: Stage, name: str, x: CipherTensor, counts: OpCounts) -> CipherTensor:
        """Apply the linear op `name` of `stage` in the layout its input arrives in."""
        if not x.packing.linear_input:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"op {name!r} cannot take its input packed {x.packing.meta()['packing']} (a linear "
                            "layer's output layout); it takes the token-batched or the staggered lane layout")
        assert self._graph is not None
        layer = self.cache.layer(stage, self._graph.op(name), x.packing)
        if x.features != layer.d_in:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"op {name!r} takes {layer.d_in} features, tensor has {x.features}")
        if x.level >= self.spec.ckks.depth:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"op {name!r} needs one multiplicative level; the input is at level {x.level} of "
                            f"depth {self.spec.ckks.depth} (refresh it through MPC or the enclave first)")
        return CipherTensor(layer.forward(x.blocks, counts), x.packing.output, x.tokens, layer.d_out)

    def add(self, a: CipherTensor, b: CipherTensor) -> CipherTensor:
        """Elementwise sum of two ciphertext tensors (levels aligned)."""
        cc = self.keys.context()
        if (a.tokens, a.features) != (b.tokens, b.features):
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"cannot add tensors of shapes {[a.tokens, a.features]} and {[b.tokens, b.features]}")
        if a.packing != b.packing:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"cannot add tensors packed {a.packing.meta()['packing']} and "
                            f"{b.packing.meta()['packing']}")
        blocks = [[_aligned_add(cc, x, y) for x, y in zip(ra, rb, strict=True)]
                  for ra, rb in zip(a.blocks, b.blocks, strict=True)]
        return CipherTensor(blocks, a.packing, a.tokens, a.features)

    def mul_const(self, a: CipherTensor, c: float) -> CipherTensor:
        """Multiply by a public plaintext constant (uses one level)."""
        cc = self.keys.context()
        if a.level >= self.spec.ckks.depth:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"multiplying by a constant needs one level; the input is at level {a.level}")
        return CipherTensor([[cc.Rescale(cc.EvalMult(ct, float(c))) for ct in row] for row in a.blocks],
                            a.packing, a.tokens, a.features)

    def run_stage(self, stage: Stage, inputs: dict[str, StoredTensor], ctx: RunContext) -> dict[str, StoredTensor]:
        """Run the stage's linear and add ops on ciphertexts."""
        assert self._graph is not None
        self.keys.context()
        env = {n: self.ciphertexts.read(n, t) for n, t in inputs.items()}
        counts = OpCounts()
        for name in stage.ops:
            op = self._graph.op(name)
            if op.type == OpType.LINEAR:
                env[name] = self.linear(stage, name, env[op.inputs[0]], counts)
            elif op.type == OpType.ADD:
                env[name] = self.add(env[op.inputs[0]], env[op.inputs[1]])
            else:  # load_stage refuses it first
                raise ZoneError(grpc.StatusCode.UNIMPLEMENTED, f"HE zone cannot run {op.type.value} op {name!r}")
        with self._lock:
            self.counts.add(counts)
        return {n: self.ciphertexts.store(env[n]) for n in stage.outputs}

    def release(self, session: str) -> None:
        """The HE zone keeps no per-session state beyond the tensors the service holds."""

    def close(self) -> None:
        """Drop the cached plaintexts and OpenFHE's global contexts and keys (zone shutdown)."""
        self.cache.clear()
        self.ciphertexts.clear()
        self.masks.clear()
        self.keys.clear()
        fhe.ReleaseAllContexts()


def _aligned_add(cc: fhe.CryptoContext, x: fhe.Ciphertext, y: fhe.Ciphertext) -> fhe.Ciphertext:
    # FIXEDMANUAL needs equal levels: bring the fresher operand down first.
    if x.GetLevel() < y.GetLevel():
        x = cc.LevelReduce(x, None, y.GetLevel() - x.GetLevel())
    elif y.GetLevel() < x.GetLevel():
        y = cc.LevelReduce(y, None, x.GetLevel() - y.GetLevel())
    return cc.EvalAdd(x, y)
