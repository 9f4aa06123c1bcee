"""The plan's conversion table: what each process receives of each conversion, and how well it is hidden there."""

from __future__ import annotations

import pytest

from hsi.models.registry import load_graph
from hsi.plan import make_plan
from hsi.policy import TeeZone, load_policy, load_policy_text
from tests.conftest import POLICIES


@pytest.mark.parametrize("name", ["private-minilm", "private-smollm2", "selective-smollm2", "all-mpc-minilm"])
def test_no_bounded_value_reaches_a_process_outside_the_enclave(name: str) -> None:
    policy = load_policy(POLICIES / f"{name}.yaml")
    plan = make_plan(load_graph(policy.model.name), policy)
    enclaves = {policy.principal(z.party, n) for n, z in policy.zones_of(TeeZone).items()}
    for c in plan.conversions:
        assert c.sees, c
        for principal, seen in c.sees.items():
            if "bounded" in seen.what:
                assert principal in enclaves, (c.tensor, c.kind, principal)
                assert c.hiding_bits is not None and seen.hiding == f"{c.hiding_bits} bits (statistical)"
            if c.kind.endswith("->mpc"):
                assert principal in enclaves or seen.hiding in ("perfect", "128-bit RLWE"), (c.tensor, principal)


def test_he_mpc_conversions_name_every_process_involved() -> None:
    policy = load_policy(POLICIES / "private-minilm.yaml")
    plan = make_plan(load_graph(policy.model.name), policy)
    kinds = {c.kind: c for c in plan.conversions}
    expected = {"owner/mpc", "keyholder/mpc", "keyholder/enclave", "owner/he"}
    assert set(kinds["he->mpc"].sees) == expected and set(kinds["mpc->he"].sees) == expected
    assert kinds["he->mpc"].sees["keyholder/mpc"].what.startswith("share, uniform")
    assert kinds["plain->he"].sees == {"owner/he": kinds["he->mpc"].sees["owner/he"]}
    assert kinds["mpc->plain"].sees["client/embed-client"].what == "plaintext"


def test_the_plan_names_who_must_not_collude_for_each_dealer_choice() -> None:
    text = (POLICIES / "private-minilm.yaml").read_text()
    four = make_plan(load_graph("minilm-l6"), load_policy_text(text))
    pairs = {tuple(c.pair) for c in four.collusion}
    assert pairs == {("owner", "keyholder"), ("owner", "dealer"), ("keyholder", "dealer"),
                     ("owner", "keyholder's enclave (enclave)")}
    three = make_plan(load_graph("minilm-l6"), load_policy_text(
        text.replace("dealer: dealer\n", "dealer: enclave\n").replace("  dealer: {address: 127.0.0.1}\n", "")))
    pairs = {tuple(c.pair) for c in three.collusion}
    assert pairs == {("owner", "keyholder"), ("owner", "keyholder's enclave (enclave)"),
                     ("keyholder", "keyholder's enclave (enclave)")}  # no fourth organisation to trust
    assert all("dealer" not in " ".join(c.pair) for c in three.collusion)
