"""The MPC building blocks that replace CrypTen's generic ones, on shares with a dealer, against torch."""

from __future__ import annotations

from typing import Any

import torch

from zones.mpc.local import run_parties


def _on_shares(x: torch.Tensor, what: str) -> tuple[torch.Tensor, int]:
    from zones.mpc import functions as fn
    from zones.mpc.compat import import_crypten

    crypten = import_crypten()
    crypten.cfg.communicator.verbose = True
    comm = crypten.communicator.get()
    shared = crypten.cryptensor(x, src=0)
    before = comm.comm_rounds
    out: Any = {"max": fn.row_max, "softmax": fn.softmax,
                "reciprocal": lambda s: fn.reciprocal_in(s, float(x.max()))}[what](shared)
    return out.get_plain_text(), comm.comm_rounds - before


def test_row_max_pairwise_and_tournament_with_ties() -> None:
    few = torch.tensor([[[1.0, 3.5, 3.5, -2.0, 3.5]], [[0.25, 0.25, 0.25, 0.25, 0.25]]])  # ties: one winner
    many = (torch.randn(12, 24, 24) * 8).round()  # 12·24·24² elements: the tournament, with many ties
    for x in (few, many):
        got, _ = run_parties(_on_shares, (x, "max"), ttp=True)[0]
        assert got.shape == (*x.shape[:-1], 1)
        assert (got - x.max(-1, keepdim=True).values).abs().max() < 1e-3


def test_softmax_matches_torch_in_fewer_rounds_than_crypten() -> None:
    torch.manual_seed(1)
    for x in (torch.randn(9, 1, 40) * 8, torch.randn(12, 20, 20) * 8):  # a decode step, a prefill
        x[..., -1] = x[..., 0]  # a tie at the maximum's neighbourhood
        got, rounds = run_parties(_on_shares, (x, "softmax"), ttp=True)[0]
        assert (got - torch.softmax(x, -1)).abs().max() < 1e-2
        assert rounds < 320  # CrypTen's softmax: 420 on the same shapes
        if x.size(1) == 1:
            assert rounds < 160


def test_reciprocal_in_its_range() -> None:
    s = torch.linspace(1, 128, 500)
    got, _ = run_parties(_on_shares, (s, "reciprocal"), ttp=True)[0]
    assert (got - 1 / s).abs().max() < 4 * 2.0 ** -16  # a few units of the 16-bit fixed point
