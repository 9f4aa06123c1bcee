"""CrypTen with the project's speed-ups (configuration view, dealer request before the opening, the dealer's
answer in one message) computes what CrypTen computes, with as many openings between the parties and fewer
messages to the dealer, and refuses configuration writes once installed."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from zones.mpc.local import run_parties


def _products(fast: bool) -> dict[str, Any]:
    from zones.mpc.compat import import_crypten

    crypten = import_crypten()
    comm = crypten.communicator.get()
    torch.manual_seed(3)  # the same plaintexts at every party; party 0's are the ones shared
    x, y = torch.randn(4, 1, 6), torch.randn(5, 6)
    w, v = torch.randn(3, 6, 7), torch.randn(7, 2)
    sx, sy, sw, sv = (crypten.cryptensor(t, src=0) for t in (x, y, w, v))
    before = comm.comm_rounds
    got = {"mul": (sx * sy).get_plain_text(), "matmul": sw.matmul(sv).get_plain_text(),
           "exp": sy.exp().get_plain_text(),  # exp runs under CrypTen's temp_override of its iterations
           "lt": (sx < sy).get_plain_text()}  # a comparison: binary ANDs, then bits to arithmetic
    rounds = comm.comm_rounds - before
    errors = {"mul": float((got["mul"] - x * y).abs().max()), "matmul": float((got["matmul"] - w @ v).abs().max()),
              "exp": float(((got["exp"] - y.exp()) / y.exp()).abs().max()),
              "lt": float((got["lt"] - (x < y).float()).abs().max())}
    from crypten.mpc.primitives import beaver

    from zones.mpc import triples

    overlapped = (getattr(beaver, "__beaver_protocol") is triples.beaver_protocol
                  and beaver.AND is triples.binary_and and beaver.B2A_single_bit is triples.bit_to_arithmetic)
    refused = ""
    if fast:
        try:
            crypten.cfg.mpc.provider = "other"
        except AttributeError as e:
            refused = str(e)
    return {"errors": errors, "rounds": rounds, "refused": refused, "overlapped": overlapped}


@pytest.mark.slow  # 20 s; the plans' outputs against plaintext cover the fast paths
def test_fast_crypten_matches_crypten() -> None:
    fast = run_parties(_products, (True,), ttp=True, fast=True)
    plain = run_parties(_products, (False,), ttp=True, fast=False)
    for party in fast + plain:
        assert party["errors"]["mul"] < 1e-3 and party["errors"]["matmul"] < 5e-3, party
        assert party["errors"]["exp"] < 2e-2 and party["errors"]["lt"] == 0, party
    assert fast[1]["rounds"] == plain[1]["rounds"] > 0  # party 1 only opens: the same openings
    assert 0 < fast[0]["rounds"] < plain[0]["rounds"]  # party 0 also talks to the dealer: one message fewer each
    assert fast[0]["overlapped"] and not plain[0]["overlapped"]
    assert "read-only" in fast[0]["refused"] and "provider" in fast[0]["refused"]
