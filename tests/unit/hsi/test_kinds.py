"""The zone-kind registry: one spec per kind, which kinds run each op type, one engine per kind."""

from __future__ import annotations

from typing import Literal

import pytest

from hsi import kinds
from hsi.ir import OpType, ZoneKind
from hsi.kinds import KINDS, eligible_kinds, engine_factory, register_engine, spec


def test_eligibility_table() -> None:
    assert ZoneKind.HE in eligible_kinds(OpType.LINEAR)
    assert ZoneKind.HE not in eligible_kinds(OpType.SOFTMAX)
    assert all(eligible_kinds(t) for t in OpType)  # every op type runs somewhere


def test_every_kind_has_one_spec_matching_its_policy_model() -> None:
    assert set(KINDS) == set(ZoneKind)
    for kind, s in KINDS.items():
        assert s.kind == kind and s.policy_model.model_fields["kind"].annotation == Literal[kind.value]
    assert spec("mpc").shared and not spec("he").shared and spec("tee").in_enclave


def test_an_engine_registers_once_and_a_missing_one_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kinds, "_ENGINES", {})

    @register_engine(ZoneKind.PLAIN)
    class Fake:
        pass

    assert engine_factory(ZoneKind.PLAIN) is Fake
    with pytest.raises(ValueError, match="an engine for zone kind plain is already registered"):
        register_engine(ZoneKind.PLAIN)(Fake)
    with pytest.raises(LookupError, match=r"zone kind 'he' has no engine in this build \(implemented: plain\)"):
        engine_factory(ZoneKind.HE)
