"""Nonlinear functions on CrypTen shares, accurate over the ranges the packaged models really produce.

CrypTen's own `erf` is wrong beyond |x| ~ 2 and its `exp` ((1 + x/256)^256) breaks past |x| ~ 256, so
GELU and SiLU are built piecewise from comparisons and a polynomial; inverse square roots bring their input
into one octave with one comparison and run Newton's iteration there, from constants chosen by calibration
(orchestrator/calibration.py).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

GELU_CUTOFF = 4.0
GELU_DEGREE = 8
SILU_CUTOFF = 12.0
SILU_DEGREE = 14
BATCHED_COMPARISON_ELEMENTS = 1 << 14  # SiLU inputs up to which the polynomial tail beats CrypTen's sigmoid


def _chebyshev_tail(tail: Any, cutoff: float, degree: int) -> tuple[float, ...]:
    """Monomial coefficients (constant first) in t = 2|x|/cutoff - 1 of a Chebyshev fit to tail(|x|) on
    [0, cutoff]."""
    t = np.cos(np.pi * (np.arange(4000) + 0.5) / 4000)
    a = (t + 1) * cutoff / 2
    cheb = np.polynomial.chebyshev.chebfit(t, tail(a), degree)
    return tuple(float(c) for c in np.polynomial.chebyshev.cheb2poly(cheb))


@functools.lru_cache(maxsize=1)
def gelu_tail_coefficients() -> tuple[float, ...]:
    """The fit to GELU's tail |x|·Φ(-|x|) on [0, 4] (see _chebyshev_tail).

    Max fit error 1.3e-4; beyond the cut-off the tail is below 1.3e-4 and is dropped.
    """
    from scipy.stats import norm

    return _chebyshev_tail(lambda a: a * norm.cdf(-a), GELU_CUTOFF, GELU_DEGREE)


@functools.lru_cache(maxsize=1)
def silu_tail_coefficients() -> tuple[float, ...]:
    """The fit to SiLU's tail |x|·σ(-|x|) on [0, 12] (see _chebyshev_tail).

    Max fit error 3.3e-5; beyond the cut-off the tail is below 7.4e-5 and is dropped.
    """
    return _chebyshev_tail(lambda a: a / (1 + np.exp(a)), SILU_CUTOFF, SILU_DEGREE)


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


def _weighted_bits(bits: Any, weights: Any, like: Any) -> Any:
    """sum_j bits_j * weights_j over the last dimension, in `like`'s fixed point, without communication.

    CrypTen's comparisons return 0/1 shares at scale 1, which would round public fractional weights to
    integers; the weights scaled to the fixed point multiply those integer shares exactly instead.
    """
    import torch

    from zones.mpc.compat import import_crypten

    if bits._tensor.encoder.scale != 1:
        raise ValueError("_weighted_bits takes the integer 0/1 shares of a comparison")
    precision = like._tensor.encoder._precision_bits
    scaled = torch.round(weights.double() * 2.0**precision).long()
    return import_crypten().mpc.MPCTensor.from_shares((bits._tensor.share * scaled).sum(-1, keepdim=True),
                                                      precision=precision)


def inv_sqrt(v: Any, c: dict[str, Any]) -> Any:
    """1/sqrt(v) for v in the op's calibrated range, as orchestrator/calibration.py's inv_sqrt_reference.

    `c` is the op's calibration entry (see newton_schedule): u = v * inv_sqrt_scale is compared with every
    octave threshold in one comparison; the octave bits give, linearly, the public-constant factors that
    bring u into [1, 2) and scale the result back; the line `inv_sqrt_start` starts `inv_sqrt_iters` Newton
    iterations y <- 1.5 y - 0.5 (w y) y^2, two rounds each (w y and y^2 in one multiplication of stacked
    tensors, then their product).
    """
    import torch

    from zones.mpc.compat import import_crypten

    crypten = import_crypten()
    u = v * float(c["inv_sqrt_scale"])
    bottom, steps = float(c["inv_sqrt_bottom"]), int(c["inv_sqrt_steps"])
    # with k thresholds passed: w = u / bottom * 2^-k and 1/sqrt(u) = 1/sqrt(w) * 2^(-k/2) / sqrt(bottom);
    # the bits are monotone, so each factor is its k = 0 value plus the bits times successive differences
    octave = torch.arange(steps + 1, dtype=torch.float64)
    down = 2.0 ** -octave / bottom
    back = 2.0 ** (-octave / 2) * math.sqrt(float(c["inv_sqrt_scale"]) / bottom)
    if steps:
        thresholds = (bottom * 2.0 ** octave[1:]).float()
        passed = (u - thresholds) >= 0  # (..., steps)
        to_unit = _weighted_bits(passed, down[1:] - down[:-1], u) + float(down[0])
        scale_back = _weighted_bits(passed, back[1:] - back[:-1], u) + float(back[0])
        w = u * to_unit
    else:  # the range is one octave: both factors are public
        w, scale_back = u * float(down[0]), float(back[0])
    a, b = (float(x) for x in c["inv_sqrt_start"])
    y = w * b + a
    for _ in range(int(c["inv_sqrt_iters"])):
        both = crypten.stack([w, y]) * crypten.stack([y, y])
        y = y * 1.5 - (both[0] * both[1]) * 0.5
    return y * scale_back


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
    """SiLU(gate)·up.

    Few elements (a decoder's new token): relu(gate)·up - tail(|gate|)·up, the tail a polynomial on
    |gate| < 12, gate compared with 0 and +-12 in one comparison, then six multiplication rounds: half the
    rounds of CrypTen's sigmoid. Many (a prefill): CrypTen's sigmoid (sign comparison, exp, reciprocal), whose
    bytes are one comparison's, where the batched comparison's are three and a sign-then-|gate| pair's two
    (measured on 69 x 1536: 0.64-0.67 s against 1.1 s and 0.92-1.36 s); exact enough for |gate| well below
    256, where its exp holds (SmolLM2's gates reach -34...50).
    """
    from zones.mpc.compat import import_crypten

    if gate.numel() > BATCHED_COMPARISON_ELEMENTS:
        return gate * gate.sigmoid() * up
    crypten = import_crypten()
    c = SILU_CUTOFF
    bits = crypten.stack([gate, gate + c, gate - c]) < 0
    negative, below, under = bits[0], bits[1], bits[2]  # gate < 0, gate < -c, gate < c
    inside = under - below
    # |gate|·inside = gate·(inside - 2·[-c <= gate < 0]), and [-c <= gate < 0] = negative - below
    prods = crypten.stack([gate, gate, up]) * crypten.stack([negative, inside - 2 * (negative - below), inside])
    relu = gate - prods[0]
    t = prods[1] * (2 / c) - 2 * inside + 1  # 2|gate|/c - 1 inside the fit, 1 outside
    coeffs = silu_tail_coefficients()
    tail = t.polynomial(list(coeffs[1:])) + coeffs[0]
    both = crypten.stack([relu, tail]) * crypten.stack([up, prods[2]])
    return both[0] - both[1]


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
