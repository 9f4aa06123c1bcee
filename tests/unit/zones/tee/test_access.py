"""HSM-style grants: deny by default, limits, named recipients, every decision audited."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from hsi.audit import verify_records
from hsi.policy import KeyGrant
from zones.tee.access import (
    MAX_ROTATIONS,
    AccessControl,
    Denied,
    Invalid,
    check_header,
    check_int,
    check_key_name,
    check_rotations,
)
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


def test_request_fields_are_bounded_and_refusals_name_field_and_limit() -> None:
    assert check_key_name("ckks-main") == "ckks-main" and check_key_name("k" * 128)
    for bad in ("", "k" * 129, ".hidden", "a/b", "a b", "ключ"):
        with pytest.raises(Invalid, match=r"^key: a key name is 1\.\.128 characters"):
            check_key_name(bad)
    with pytest.raises(Invalid) as e:
        check_key_name("A" * 70_000)
    assert len(str(e.value)) < 300 and "got 70000 characters" in str(e.value)
    assert check_rotations([1, -1, 16, 8191], 8192) == [1, -1, 16, 8191]
    for rotations, why in [(list(range(1, MAX_ROTATIONS + 2)), f"at most {MAX_ROTATIONS}"), ([3, 3], "repeated"),
                           ([0], r"0 < \|r\| < 8192"), ([8192], "0 < "), ([-8192], "0 < ")]:
        with pytest.raises(Invalid, match=f"^rotations: .*{why}"):
            check_rotations(rotations, 8192)
    ok = {"key": "ckks-main", "to_zone": "mpc", "to_party": "keyholder", "packing": "lanes-staggered",
          "lengths": ",".join(["524417"] * 2000)}
    check_header("0123456789abcdef0123456789abcdef", "encoder.layer.0.attention.self.query", "bytes", "owner",
                 [5, 384], ok)
    for field, args in [("session", ("s" * 129, "n", "bytes", "", [], {})), ("session", ("a b", "n", "bytes", "", [], {})),
                        ("name", ("s", "n" * 257, "bytes", "", [], {})), ("name", ("s", "a\nb", "bytes", "", [], {})),
                        ("shape", ("s", "n", "bytes", "", [1] * 9, {})), ("shape", ("s", "n", "bytes", "", [-1], {})),
                        ("meta", ("s", "n", "bytes", "", [], {str(i): "" for i in range(65)})),
                        ("meta", ("s", "n", "bytes", "", [], {"lengths": "1" * (65 << 10)})),
                        ("meta['to_zone']", ("s", "n", "bytes", "", [], {"to_zone": "z" * 65})),
                        ("meta['recipient']", ("s", "n", "bytes", "", [], {"recipient": "../x"}))]:
        with pytest.raises(Invalid) as e:
            check_header(*args)
        assert e.value.field == field
    assert check_int({"precision": "16"}, "precision", 1, 62) == 16
    for raw in ("63", "-1", "1e3", "--5", "9" * 40):
        with pytest.raises(Invalid, match=r"meta\['precision'\]: an integer in 1\.\.62"):
            check_int({"precision": raw}, "precision", 1, 62)
