"""Distributed comparison functions (Boyle et al., EUROCRYPT 2021, Fig. 1), vectorised over many elements.

A DCF key pair for (alpha, beta) on m-bit inputs: evaluated at any public x, the two parties' outputs add up
(mod 2^64) to beta if x < alpha, else 0; either key alone is pseudo-random. Each element has its own alpha and
beta. The length-doubling PRG is fixed-key AES-128 in the correlation-robust form AES_K(s ^ j) ^ s ^ j
(j = 0, 1, 2: the left seed and bit, the right seed and bit, the two payload words), as FSS libraries use it.
The key: each party's 128-bit start seed (drawn from the stream it shares with the dealer) and the correction
words, identical in both keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# public and fixed: the PRG is AES as a random permutation, not a keyed secret
_PRG_KEY = hashlib.sha256(b"hsi dcf prg, fixed-key AES-128").digest()[:16]
_ECB = Cipher(algorithms.AES(_PRG_KEY), modes.ECB())  # noqa: S305 (a block-wise permutation, not encryption)
_ONE = np.uint64(1)
MAX_BITS = 32  # two bit corrections a level, packed in one 64-bit word
U64 = np.uint64


@dataclass(frozen=True)
class Corrections:
    """The correction words of M keys on m-bit inputs (shared by both parties' keys)."""

    seed: np.ndarray      # (M, m, 2) uint64: the seed correction of each level
    value: np.ndarray     # (M, m) uint64: the payload correction of each level
    bits: np.ndarray      # (M,) uint64: level i's left bit correction at bit 2i, its right one at bit 2i + 1
    last: np.ndarray      # (M,) uint64: the final correction

    @property
    def levels(self) -> int:
        """m, the input bits."""
        return int(self.value.shape[1])

    def words(self) -> np.ndarray:
        """The corrections as (M, 3m + 2) uint64 words, the form they travel in."""
        m = self.levels
        return np.concatenate([self.seed.reshape(-1, 2 * m), self.value, self.bits[:, None], self.last[:, None]],
                              axis=1)

    @staticmethod
    def from_words(words: np.ndarray, levels: int) -> Corrections:
        """The inverse of `words`; ValueError when the width does not fit `levels`."""
        m = levels
        if words.ndim != 2 or words.shape[1] != 3 * m + 2:
            raise ValueError(f"DCF corrections for {m}-bit inputs are {3 * m + 2} words per element, "
                             f"not {words.shape[1:]}")
        w = words.view(U64)
        return Corrections(w[:, :2 * m].reshape(-1, m, 2), w[:, 2 * m:3 * m], w[:, 3 * m].copy(),
                           w[:, 3 * m + 1].copy())


def _expand(s: np.ndarray) -> tuple[np.ndarray, ...]:
    """G(s) for seeds s (M, 2): left seed, left bit, right seed, right bit, left payload, right payload."""
    m = s.shape[0]
    tweaked = np.repeat(s[None], 3, axis=0)
    tweaked[1, :, 0] ^= U64(1)
    tweaked[2, :, 0] ^= U64(2)
    data = np.ascontiguousarray(tweaked).tobytes()
    enc = _ECB.encryptor()
    out = np.frombuffer(enc.update(data) + enc.finalize(), dtype=U64).reshape(3, m, 2) ^ tweaked
    left, right = out[0].copy(), out[1].copy()
    t_left, t_right = left[:, 0] & _ONE, right[:, 0] & _ONE
    left[:, 0] &= ~_ONE
    right[:, 0] &= ~_ONE
    return left, t_left, right, t_right, out[2, :, 0], out[2, :, 1]


def _bit(x: np.ndarray, level: int, m: int) -> np.ndarray:
    return (x >> U64(m - 1 - level)) & _ONE


def _signed(t: np.ndarray) -> np.ndarray:
    """(-1)^t in the group Z_2^64."""
    return np.where(t.astype(bool), ~U64(0), _ONE)


def _check(x: np.ndarray, m: int, what: str) -> np.ndarray:
    if not 1 <= m <= MAX_BITS:
        raise ValueError(f"DCF inputs are 1..{MAX_BITS} bits, not {m}")
    x = np.asarray(x).astype(U64)
    if x.ndim != 1 or bool((x >> U64(m)).any()):
        raise ValueError(f"{what} must be a vector of {m}-bit values")
    return x


def gen(alpha: np.ndarray, beta: np.ndarray, s0: np.ndarray, s1: np.ndarray, m: int) -> Corrections:
    """The corrections of keys with start seeds s0, s1 (M, 2) for f(x) = beta if x < alpha else 0."""
    alpha = _check(alpha, m, "alpha")
    beta = np.asarray(beta).astype(U64)
    s = np.stack([s0.astype(U64), s1.astype(U64)])  # both parties' seeds, expanded together: (2, M, 2)
    s[:, :, 0] &= ~_ONE
    n = alpha.shape[0]
    t = np.stack([np.zeros(n, U64), np.ones(n, U64)])
    v_alpha = np.zeros(n, U64)
    seed_cw, value_cw, bits = np.zeros((n, m, 2), U64), np.zeros((n, m), U64), np.zeros(n, U64)
    with np.errstate(over="ignore"):
        for i in range(m):
            a = _bit(alpha, i, m)
            right = a.astype(bool)
            sl, tl, sr, tr, vl, vr = (g.reshape(2, n, *g.shape[1:]) for g in _expand(s.reshape(-1, 2)))
            lose_s = np.where(right[None, :, None], sl, sr)
            keep_s = np.where(right[None, :, None], sr, sl)
            lose_v, keep_v = np.where(right, vl, vr), np.where(right, vr, vl)
            keep_t = np.where(right, tr, tl)
            sign = _signed(t[1])
            s_cw = lose_s[0] ^ lose_s[1]
            v_cw = sign * (lose_v[1] - lose_v[0] - v_alpha) + np.where(right, sign * beta, U64(0))
            v_alpha = v_alpha - keep_v[1] + keep_v[0] + sign * v_cw
            t_left = tl[0] ^ tl[1] ^ a ^ _ONE
            t_right = tr[0] ^ tr[1] ^ a
            t_keep = np.where(right, t_right, t_left)
            seed_cw[:, i], value_cw[:, i] = s_cw, v_cw
            bits |= (t_left << U64(2 * i)) | (t_right << U64(2 * i + 1))
            s = keep_s ^ (s_cw[None] * t[:, :, None])
            t = keep_t ^ (t & t_keep[None])
        last = _signed(t[1]) * (s[1, :, 1] - s[0, :, 1] - v_alpha)
    return Corrections(seed_cw, value_cw, bits, last)


def _expand_side(s: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chosen half of G(s): the seed, bit and payload of the left (right = 0) or right (1) child."""
    tweaked = np.repeat(s[None], 2, axis=0)
    tweaked[0, :, 0] ^= right
    tweaked[1, :, 0] ^= U64(2)
    enc = _ECB.encryptor()
    out = np.frombuffer(enc.update(tweaked.tobytes()) + enc.finalize(), dtype=U64).reshape(tweaked.shape) ^ tweaked
    seed = out[0].copy()
    t = seed[:, 0] & _ONE
    seed[:, 0] &= ~_ONE
    return seed, t, np.where(right.astype(bool), out[1, :, 1], out[1, :, 0])


def evaluate(party: int, s: np.ndarray, cw: Corrections, x: np.ndarray) -> np.ndarray:
    """This party's output shares (M,) uint64 of f at the public points x (M,), from its start seeds s (M, 2)."""
    m = cw.levels
    x = _check(x, m, "x")
    seed = s.astype(U64).copy()
    seed[:, 0] &= ~_ONE
    t = np.full(x.shape[0], party, U64)
    sign = ~U64(0) if party else _ONE
    v = np.zeros(x.shape[0], U64)
    with np.errstate(over="ignore"):
        for i in range(m):
            right = _bit(x, i, m)
            child, child_t, payload = _expand_side(seed, right)
            v += sign * (payload + t * cw.value[:, i])
            child ^= cw.seed[:, i] * t[:, None]
            child_t ^= t & (cw.bits >> (U64(2 * i) + right)) & _ONE
            seed, t = child, child_t
        v += sign * (seed[:, 1] + t * cw.last)
    return v
