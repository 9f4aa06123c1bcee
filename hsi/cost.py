"""First cost model: seconds and bytes per op and per conversion, from a calibration table.

The figures are measurements on the 2-core reference machine (docs/zones.md and
bench/); they are a planning aid, not a promise. Replace a row when a
benchmark measures it better.
"""

from __future__ import annotations

from hsi.ir import Op, OpType

# Plain PyTorch on 2 cores: sustained float32 matmul throughput and per-op overhead.
PLAIN_FLOPS_PER_S = 2.0e10
PLAIN_OP_OVERHEAD_S = 2e-5
# HE (OpenFHE CKKS, N=2^14, depth 1, complex packing: 32 tokens per ciphertext): 0.252 s for a
# 384x384 linear over 32 tokens (bench/he_linear.py).
HE_TOKENS_PER_CT = 32
HE_S_PER_MAC_BLOCK = 0.252 / (384 * 384)
HE_CT_BYTES = 512 * 1024
HE_SLOTS = 8192
# MPC (CrypTen, 2 parties, loopback): softmax 12x16x16 ~0.36 s, LayerNorm 16x384 ~0.08 s,
# private matmul 16x384x384 ~0.05 s (docs/zones.md, "mpc").
MPC_S_PER_ELEMENT = {
    OpType.SOFTMAX: 0.36 / (12 * 16 * 16),
    OpType.LAYERNORM: 0.08 / (16 * 384),
    OpType.RMSNORM: 0.08 / (16 * 384),
    OpType.GELU: 0.05 / (16 * 1536),
    OpType.SILU_MUL: 0.05 / (16 * 1536),
    OpType.SLICE: 0.0,  # local to each party
}
MPC_S_PER_MAC = 0.05 / (16 * 384 * 384)
MPC_DEFAULT_S_PER_ELEMENT = 2e-6
TEE_SLOWDOWN = 1.2  # enclave overhead over plain, a conventional SGX-class figure


def _dims(op: Op, tokens: int, past: int) -> list[int]:
    out = []
    for d in op.shape:
        out.append(tokens if d == "T" else tokens + past if d == "S" else int(d))
    return out


def elements(op: Op, tokens: int, past: int = 0) -> int:
    """Number of elements of the op's output for `tokens` new tokens after `past` cached ones."""
    n = 1
    for d in _dims(op, tokens, past):
        n *= d
    return n


def macs(op: Op, d_in: int, tokens: int, past: int = 0) -> int:
    """Multiply-accumulates of a matmul-like op (0 for elementwise ops)."""
    if op.type in (OpType.LINEAR, OpType.LM_HEAD):
        return elements(op, tokens, past) * d_in
    if op.type == OpType.ATTN_SCORES:
        return elements(op, tokens, past) * int(op.params["head_dim"])
    if op.type == OpType.ATTN_CONTEXT:
        return elements(op, tokens, past) * (tokens + past)
    return 0


def plain_seconds(op: Op, d_in: int, tokens: int, past: int = 0) -> float:
    """Estimated seconds to run `op` in PyTorch."""
    return PLAIN_OP_OVERHEAD_S + 2 * macs(op, d_in, tokens, past) / PLAIN_FLOPS_PER_S


def tee_seconds(op: Op, d_in: int, tokens: int, past: int = 0) -> float:
    """Estimated seconds to run `op` in the enclave."""
    return plain_seconds(op, d_in, tokens, past) * TEE_SLOWDOWN


def he_seconds(op: Op, d_in: int, tokens: int, past: int = 0) -> float:
    """Estimated seconds to run `op` on CKKS ciphertexts."""
    m = macs(op, d_in, tokens, past)
    blocks = max(1, -(-tokens // HE_TOKENS_PER_CT))
    return HE_S_PER_MAC_BLOCK * (m // max(tokens, 1)) * blocks if m else 1e-3 * max(1, elements(op, tokens, past)
                                                                                   // HE_SLOTS)


def mpc_seconds(op: Op, d_in: int, tokens: int, past: int = 0) -> float:
    """Estimated seconds to run `op` on secret shares."""
    m = macs(op, d_in, tokens, past)
    if m:
        return MPC_S_PER_MAC * m
    return MPC_S_PER_ELEMENT.get(op.type, MPC_DEFAULT_S_PER_ELEMENT) * elements(op, tokens, past)


def he_bytes(op: Op, tokens: int, past: int = 0) -> int:
    """Estimated bytes of the op's output as CKKS ciphertexts."""
    return max(1, -(-elements(op, tokens, past) // HE_SLOTS)) * HE_CT_BYTES


def mpc_bytes(op: Op, tokens: int, past: int = 0) -> int:
    """Estimated bytes of the op's output as one party's shares: one int64 ring element per value."""
    return 8 * elements(op, tokens, past)


def plain_bytes(op: Op, tokens: int, past: int = 0) -> int:
    """Estimated bytes of the op's output in float32 plaintext."""
    return 4 * elements(op, tokens, past)
