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
    on 1, and `inv_sqrt_iters` iterations of y <- y (3 - v y^2) / 2 run from `inv_sqrt_start`. (v*y)*y keeps
    every intermediate near 1, where fixed point is most precise.
    """
    scale = float(c["inv_sqrt_scale"])
    u = v * scale
    y: Any = None
    for _ in range(int(c["inv_sqrt_iters"])):
        if y is None:  # the first iteration from a public start is one multiplication
            s0 = float(c["inv_sqrt_start"])
            y = (u * (-s0 * s0) + 3) * (s0 / 2)
        else:
            y = y * ((u * y * y).neg() + 3) * 0.5
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
