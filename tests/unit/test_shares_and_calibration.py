"""Additive shares (the `share` encoding) and the MPC calibration constants."""

from __future__ import annotations

import json
import math

import grpc
import numpy as np
import pytest
import torch

from orchestrator.calibration import (
    NEWTON_MARGIN,
    NEWTON_TARGET,
    CalibrationError,
    calibrate,
    inv_sqrt_reference,
    load_calibration,
    newton_schedule,
    packaged_path,
)
from orchestrator.models.registry import load_graph
from zones.common.codec import decode_tensor
from zones.common.engine import ZoneError
from zones.common.shares import ShareAssembler, combine, ring_of, split


def test_shares_reconstruct_and_each_share_alone_is_noise() -> None:
    x = torch.linspace(-300, 300, 4 * 96).reshape(4, 96)
    shares = split(x, 3, 16)
    assert [s.meta["share_index"] for s in shares] == ["0", "1", "2"]
    assert float((combine("x", shares) - x).abs().max()) <= 2**-16
    for s in shares:  # every share spans the ring, nothing like the scaled values
        ring = ring_of(s)
        assert np.abs(ring).max() > 2**60
        assert not np.allclose(ring.astype(np.float64), x.numpy() * 2**16, atol=2**20)


def test_integer_shares_come_back_as_int64() -> None:
    got = combine("ids", split(torch.tensor([57.0, 49151.0]), 2, 16, integer=True))
    assert got.dtype == torch.int64 and got.tolist() == [57, 49151]


def test_values_outside_fixed_point_are_refused() -> None:
    with pytest.raises(ValueError, match="do not fit 16-bit fixed point"):
        split(torch.tensor([1e15]), 2, 16)
    with pytest.raises(ValueError, match="do not fit"):
        split(torch.tensor([float("nan")]), 2, 16)


def test_incomplete_or_mixed_sharings_are_refused() -> None:
    a, _ = split(torch.ones(3), 2, 16)
    _, other = split(torch.ones(3), 2, 12)
    with pytest.raises(ZoneError, match="do not form one sharing"):
        combine("x", [a, a])
    with pytest.raises(ZoneError, match="do not form one sharing"):
        combine("x", [a, other])
    with pytest.raises(ZoneError, match="do not form one sharing"):
        combine("x", [a])


def test_assembler_keeps_shares_until_the_last_arrives() -> None:
    x = torch.randn(2, 5)
    a, b = split(x, 2, 16)
    asm = ShareAssembler()
    assert asm.add("h", b) is None
    with pytest.raises(ZoneError) as e:
        asm.add("h", b)
    assert e.value.code == grpc.StatusCode.ALREADY_EXISTS
    whole = asm.add("h", a)
    assert whole is not None and whole.encoding_name == "plain"
    got = decode_tensor(whole.dtype, list(whole.shape), whole.data)
    assert float((got - x).abs().max()) <= 2**-15


@pytest.mark.parametrize("lo,hi", [(0.0036, 0.029), (0.4, 130.0), (17.0, 1.1e6)])
def test_newton_schedule_covers_the_widened_range(lo: float, hi: float) -> None:
    schedule = newton_schedule(lo, hi)
    v = torch.logspace(math.log10(lo / NEWTON_MARGIN), math.log10(hi * NEWTON_MARGIN), 1000, dtype=torch.float64)
    got = inv_sqrt_reference(v * schedule["inv_sqrt_scale"], schedule) * math.sqrt(schedule["inv_sqrt_scale"])
    assert float((got * v.sqrt() - 1).abs().max()) <= NEWTON_TARGET
    assert schedule["inv_sqrt_iters"] <= 3  # the octave reduction leaves a few percent for Newton to close


def test_packaged_calibration_is_what_calibrate_produces() -> None:
    shipped = json.loads(packaged_path("minilm-l6").read_text())
    fresh = calibrate("minilm-l6")
    assert shipped["graph_digest"] == fresh["graph_digest"] and shipped["corpus_sha256"] == fresh["corpus_sha256"]
    for name, entry in fresh["ops"].items():
        for key, value in entry.items():
            want = pytest.approx(value, rel=1e-4) if isinstance(value, float) else value
            assert shipped["ops"][name][key] == want, (name, key)


def test_missing_or_stale_calibration_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    graph = load_graph("minilm-l6")
    with pytest.raises(CalibrationError, match="hsi calibrate --model minilm-l6"):
        load_calibration("minilm-l6", graph, tmp_path / "none.json")
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps({"graph_digest": "0" * 64, "ops": {}}))
    with pytest.raises(CalibrationError, match="made for another graph"):
        load_calibration("minilm-l6", graph, stale)
