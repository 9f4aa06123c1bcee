"""HSM-style grants: deny by default, limits, named recipients, every decision audited."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from hsi.audit import verify_records
from hsi.policy import KeyGrant
from zones.tee.access import AccessControl, Denied
from zones.tee.audit import AuditLog


def test_access_control_grants_limits_and_audit(tmp_path: Path) -> None:
    grants = [KeyGrant(principal="owner/h", key="k", operations=["get_public_material"], max_calls=2),
              KeyGrant(principal="keyholder/admin", key="*", operations=["create", "rotate"], max_sessions=1)]
    log = AuditLog(tmp_path / "audit.log")
    ac = AccessControl(grants, log)
    ac.authorize("owner/h", "get_public_material", "k")
    with pytest.raises(Denied) as e:
        ac.authorize("mallory/x", "get_public_material", "k")
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(Denied) as e:
        ac.authorize("owner/h", "destroy", "k")
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED and "no grant for destroy" in e.value.reason
    ac.authorize("owner/h", "get_public_material", "k")
    with pytest.raises(Denied) as e:
        ac.authorize("owner/h", "get_public_material", "k")
    assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "allows 2 calls" in e.value.reason
    # the limit survives a restart: counts come from the audit log
    with pytest.raises(Denied):
        AccessControl(grants, AuditLog(tmp_path / "audit.log")).authorize("owner/h", "get_public_material", "k")
    ac.authorize("keyholder/admin", "create", "k2", session="a")
    with pytest.raises(Denied, match="allows 1 sessions"):
        ac.authorize("keyholder/admin", "create", "k2", session="b")
    decisions = [(r.principal, r.operation, r.decision) for r in log.records()]
    assert decisions == [("owner/h", "get_public_material", "allow"), ("mallory/x", "get_public_material", "deny"),
                         ("owner/h", "destroy", "deny"), ("owner/h", "get_public_material", "allow"),
                         ("owner/h", "get_public_material", "deny"), ("owner/h", "get_public_material", "deny"),
                         ("keyholder/admin", "create", "allow"), ("keyholder/admin", "create", "deny")]
    assert verify_records(log.records()) == []


def test_conversion_grants_name_their_recipients(tmp_path: Path) -> None:
    grants = [KeyGrant(principal="owner/he", key="k", operations=["decrypt_to_share"], recipients=["keyholder/mpc"]),
              KeyGrant(principal="keyholder/mpc", key="k", operations=["encrypt_share"])]
    log = AuditLog(tmp_path / "audit.log")
    ac = AccessControl(grants, log)
    ac.authorize("owner/he", "decrypt_to_share", "k", "s", recipient="keyholder/mpc")
    with pytest.raises(Denied, match="does not name 'owner/mpc' as a recipient") as e:
        ac.authorize("owner/he", "decrypt_to_share", "k", "s", recipient="owner/mpc")
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(Denied, match="it names none"):  # no recipients: denied by default
        ac.authorize("keyholder/mpc", "encrypt_share", "k", "s", recipient="owner/he")
    assert [r.decision for r in log.records()] == ["allow", "deny", "deny"]
    assert log.records()[0].reason == "granted, to keyholder/mpc"
