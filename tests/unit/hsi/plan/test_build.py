"""The planner: placement, eligibility, stages, conversions, privacy report and its enforcement."""

from __future__ import annotations

import json
import textwrap

import pytest

from hsi.models.registry import load_graph
from hsi.plan import PlanError, make_plan
from hsi.policy import Policy, load_policy, load_policy_text
from tests.conftest import POLICIES

HEADER = textwrap.dedent("""\
    version: 1
    name: t
    model: {name: minilm-l6, owner: owner}
    client: client
    parties:
      client: {address: 127.0.0.1}
      owner: {address: 127.0.0.1}
      keyholder: {address: 127.0.0.1}
      dealer: {address: 127.0.0.1}
    zones:
      c: {kind: plain, party: client, port: 6001}
      o: {kind: plain, party: owner, port: 6008}
      h: {kind: he, party: owner, port: 6002}
      m:
        kind: mpc
        parties: {owner: {port: 6003}, keyholder: {port: 6004}}
        dealer: dealer
        dealer_port: 6005
        rendezvous_port: 6006
      t: {kind: tee, party: keyholder, port: 6007}
    """)


def policy(body: str) -> Policy:
    return load_policy_text(HEADER + textwrap.dedent(body), "p.yaml")


def test_plain_minilm_plan() -> None:
    p = load_policy(POLICIES / "plain-minilm.yaml")
    plan = make_plan(load_graph("minilm-l6"), p)
    assert [(s.zone, len(s.ops)) for s in plan.stages] == [("embed-client", 2), ("plain-owner", 91)]
    assert plan.stages[1].inputs == ["embeddings.LayerNorm"] and plan.stages[1].outputs == ["pool"]
    kinds = [(c.tensor, c.from_zone, c.to_zone, c.kind) for c in plan.conversions]
    assert kinds == [("input_ids", "client", "embed-client", "plain->plain"),
                     ("embeddings.LayerNorm", "embed-client", "plain-owner", "plain->plain"),
                     ("pool", "plain-owner", "client", "plain->plain")]
    owner = plan.privacy["owner"]
    assert "encoder.layer.0.attention.self.query" in owner.activations  # the owner sees the text's activations
    assert "input_ids" not in owner.activations
    assert plan.privacy["client"].activations[:1] == ["embeddings"] and "pool" in plan.privacy["client"].activations
    assert "embeddings.word_embeddings.weight" in plan.privacy["client"].weights
    assert plan.est_seconds > 0 and plan.est_bytes > 0
    json.dumps(plan.to_dict())
    assert plan.digest == make_plan(load_graph("minilm-l6"), p).digest


def test_private_placement_privacy_report() -> None:
    p = policy("""\
        placement:
          - {match: "embeddings*", zone: c}
          - {match: "*", types: [linear], zone: h}
          - {match: "pool", zone: c}
          - {match: "*", zone: m}
        privacy:
          - {party: owner, never_sees: activations, ops: "*"}
          - {party: keyholder, never_sees: activations, ops: "*"}
        """)
    plan = make_plan(load_graph("minilm-l6"), p)
    assert plan.privacy["owner"].activations == [] and plan.privacy["keyholder"].activations == []
    assert "encoder.layer.0.attention.self.qkv" in plan.privacy["owner"].ciphertexts
    assert "encoder.layer.0.attention.self.softmax" in plan.privacy["keyholder"].shares
    kinds = {c.kind for c in plan.conversions}
    assert {"plain->he", "he->mpc", "mpc->he", "mpc->plain"} <= kinds


def test_ineligible_op_names_rule_and_op() -> None:
    p = policy("""\
        placement:
          - {match: "embeddings*", zone: c}
          - {match: "*softmax", zone: h}
          - {match: "*", zone: o}
        """)
    with pytest.raises(PlanError, match=r"p.yaml:23 placement.1: rule places op 'encoder.layer.0.attention.self."
                                        r"softmax' \(softmax\) \(and 5 more\) in zone 'h' of kind he, which cannot "
                                        r"run it \(allowed: mpc, plain, tee\)"):
        make_plan(load_graph("minilm-l6"), p)


