"""Nonlinear functions on CrypTen shares, accurate over the ranges the packaged models really produce.

CrypTen's own `erf` is wrong beyond |x| ~ 2 and its `exp` ((1 + x/256)^256) breaks past |x| ~ 256, so
GELU is built piecewise from comparisons and a polynomial; inverse square roots run Newton's iteration
with a public per-op scale, start and count chosen by calibration (orchestrator/calibration.py).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

GELU_CUTOFF = 4.0
GELU_DEGREE = 8


@functools.lru_cache(maxsize=1)
def gelu_tail_coefficients() -> tuple[float, ...]:
    """Monomial coefficients (constant first) in t = |x|/2 - 1 of a Chebyshev fit to |x|·Φ(-|x|) on [0, 4].

    Max fit error 1.3e-4; beyond the cut-off the tail is below 1.3e-4 and is dropped.
    """
    from scipy.stats import norm

    t = np.cos(np.pi * (np.arange(2000) + 0.5) / 2000)
    a = (t + 1) * GELU_CUTOFF / 2
    cheb = np.polynomial.chebyshev.chebfit(t, a * norm.cdf(-a), GELU_DEGREE)
    return tuple(float(c) for c in np.polynomial.chebyshev.cheb2poly(cheb))


def gelu(x: Any) -> Any:
    """GELU(x) = relu(x) - |x|·Φ(-|x|), the correction a polynomial on |x| < 4 (two comparisons)."""
    negative = x < 0
    a = x - 2 * x * negative           # |x|
    relu = x - x * negative
    inside = a < GELU_CUTOFF
    t = (a * (2 / GELU_CUTOFF) - 1) * inside + (1 - inside)  # clamp to t <= 1 outside the fit
    coeffs = gelu_tail_coefficients()
    tail = t.polynomial(list(coeffs[1:])) + coeffs[0]
    return relu - tail * inside


def inv_sqrt(v: Any, c: dict[str, Any]) -> Any:
    """1/sqrt(v) for v in the op's calibrated range: Newton from a public start on the scaled input.

    `c` is the op's calibration entry: the input is multiplied by `inv_sqrt_scale` so its range is centred
    on 1, and `inv_sqrt_iters` iterations of y <- 1.5 y - 0.5 (v y) y^2 run from `inv_sqrt_start`. Each
    iteration after the first is two rounds: v y and y^2 in one multiplication of stacked tensors, then
    their product (y (3 - v y^2) / 2 takes three).
    """
    from zones.mpc.compat import import_crypten

    crypten = import_crypten()
    scale = float(c["inv_sqrt_scale"])
    u = v * scale
    y: Any = None
    for _ in range(int(c["inv_sqrt_iters"])):
        if y is None:  # the first iteration from a public start is one multiplication
            s0 = float(c["inv_sqrt_start"])
            y = (u * (-s0 * s0) + 3) * (s0 / 2)
        else:
            both = crypten.stack([u, y]) * crypten.stack([y, y])
            y = y * 1.5 - (both[0] * both[1]) * 0.5
    return y * math.sqrt(scale)


def layernorm(x: Any, weight: Any, bias: Any, eps: float, c: dict[str, Any]) -> Any:
    """LayerNorm over the last dimension; weight and bias may be shared or public."""
    mu = x.mean(-1, keepdim=True)
    xc = x - mu
    var = (xc * xc).mean(-1, keepdim=True)
    return xc * inv_sqrt(var + eps, c) * weight + bias


def rmsnorm(x: Any, weight: Any, eps: float, c: dict[str, Any]) -> Any:
    """RMSNorm over the last dimension; the weight may be shared or public.

    The input is scaled down before squaring: SmolLM2's residual stream reaches mean squares of 1e6,
    whose squares in 16-bit fixed point would crowd the 64-bit ring.
    """
    a = math.sqrt(float(c["inv_sqrt_scale"]))
    y = x * a
    ms = (y * y).mean(-1, keepdim=True)  # scale * mean(x^2)
    unit = {**c, "inv_sqrt_scale": 1.0}
    return y * inv_sqrt(ms + eps * a * a, unit) * weight


def silu_mul(gate: Any, up: Any) -> Any:
    """SiLU(gate) · up, with CrypTen's sigmoid (exact enough for |gate| well below 256, where its exp holds)."""
    return gate * gate.sigmoid() * up


