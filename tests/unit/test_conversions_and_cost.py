"""Conversion registry and cost model."""

from __future__ import annotations

import pytest

from orchestrator.conversions import CONVERSIONS, ConversionSpec, _register, conversion
from orchestrator.cost import elements, macs, op_seconds, tensor_bytes
from orchestrator.ir import ZoneKind
from orchestrator.models.registry import load_graph


def test_every_kind_pair_registered_once() -> None:
    assert set(CONVERSIONS) == {(a, b) for a in ZoneKind for b in ZoneKind}
    with pytest.raises(ValueError, match="conversion plain->plain is already registered"):
        _register(ConversionSpec(ZoneKind.PLAIN, ZoneKind.PLAIN, "", lambda p, a, b: None, True))


def test_only_reveals_to_plain_hosts() -> None:
    revealing = {k for k, v in CONVERSIONS.items() if v.reveals_to_target_host}
    assert all(target == ZoneKind.PLAIN for _, target in revealing)
    assert conversion(ZoneKind.HE, ZoneKind.MPC).reveals_to_target_host is False


def test_cost_counts() -> None:
    g = load_graph("minilm-l6")
    q = g.op("encoder.layer.0.attention.output.dense")
    assert elements(q, 32) == 32 * 384 and macs(q, 384, 32) == 32 * 384 * 384
    scores = g.op("encoder.layer.0.attention.self.scores")
    assert elements(scores, 16, past=4) == 12 * 16 * 20 and macs(scores, 384, 16, past=4) == 12 * 16 * 20 * 32
    # a 384x384 linear over 32 tokens is the calibration point of the HE row; 64 tokens take two ciphertexts
    assert op_seconds(q, ZoneKind.HE, 384, 32) == pytest.approx(0.252)
    assert op_seconds(q, ZoneKind.HE, 384, 64) == pytest.approx(2 * 0.252)
    assert op_seconds(q, ZoneKind.PLAIN, 384, 16) < op_seconds(q, ZoneKind.MPC, 384, 16)
    assert tensor_bytes(q, ZoneKind.PLAIN, 16) == 16 * 384 * 4
    assert tensor_bytes(q, ZoneKind.HE, 16) == 512 * 1024
