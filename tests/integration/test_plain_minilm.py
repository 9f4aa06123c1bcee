"""plain-minilm across two zone processes: correct embeddings, data-plane records, metrics, CLI contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import pytest
import torch

from orchestrator.reference import reference_embedding
from orchestrator.runtime import RunError
from tests.conftest import ROOT
from tests.integration.conftest import Deployment

TEXTS = [
    "Patient is a 67-year-old man with type 2 diabetes and stage 3 chronic kidney disease.",
    "Wire 25,000 EUR from the savings account to the escrow account before Friday.",
    "It rained all weekend, so we stayed in and played board games.",
]


def test_embeddings_match_hf(plain_minilm: Deployment) -> None:
    rt = plain_minilm.runtime()
    try:
        for text in TEXTS:
            r = rt.embed(text)
            got = torch.tensor(r.output["embedding"])
            want = reference_embedding("minilm-l6", text)
            assert (got - want).abs().max().item() <= 1e-5
    finally:
        rt.close()


def test_records_match_privacy_report(plain_minilm: Deployment) -> None:
    rt = plain_minilm.runtime()
    try:
        r = rt.embed(TEXTS[0])
    finally:
        rt.close()
    observed = {(o["zone"], o["name"], o["encoding"], o["source_principal"]) for o in r.privacy["observed"]}
    assert observed == {("embed-client", "input_ids", "plain", "client/runtime"),
                        ("plain-owner", "embeddings.LayerNorm", "plain", "client/embed-client")}
    assert r.privacy["mismatches"] == []
    assert "embeddings.LayerNorm" in r.privacy["report"]["owner"]["activations"]
    links = r.metrics["bytes_by_link"]
    assert links["client/embed-client->owner/plain-owner"] == r.output["tokens"] * 384 * 4
    assert links["owner/plain-owner->client/runtime"] == 384 * 4
    assert set(r.metrics["time_by_zone"]) == {"embed-client", "plain-owner"}


def test_input_longer_than_policy_allows(plain_minilm: Deployment) -> None:
    rt = plain_minilm.runtime()
    try:
        with pytest.raises(RunError, match="the policy allows at most 128 \\(model.max_tokens\\)"):
            rt.embed("word " * 300)
    finally:
        rt.close()


def test_cli_embed_json_check(plain_minilm: Deployment) -> None:
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "embed", "--policy", str(plain_minilm.path),
                           "--json", "--check", TEXTS[1]], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["output"]["embedding"]) == 384
    assert set(out["metrics"]) >= {"wall_s", "time_by_zone", "bytes_by_link"}
    assert out["reference"]["cosine"] > 0.9999 and out["reference"]["max_abs_err"] < 1e-5
    assert out["privacy"]["mismatches"] == [] and out["privacy"]["observed"]


def test_batch_in_one_pass_matches_hf(plain_minilm: Deployment) -> None:
    """Three texts in one padded pass, and four (the policy's max_batch is 3) in two: each as HF embeds it
    alone."""
    rt = plain_minilm.runtime()
    try:
        r = rt.embed_batch(TEXTS)
        two = rt.embed_batch([*TEXTS, "Short."])
    finally:
        rt.close()
    assert r.output["passes"] == 1 and r.output["tokens"] == [len(rt.tokenizer(t)["input_ids"]) for t in TEXTS]
    assert len(r.receipt) == 1 and r.privacy["mismatches"] == []
    width = max(r.output["tokens"])
    # one pass: the client's zone sent the owner one padded tensor of the three texts
    assert r.metrics["bytes_by_link"]["client/embed-client->owner/plain-owner"] == 3 * width * 384 * 4
    for got, text in zip([*r.output["embeddings"], *two.output["embeddings"]], [*TEXTS, *TEXTS, "Short."],
                         strict=True):
        assert (torch.tensor(got) - reference_embedding("minilm-l6", text)).abs().max().item() <= 1e-5
    assert two.output["passes"] == 2 and len(two.receipt) == 2


def test_zone_refuses_a_bad_batch(plain_minilm: Deployment) -> None:
    """RunStage names its batch; a zone refuses an empty sequence, too many sequences, or rows that do not fit."""
    from hsi.batch import pad
    from orchestrator.runtime.metrics import Metrics
    from protos import zone_pb2

    rt = plain_minilm.runtime()
    try:
        rt.load()
        stage = rt.plan.stages[0]
        ids, _ = pad([[101, 7592, 102], [101, 102]], 0)  # 2 sequences padded to 3: 6 rows
        rt.zones.push("bad-batch", stage, "input_ids", ids, Metrics())
        for lengths, want in (([3, 0], "has no tokens"), ([3] * 4, "exceeds the policy's max_batch 3"),
                              ([2, 2], "do not have the 4 rows of a batch of 2 sequences padded to 2 tokens"),
                              ([200, 3], "200 tokens exceed the policy's max_tokens 128")):
            with pytest.raises(grpc.RpcError) as e:
                rt.zones.stub(stage.zone).RunStage(zone_pb2.RunStageRequest(
                    session="bad-batch", plan_digest=rt.plan.digest, stage=stage.index, lengths=lengths), timeout=30)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and want in e.value.details(), lengths
        rt.zones.stub(stage.zone).RunStage(zone_pb2.RunStageRequest(
            session="bad-batch", plan_digest=rt.plan.digest, stage=stage.index, lengths=[3, 2]), timeout=30)
    finally:
        rt.close()


def test_cli_embeds_several_texts_and_a_file(plain_minilm: Deployment, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lines = tmp_path / "texts.txt"
    lines.write_text(f"{TEXTS[0]}\n\n{TEXTS[2]}\n")
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "embed", "--policy", str(plain_minilm.path),
                           "--json", "--check", TEXTS[1], "--file", str(lines)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["output"]["embeddings"]) == 3 and out["output"]["passes"] == 1
    assert [c["cosine"] > 0.9999 for c in out["reference"]["each"]] == [True] * 3
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "embed", "--policy", str(plain_minilm.path),
                           "--file", str(empty)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2 and "has no text (one text per line)" in proc.stderr


def test_cli_plan_json(plain_minilm: Deployment) -> None:
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "plan", "--policy", str(plain_minilm.path),
                           "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert [s["zone"] for s in plan["stages"]] == ["embed-client", "plain-owner"]


def test_cli_bad_policy_exit_code(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\n")
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "plan", "--policy", str(bad)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2
    assert "bad.yaml:1 model: required key is missing" in proc.stderr