def test_rule_matching_no_op() -> None:
    p = policy("""\
        placement:
          - {match: "encoder.layer.9.*", zone: c}
          - {match: "*", zone: o}
        """)
    with pytest.raises(PlanError, match=r"p.yaml:22 placement.0.match: pattern 'encoder.layer.9.\*' matches no op"):
        make_plan(load_graph("minilm-l6"), p)


def test_unplaced_op() -> None:
    p = policy("""\
        placement:
          - {match: "encoder*", zone: o}
          - {match: "embeddings*", zone: c}
        """)
    with pytest.raises(PlanError, match="op 'pool' \\(pool\\) matches no placement rule"):
        make_plan(load_graph("minilm-l6"), p)


def test_privacy_constraint_refuses_plan() -> None:
    p = policy("""\
        placement:
          - {match: "embeddings*", zone: c}
          - {match: "*", zone: o}
        privacy:
          - {party: owner, never_sees: activations, ops: "encoder.layer.[01].*"}
        """)
    with pytest.raises(PlanError, match="p.yaml:25 privacy.0: party 'owner' would see the plaintext activations of "
                                        "op 'encoder.layer.0.attention.output.LayerNorm' \\(and"):
        make_plan(load_graph("minilm-l6"), p)


def test_weights_constraint() -> None:
    p = policy("""\
        placement:
          - {match: "embeddings*", zone: c}
          - {match: "*", zone: o}
        privacy:
          - {party: client, never_sees: weights, ops: "embeddings*"}
        """)
    with pytest.raises(PlanError, match="party 'client' would see the plaintext weights of op 'embeddings'"):
        make_plan(load_graph("minilm-l6"), p)


def test_impossible_he_to_mpc_conversion() -> None:
    text = HEADER.replace("h: {kind: he, party: owner", "h: {kind: he, party: client").replace(
        "c: {kind: plain, party: client, port: 6001}", "c: {kind: plain, party: client, port: 6001}") + textwrap.dedent("""\
        placement:
          - {match: "embeddings*", zone: c}
          - {match: "*", types: [linear], zone: h}
          - {match: "*", zone: m}
        """)
    with pytest.raises(PlanError, match="he->mpc from zone 'h' to 'm': impossible, the HE zone's party 'client' runs "
                                        "no party of MPC zone 'm'"):
        make_plan(load_graph("minilm-l6"), load_policy_text(text, "p.yaml"))


def test_planner_refuses_the_conversions_no_zone_sends() -> None:
    # private-minilm with a residual add of the last block at the client: the HE output dense would cross he->plain,
    # which no zone can send. The planner refuses it, naming the conversion, rather than the runtime mid-run.
    text = (POLICIES / "private-minilm.yaml").read_text().replace(
        'placement:\n', 'placement:\n  - {match: "encoder.layer.5.output.residual", zone: embed-client}\n')
    with pytest.raises(PlanError, match=r"tensor 'encoder.layer.5.output.dense' must move he->plain from zone 'he' to "
                                        r"'embed-client': impossible, hsi cannot run he->plain conversions"):
        make_plan(load_graph("minilm-l6"), load_policy_text(text, "p.yaml"))


def test_plain_to_he_needs_key_service() -> None:
    text = HEADER.replace("  t: {kind: tee, party: keyholder, port: 6007}\n", "") + textwrap.dedent("""\
        placement:
          - {match: "embeddings*", zone: c}
          - {match: "*", types: [linear], zone: h}
          - {match: "*", zone: o}
        """)
    with pytest.raises(PlanError, match="plain->he .* the policy has no tee zone"):
        make_plan(load_graph("minilm-l6"), load_policy_text(text, "p.yaml"))


