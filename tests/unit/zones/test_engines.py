"""The data plane registers an engine for every zone kind and a sender for exactly the conversions the planner
admits."""

from __future__ import annotations

import grpc
import pytest

from hsi import kinds
from hsi.conversions import CONVERSIONS, senders
from hsi.ir import ZoneKind
from hsi.policy import load_policy
from hsi.transport.status import ZoneError
from tests.conftest import POLICIES
from zones.engines import engine_for, register_all


def test_every_kind_has_an_engine() -> None:
    register_all()
    for kind in ZoneKind:
        assert kinds.engine_factory(kind)


def test_every_runnable_conversion_has_a_sender_and_no_other_does() -> None:
    register_all()
    assert senders() == {pair for pair, spec in CONVERSIONS.items() if spec.runnable}


def test_a_kind_without_an_engine_is_unimplemented(monkeypatch: pytest.MonkeyPatch) -> None:
    register_all()
    monkeypatch.setattr(kinds, "_ENGINES", {k: f for k, f in kinds._ENGINES.items() if k != ZoneKind.HE})
    with pytest.raises(ZoneError, match="zone kind 'he' has no engine in this build") as e:
        engine_for(ZoneKind.HE, load_policy(POLICIES / "private-minilm.yaml"), "he", "owner")
    assert e.value.code == grpc.StatusCode.UNIMPLEMENTED
