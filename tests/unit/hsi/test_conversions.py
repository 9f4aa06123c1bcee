"""The conversion registry: every pair of kinds once, only the plain hosts see plaintext, senders only for
the pairs the planner admits."""

from __future__ import annotations

from typing import Any

import pytest

from hsi import conversions
from hsi.conversions import CONVERSIONS, ConversionSpec, _register, conversion, register_sender, sender
from hsi.ir import ZoneKind


def test_every_kind_pair_registered_once() -> None:
    assert set(CONVERSIONS) == {(a, b) for a in ZoneKind for b in ZoneKind}
    with pytest.raises(ValueError, match="conversion plain->plain is already registered"):
        _register(ConversionSpec(ZoneKind.PLAIN, ZoneKind.PLAIN, "", lambda p, a, b: None, True))


def test_only_reveals_to_plain_hosts() -> None:
    revealing = {k for k, v in CONVERSIONS.items() if v.reveals_to_target_host}
    assert all(target == ZoneKind.PLAIN for _, target in revealing)
    assert conversion(ZoneKind.HE, ZoneKind.MPC).reveals_to_target_host is False


def test_only_runnable_conversions_take_a_sender_and_only_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conversions, "_SENDERS", {})

    def send(out: Any, move: Any, t: Any) -> Any:
        return None

    with pytest.raises(ValueError, match="conversion he->plain is not runnable"):
        register_sender(ZoneKind.HE, ZoneKind.PLAIN)(send)
    register_sender(ZoneKind.PLAIN, ZoneKind.MPC)(send)
    with pytest.raises(ValueError, match="conversion plain->mpc already has a sender"):
        register_sender(ZoneKind.PLAIN, ZoneKind.MPC)(send)
    assert sender(ZoneKind.PLAIN, ZoneKind.MPC) is send
    with pytest.raises(LookupError, match="no sender for mpc->he"):
        sender(ZoneKind.MPC, ZoneKind.HE)


def test_a_conversion_no_zone_sends_is_refused_whatever_the_policy() -> None:
    refusal = conversion(ZoneKind.TEE, ZoneKind.MPC).refusal
    assert "hsi cannot run tee->mpc conversions" in (refusal(None, "a", "b") or "")  # type: ignore[arg-type]
    assert conversion(ZoneKind.PLAIN, ZoneKind.MPC).refusal(None, "a", "b") is None  # type: ignore[arg-type]
