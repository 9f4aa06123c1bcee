"""The policy's own queries: zones by kind, who runs a zone, its principals and dealer."""

from __future__ import annotations

from hsi.policy import HeZone, MpcZone, TeeZone, load_policy
from tests.conftest import POLICIES


def test_zones_by_kind_parties_and_dealers() -> None:
    p = load_policy(POLICIES / "private-minilm.yaml")
    assert list(p.zones_of(TeeZone)) == ["enclave"] and list(p.zones_of(HeZone)) == ["he"]
    assert all(isinstance(z, MpcZone) for z in p.zones_of(MpcZone).values())
    assert p.zone_parties("mpc") == ["owner", "keyholder"] and p.zone_parties("he") == ["owner"]
    assert p.has_dealer("mpc") and not p.has_dealer("he")
    assert p.principal("owner", "he") == "owner/he" and p.runtime_principal == "client/runtime"
    assert {proc.key for proc in p.processes()} >= {"mpc@owner", "mpc@keyholder", "mpc@dealer+dealer"}
