"""plain-minilm across two zone processes: correct embeddings, data-plane records, metrics, CLI contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
