"""The zones' allow tables are least privilege: the runtime drives, only planned senders push."""

from __future__ import annotations

from hsi.allow import zone_allow_table
from hsi.models.registry import load_graph
from hsi.plan import make_plan
from hsi.policy import load_policy
from tests.conftest import POLICIES


def test_zone_allow_tables_are_least_privilege() -> None:
    policy = load_policy(POLICIES / "plain-minilm.yaml")
    plan = make_plan(load_graph("minilm-l6"), policy)
    owner = zone_allow_table(policy, plan, "plain-owner")
    assert owner["/hsi.v1.Zone/PushTensor"] == {"client/embed-client"}
    assert owner["/hsi.v1.Zone/RunStage"] == {"client/runtime"}
    client = zone_allow_table(policy, plan, "embed-client")
    assert client["/hsi.v1.Zone/PushTensor"] == {"client/runtime"}
