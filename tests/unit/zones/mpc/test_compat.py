"""CrypTen 0.4.1 imports on the project's PyTorch through the compat module and computes on shares."""

from __future__ import annotations

import sys

import pytest
import torch

from tests.unit.zones.he.conftest import capture
from zones.mpc.compat import import_crypten
from zones.mpc.local import run_parties


def test_placeholder_fails_loudly() -> None:
    import_crypten()
    registration = sys.modules["torch.onnx._internal.registration"]
    with pytest.raises(RuntimeError, match="ONNX converter is not available"):
        registration.registry.anything  # noqa: B018


def _softmax_error_on_shares(scores: torch.Tensor) -> float:
    crypten = import_crypten()
    rank = crypten.communicator.get().get_rank()
    shared = crypten.cryptensor(scores if rank == 0 else torch.zeros_like(scores), src=0)
    # each party holds a uniformly random-looking share, not the scores
    assert not torch.allclose(shared.share.float(), scores * 2**16, atol=1.0)
    got = shared.softmax(-1).get_plain_text()
    # a float, not a tensor: a tensor would travel through shared memory the exiting party tears down
    return float((got - torch.softmax(scores, -1)).abs().max())


def test_two_party_softmax_on_real_attention_scores() -> None:
    scores = torch.from_numpy(capture("minilm-l6", ["encoder.layer.0.attention.self.scores"])[
        "encoder.layer.0.attention.self.scores"]).float()
    errors = run_parties(_softmax_error_on_shares, (scores,), parties=2)
    assert len(errors) == 2
    print(f"2-party CrypTen softmax on real scores {list(scores.shape)}: max abs err {max(errors):.2e}")
    assert max(errors) <= 1e-2


def test_two_party_softmax_with_the_dealer() -> None:
    scores = torch.linspace(-8, 8, 4 * 16).reshape(4, 16)
    errors = run_parties(_softmax_error_on_shares, (scores,), parties=2, ttp=True)
    assert max(errors) <= 1e-2


def _fails() -> None:
    raise ValueError("boom")


def test_party_failure_is_reported() -> None:
    with pytest.raises(RuntimeError, match=r"MPC party [01] failed: ValueError: boom"):
        run_parties(_fails, parties=2)