def argmax_index(x: Any) -> Any:
    """The shared index of the largest element of a 1-D shared tensor (the first half wins ties).

    A tournament over (value, index) pairs: log2(n) levels of one comparison and two multiplications
    each. CrypTen's own argmax tests every element for equality with the maximum, which fixed-point
    truncation errors make miss, so it can return a wrong index.
    """
    import torch

    from zones.mpc.compat import import_crypten

    crypten = import_crypten()
    values = x
    index: Any = torch.arange(x.size(0), dtype=torch.float32)
    while values.size(0) > 1:
        half = values.size(0) // 2
        v1, v2 = values[:half], values[half:2 * half]
        i1, i2 = index[:half], index[half:2 * half]
        first = v1 >= v2
        top_v = first * (v1 - v2) + v2
        top_i = first * (i1 - i2) + i2  # shared first: a public index tensor cannot add a shared one
        if values.size(0) % 2:
            top_v = crypten.cat([top_v, values[-1:]])
            top_i = crypten.cat([top_i, index[-1:] if not torch.is_tensor(index) else crypten.cryptensor(index[-1:])])
        values, index = top_v, top_i
    return index


# rows·n·n up to which a row maximum compares all pairs in one round instead of a log2(n)-level tournament
PAIRWISE_MAX_ELEMENTS = 1 << 16
RECIPROCAL_TOLERANCE = 2.0 ** -14  # relative error the softmax denominator's Newton iterations reach


def row_max(x: Any) -> Any:
    """The maximum over the last dimension (kept as a dimension of size 1).

    Few rows (a decoder's new token): every pair compared in one comparison round; x_i is the first maximum
    iff x_i >= x_j for every later j and x_i > x_j for every earlier j, a product of bits (log2(n)
    multiplications), so ties select one element. Many rows (a prefill): a tournament of log2(n) levels of one
    comparison and one multiplication. Either way the maximum value only: CrypTen's max also computes a
    one-hot argmax with an equality test over every element, which costs as much again.
    """
    import torch

    from zones.mpc.compat import import_crypten

    crypten = import_crypten()
    n = x.size(-1)
    if n == 1:
        return x
    rows = x.numel() // n
    if rows * n * n <= PAIRWISE_MAX_ELEMENTS:
        i, j = torch.triu_indices(n, n, offset=1)              # the n(n-1)/2 pairs i < j, compared once
        diff = (x.unsqueeze(-1) - x.unsqueeze(-2)).flatten(-2).index_select(-1, i * n + j)
        ge = diff >= 0                                         # x_i >= x_j
        both = crypten.cat([ge, 1 - ge], dim=-1)               # and x_j > x_i
        pairs = len(i)
        where = torch.empty(n, n, dtype=torch.long)            # where[a, b]: the bit "a beats b" in `both`
        where[i, j] = torch.arange(pairs)
        where[j, i] = torch.arange(pairs) + pairs
        others = ~torch.eye(n, dtype=torch.bool)
        beats = both.index_select(-1, where[others]).reshape(*x.size()[:-1], n, n - 1)
        first = beats.prod(-1)                                 # one-hot of the first maximum
        return (x * first).sum(-1, keepdim=True)
    v = x
    while v.size(-1) > 1:
        m = v.size(-1)
        a, b, rest = v.split([m // 2, m // 2, m % 2], dim=-1)
        d = a - b
        top = b + d * (d >= 0)
        v = crypten.cat([top, rest], dim=-1) if m % 2 else top
    return v


def reciprocal_in(s: Any, hi: float) -> Any:
    """1/s for s known to lie in [1, hi]: Newton's iteration from the minimax linear start on that range, as
    many iterations as the range needs for RECIPROCAL_TOLERANCE (no exp-based start, no fixed ten steps)."""
    if hi <= 1:
        return s * 0 + 1
    b = 8.0 / (hi * hi + 6 * hi + 1)          # y0 = b (hi + 1) - b s equioscillates on [1, hi]
    e0 = (hi - 1) ** 2 / (hi * hi + 6 * hi + 1)  # its largest relative error |1 - s y0|
    iters = max(0, math.ceil(math.log2(math.log(RECIPROCAL_TOLERANCE) / math.log(e0))))
    y = s * -b + b * (hi + 1)
    for _ in range(iters):
        y = y * ((s * y).neg() + 2)
    return y


def softmax(x: Any) -> Any:
    """Softmax over the last dimension: exp(x - max) has its largest element 1, so the denominator lies in
    [1, n] and its reciprocal needs only the iterations that range calls for."""
    num = (x - row_max(x)).exp()
    return num * reciprocal_in(num.sum(-1, keepdim=True), float(x.size(-1)))
