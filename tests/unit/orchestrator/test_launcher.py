"""The launcher issues every principal's certificate and starts only a policy whose parties are all here."""

from __future__ import annotations

from pathlib import Path

from hsi.policy import load_policy
from orchestrator.launcher import ensure_certs, on_this_host, principals
from tests.conftest import POLICIES


def test_only_a_policy_on_this_host_is_started_here() -> None:
    """The client of a multi-party policy uses the parties' zones; it never starts them itself."""
    local = load_policy(POLICIES / "plain-minilm.yaml")
    assert on_this_host(local)
    data = local.model_dump()
    data["parties"]["owner"]["address"] = "10.77.0.2"
    assert not on_this_host(type(local).model_validate(data))


def test_policy_principals_get_certificates(tmp_path: Path) -> None:
    policy = load_policy(POLICIES / "plain-minilm.yaml")
    assert set(principals(policy)) == {"client/runtime", "client/embed-client", "owner/plain-owner"}
    assert sorted(ensure_certs(policy, tmp_path)) == sorted(principals(policy))
    assert ensure_certs(policy, tmp_path) == []
