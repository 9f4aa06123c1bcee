"""Nonlinear functions on CrypTen shares, accurate over the ranges the packaged models really produce.

CrypTen's own `erf` is wrong beyond |x| ~ 2 and its `exp` ((1 + x/256)^256) breaks past |x| ~ 256, so
GELU is built piecewise from comparisons and a polynomial; inverse square roots take a public,
per-op scale that brings the variance into the range where CrypTen's Newton iteration converges.
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


def inv_sqrt_scaled(v: Any, scale: float) -> Any:
    """1/sqrt(v) as sqrt(scale)·inv_sqrt(scale·v), `scale` chosen (public) so scale·v lies in ~[0.05, 20]."""
    return (v * scale).inv_sqrt() * math.sqrt(scale)


def layernorm(x: Any, weight: Any, bias: Any, eps: float, scale: float) -> Any:
    """LayerNorm over the last dimension with public weight and bias tensors."""
    mu = x.mean(-1, keepdim=True)
    c = x - mu
    var = (c * c).mean(-1, keepdim=True)
    return c * inv_sqrt_scaled(var + eps, scale) * weight + bias


def rmsnorm(x: Any, weight: Any, eps: float, scale: float) -> Any:
    """RMSNorm over the last dimension with a public weight tensor."""
    ms = (x * x).mean(-1, keepdim=True)
    return x * inv_sqrt_scaled(ms + eps, scale) * weight


def silu_mul(gate: Any, up: Any) -> Any:
    """SiLU(gate) · up, with CrypTen's sigmoid (exact enough for |gate| well below 256, where its exp holds)."""
    return gate * gate.sigmoid() * up
