"""MPC calibration: Newton schedules cover their range; the packaged file is what calibrate produces."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hsi.calibration import (
    NEWTON_MARGIN,
    NEWTON_TARGET,
    CalibrationError,
    calibrate,
    inv_sqrt_reference,
    load_calibration,
    newton_schedule,
    packaged_path,
)
from hsi.models.registry import load_graph


@pytest.mark.parametrize("lo,hi", [(0.0036, 0.029), (0.4, 130.0), (17.0, 1.1e6)])
def test_newton_schedule_covers_the_widened_range(lo: float, hi: float) -> None:
    schedule = newton_schedule(lo, hi)
    v = torch.logspace(math.log10(lo / NEWTON_MARGIN), math.log10(hi * NEWTON_MARGIN), 1000, dtype=torch.float64)
    got = inv_sqrt_reference(v * schedule["inv_sqrt_scale"], schedule) * math.sqrt(schedule["inv_sqrt_scale"])
    assert float((got * v.sqrt() - 1).abs().max()) <= NEWTON_TARGET
    assert schedule["inv_sqrt_iters"] <= 3  # the octave reduction leaves a few percent for Newton to close


@pytest.mark.slow  # 31 s: recomputes every packaged calibration
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
