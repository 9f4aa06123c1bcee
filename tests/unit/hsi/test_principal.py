"""Principals and privacy-report viewers parse in one place and refuse what is not theirs."""

from __future__ import annotations

import pytest

from hsi.principal import Principal, PrincipalError, Viewer


def test_a_principal_is_exactly_party_slash_zone() -> None:
    p = Principal.parse("keyholder/mpc")
    assert (p.party, p.zone, str(p)) == ("keyholder", "mpc", "keyholder/mpc")
    for bad in ("client", "/mpc", "owner/", "a/b/c", " owner/he"):
        with pytest.raises(PrincipalError, match="principal must be <party>/<zone>"):
            Principal.parse(bad)
    assert Principal.parse_or_none("client") is None and Principal.parse_or_none(None) is None


def test_viewers_round_trip_through_the_report_keys() -> None:
    for v in (Viewer("owner"), Viewer("keyholder", "enclave")):
        assert Viewer.parse(str(v)) == v
    assert str(Viewer("keyholder", "enclave")) == "keyholder (enclave enclave)"
    with pytest.raises(ValueError, match="not a privacy-report viewer"):
        Viewer.parse("keyholder (enclave)")