def test_smollm2_selective_privacy_report() -> None:
    p = load_policy_text(HEADER.replace("minilm-l6", "smollm2-135m") + textwrap.dedent("""\
        placement:
          - {match: "model.embed_tokens", zone: c}
          - {match: "model.layers.[01].*", types: [linear], zone: h}
          - {match: "model.layers.[01].*", zone: m}
          - {match: "*", zone: o}
        """), "p.yaml")
    plan = make_plan(load_graph("smollm2-135m"), p)
    owner = plan.privacy["owner"].activations
    assert "model.layers.1.mlp.residual" in owner  # the hidden state leaving block 1
    assert not [t for t in owner if t.startswith("model.layers.0.") or t.startswith("model.layers.1.self_attn")]
    assert plan.stages[-1].ops[-1] == "sample"


def test_mpc_weights_need_the_owner_among_the_parties() -> None:
    p = load_policy_text(HEADER.replace("parties: {owner: {port: 6003}, keyholder: {port: 6004}}",
                                        "parties: {client: {port: 6003}, keyholder: {port: 6004}}")
                         + 'placement:\n  - {match: "embeddings", zone: c}\n  - {match: "*", zone: m}\n', "p.yaml")
    with pytest.raises(PlanError, match="model owner 'owner' is not one of its parties"):
        make_plan(load_graph("minilm-l6"), p)


def test_mpc_plan_pins_the_calibration(tmp_path) -> None:  # type: ignore[no-untyped-def]
    body = 'placement:\n  - {match: "embeddings", zone: c}\n  - {match: "*", zone: m}\n'
    plan = make_plan(load_graph("minilm-l6"), policy(body))
    assert set(plan.calibration) == {"m"} and len(plan.calibration["m"]) == 64
    missing = HEADER.replace("rendezvous_port: 6006", f"rendezvous_port: 6006\n    calibration: {tmp_path}/x.json")
    with pytest.raises(PlanError, match="no MPC calibration"):
        make_plan(load_graph("minilm-l6"), load_policy_text(missing + body, "p.yaml"))


def test_shipped_selective_smollm2_reveals_exactly_block_1s_output_onwards() -> None:
    graph = load_graph("smollm2-135m")
    plan = make_plan(graph, load_policy(POLICIES / "selective-smollm2.yaml"))
    names = [op.name for op in graph.ops]
    after = names[names.index("model.layers.1.mlp.residual"):]  # block 1's output and every later op
    assert set(plan.privacy["owner"].activations) == set(after)
    assert plan.privacy["keyholder"].activations == [] and plan.privacy["keyholder"].weights == []
    masked = [c for c in plan.conversions if c.kind in ("he->mpc", "mpc->he")]
    # per block: 4 into HE (the norms' and attention's outputs, SiLU(gate)*up), 4 out (q|k|v, o, gate|up, down)
    assert len(masked) == 16 and min(c.hiding_bits or 0 for c in masked) >= 20


def test_shipped_enclave_minilm_owner_sees_ciphertexts_the_enclave_the_rest() -> None:
    graph = load_graph("minilm-l6")
    plan = make_plan(graph, load_policy(POLICIES / "enclave-minilm.yaml"))
    kinds = {c.kind for c in plan.conversions}
    assert kinds == {"plain->tee", "tee->he", "he->tee", "tee->plain"}
    linears = {op.name for op in graph.ops if op.type.value == "linear"}
    owner, enclave = plan.privacy["owner"], plan.privacy["keyholder (enclave enclave)"]
    assert owner.activations == [] and plan.privacy["keyholder"].activations == []
    assert linears <= set(owner.ciphertexts)
    assert set(enclave.ciphertexts) == linears  # every linear's output comes back to it encrypted
    # the enclave decrypts and computes on every activation: the trust this plan puts in its hardware
    assert set(enclave.activations) == {op.name for op in graph.ops} | {"input_ids"}
    assert plan.privacy["client"].activations == ["input_ids", "pool"]
