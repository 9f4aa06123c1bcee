"""The cost model counts elements and multiply-accumulates, and scales HE cost with token blocks."""

from __future__ import annotations

import pytest

from hsi.cost import elements, macs
from hsi.ir import ZoneKind
from hsi.kinds import spec
from hsi.models.registry import load_graph


def test_cost_counts() -> None:
    g = load_graph("minilm-l6")
    q = g.op("encoder.layer.0.attention.output.dense")
    assert elements(q, 32) == 32 * 384 and macs(q, 384, 32) == 32 * 384 * 384
    scores = g.op("encoder.layer.0.attention.self.scores")
    assert elements(scores, 16, past=4) == 12 * 16 * 20 and macs(scores, 384, 16, past=4) == 12 * 16 * 20 * 32
    # a 384x384 linear over 32 tokens is the calibration point of the HE row; 64 tokens take two ciphertexts
    assert spec(ZoneKind.HE).op_seconds(q, 384, 32, 0) == pytest.approx(0.252)
    assert spec(ZoneKind.HE).op_seconds(q, 384, 64, 0) == pytest.approx(2 * 0.252)
    assert spec(ZoneKind.PLAIN).op_seconds(q, 384, 16, 0) < spec(ZoneKind.MPC).op_seconds(q, 384, 16, 0)
    assert spec(ZoneKind.PLAIN).tensor_bytes(q, 16, 0) == 16 * 384 * 4
    assert spec(ZoneKind.HE).tensor_bytes(q, 16, 0) == 512 * 1024
