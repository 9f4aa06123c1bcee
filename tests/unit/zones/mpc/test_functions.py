"""The MPC building blocks that replace CrypTen's generic ones, on shares with a dealer, against torch.

One local MPC session runs every case (spawning parties costs more than the cases)."""

from __future__ import annotations

import math
from typing import Any

import torch

from hsi.calibration import NEWTON_MARGIN, newton_schedule
from zones.mpc.local import run_parties

INV_SQRT_RANGE = (0.4, 130.0)  # LayerNorm variances of MiniLM


def _on_shares(cases: list[tuple[str, torch.Tensor]]) -> list[tuple[torch.Tensor, int]]:
    from zones.mpc import functions as fn
    from zones.mpc.compat import import_crypten

    crypten = import_crypten()
    comm = crypten.communicator.get()
    out = []
    for what, x in cases:
        shared = crypten.cryptensor(x, src=0)
        before = comm.comm_rounds
        got: Any = (fn.row_max(shared) if what == "max" else fn.softmax(shared) if what == "softmax"
                    else fn.inv_sqrt(shared, newton_schedule(*INV_SQRT_RANGE)) if what == "inv_sqrt"
                    else fn.silu_mul(shared[0], shared[1]) if what == "silu_mul"
                    else fn.reciprocal_in(shared, float(x.max())))
        out.append((got.get_plain_text(), comm.comm_rounds - before))
    return out


def test_row_max_softmax_reciprocal_inv_sqrt_and_silu_on_shares() -> None:
    torch.manual_seed(1)
    few = torch.tensor([[[1.0, 3.5, 3.5, -2.0, 3.5]], [[0.25, 0.25, 0.25, 0.25, 0.25]]])  # ties: one winner
    many = (torch.randn(12, 24, 24) * 8).round()  # 12·24·24² elements: the tournament, with many ties
    decode, prefill = torch.randn(9, 1, 40) * 8, torch.randn(12, 20, 20) * 8
    for x in (decode, prefill):
        x[..., -1] = x[..., 0]  # a tie at the maximum's neighbourhood
    s = torch.linspace(1, 128, 500)
    lo, hi = INV_SQRT_RANGE  # the calibrated range widened by the margin, and beyond it by 2x either way
    v = torch.logspace(math.log10(lo / NEWTON_MARGIN / 2), math.log10(hi * NEWTON_MARGIN * 2), 200).unsqueeze(-1)
    gate_up = torch.stack([torch.linspace(-60, 60, 1536), torch.randn(1536) * 4]).unsqueeze(1)  # one token
    cases = [("max", few), ("max", many), ("softmax", decode), ("softmax", prefill), ("reciprocal", s),
             ("inv_sqrt", v), ("silu_mul", gate_up)]
    results = run_parties(_on_shares, (cases,), ttp=True)[0]
    for (what, x), (got, rounds) in zip(cases, results, strict=True):
        if what == "max":
            assert got.shape == (*x.shape[:-1], 1)
            assert (got - x.max(-1, keepdim=True).values).abs().max() < 1e-3
        elif what == "softmax":
            assert (got - torch.softmax(x, -1)).abs().max() < 1e-2
            assert rounds < (160 if x.size(1) == 1 else 320)  # CrypTen's softmax: 420 on the same shapes
        elif what == "silu_mul":  # the polynomial-tail path (a decoder token), across and beyond the cut-off
            want = torch.nn.functional.silu(x[0]) * x[1]
            assert float((got - want).abs().max()) < 2e-3 * float(want.abs().max())
            assert rounds < 50  # CrypTen's sigmoid: 85
        elif what == "reciprocal":
            assert (got - 1 / x).abs().max() < 4 * 2.0 ** -16  # a few units of the 16-bit fixed point
        else:
            err = (got * x.sqrt() - 1).abs().flatten()
            inside = ((x >= INV_SQRT_RANGE[0] / NEWTON_MARGIN) & (x <= INV_SQRT_RANGE[1] * NEWTON_MARGIN)).flatten()
            assert float(err[inside].max()) < 2e-3 and float(err.max()) < 1e-2
            assert rounds < 50  # Newton from a public start took 16 iterations here: 31 multiplications
