"""The OpenAI-compatible HTTP API of `hsi serve --http-port`, driven with the official `openai` client and curl
against real zone processes: embeddings and streamed chat equal the plaintext model, errors carry OpenAI's shape
and the right status, the queue refuses past its length, a client that leaves cancels its run, a killed zone is
named, and /metrics parses."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import torch
import yaml
from prometheus_client.parser import text_string_to_metric_families

from hsi.models.registry import load_tokenizer
from hsi.policy import load_policy
from orchestrator.launcher import down, ensure_certs, running, up
from orchestrator.reference import reference_embedding, reference_generate
from tests.conftest import POLICIES, policy_on_free_ports
from tests.integration.conftest import Deployment
from tests.support.http import get, http_service, post

TURNS = 2  # sessions the plain-minilm service runs at once (transport.max_sessions)
MAX_INPUTS = 1024  # texts one embeddings request may hold (--max-inputs): a full one holds its turn for 512 passes
TEXTS = [
    "Patient is a 67-year-old man with type 2 diabetes and stage 3 chronic kidney disease.",
    "Wire 25,000 EUR from the savings account to the escrow account before Friday.",
    "It rained all weekend, so we stayed in and played board games.",
]
CHAT = [{"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What is a mortgage?"}]


def client(base: str) -> openai.OpenAI:
    """OpenAI's client on the service, without retries (a test wants the first answer)."""
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)


def wait_for(base: str, gauge: str, value: float, timeout_s: float = 30) -> None:
    """Until the gauge `gauge` of /metrics reads `value`."""
    end = time.monotonic() + timeout_s
    while metric_samples(base)[(gauge, ())] != value:
        assert time.monotonic() < end, f"{gauge} never reached {value}"
        time.sleep(0.05)


def metric_samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus-client's own parser."""
    status, body = get(f"{base}/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def served(name: str, tmp_path_factory: pytest.TempPathFactory, *args: str, max_sessions: int | None = None,
           max_batch: int | None = None) -> Iterator[tuple[Deployment, str]]:
    """A shipped policy on free ports (`transport.max_sessions`, `model.max_batch` set) with `hsi serve --http-port
    ARGS` over it, ready (the service starts loading while the zones start)."""
    work = tmp_path_factory.mktemp("http")
    path = policy_on_free_ports(POLICIES / name, work)
    if max_sessions is not None or max_batch is not None:
        data = yaml.safe_load(path.read_text())
        if max_sessions is not None:
            data.setdefault("transport", {})["max_sessions"] = max_sessions
        if max_batch is not None:
            data["model"]["max_batch"] = max_batch
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    ensure_certs(load_policy(path))
    with http_service(path, work / "serve.log", *args) as svc:
        up(path)
        try:
            svc.wait_ready()
            yield Deployment(path), svc.base
        finally:
            down(path)


@pytest.fixture(scope="module")
def minilm(hsi_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, str]]:
    # passes of 2 texts: a list of 3 takes two passes, and a full request holds its turn for MAX_INPUTS / 2 passes
    yield from served("plain-minilm.yaml", tmp_path_factory, "--queue", "2", "--max-inputs", str(MAX_INPUTS),
                      max_sessions=TURNS, max_batch=2)


@pytest.fixture(scope="module")
def minilm_api(minilm: tuple[Deployment, str]) -> str:
    return minilm[1]


@pytest.fixture(scope="module")
def smollm2_api(hsi_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for _, base in served("plain-smollm2.yaml", tmp_path_factory, "--queue", "1"):
        yield base


# -- plain-minilm: embeddings ---------------------------------------------------------------------------------


def test_embeddings_of_a_list_match_the_plaintext_model(minilm_api: str) -> None:
    api = client(minilm_api)
    assert [m.id for m in api.models.list().data] == ["minilm-l6"]
    got = api.embeddings.create(model="minilm-l6", input=TEXTS)  # the client asks for base64 and decodes it
    assert [d.index for d in got.data] == [0, 1, 2]
    assert got.usage.prompt_tokens > len(TEXTS)
    for text, d in zip(TEXTS, got.data, strict=True):
        cosine = torch.nn.functional.cosine_similarity(torch.tensor(d.embedding), reference_embedding("minilm-l6", text),
                                                       dim=0)
        assert cosine >= 0.995
    floats = api.embeddings.create(model="minilm-l6", input=TEXTS[0], encoding_format="float")
    assert torch.allclose(torch.tensor(floats.data[0].embedding), torch.tensor(got.data[0].embedding), atol=1e-6)


def test_raw_curl_embeddings(minilm_api: str) -> None:
    proc = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", f"{minilm_api}/v1/embeddings",
                           "-H", "Content-Type: application/json",
                           "-d", json.dumps({"model": "minilm-l6", "input": TEXTS[2]})],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    body, status = proc.stdout.rsplit("\n", 1)
    assert status == "200"
    out = json.loads(body)
    assert out["object"] == "list" and out["model"] == "minilm-l6"
    emb = torch.tensor(out["data"][0]["embedding"])
    assert emb.shape == (384,)
    assert torch.nn.functional.cosine_similarity(emb, reference_embedding("minilm-l6", TEXTS[2]), dim=0) >= 0.995


def test_bad_embedding_requests_get_openai_errors(minilm_api: str) -> None:
    api = client(minilm_api)
    with pytest.raises(openai.UnprocessableEntityError) as unknown:
        api.embeddings.create(model="text-embedding-3-small", input="x")
    assert unknown.value.status_code == 422
    assert unknown.value.body == {"message": "model 'text-embedding-3-small' is not served here; this server serves "
                                             "'minilm-l6' (GET /v1/models)", "type": "invalid_request_error",
                                  "param": "model", "code": "model_not_found"}
    with pytest.raises(openai.APIStatusError) as long:
        api.embeddings.create(model="minilm-l6", input=[TEXTS[0], "blood pressure " * 100])
    assert long.value.status_code == 413
    assert long.value.body["code"] == "context_length_exceeded"
    assert "input[1] has" in long.value.body["message"] and "model.max_tokens" in long.value.body["message"]
    with pytest.raises(openai.BadRequestError) as dims:
        api.embeddings.create(model="minilm-l6", input="x", dimensions=128)
    assert dims.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError) as many:
        api.embeddings.create(model="minilm-l6", input=["x"] * (MAX_INPUTS + 1))
    assert many.value.body["param"] == "input" and f"at most {MAX_INPUTS} per request" in many.value.body["message"]
    status, body = post(f"{minilm_api}/v1/embeddings", b'{"model": "minilm-l6", "input": ')  # malformed JSON
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("the body is not valid JSON")
    status, body = post(f"{minilm_api}/v1/embeddings", json.dumps({"model": "minilm-l6", "input": [1, 2]}).encode())
    assert status == 400 and body["error"]["param"] == "input" and "token-id" in body["error"]["message"]
    status, body = post(f"{minilm_api}/v1/chat/completions",
                        json.dumps({"model": "minilm-l6", "messages": [{"role": "user", "content": "hi"}]}).encode())
    assert status == 400 and "use /v1/embeddings" in body["error"]["message"]


def test_four_concurrent_requests_succeed(minilm_api: str) -> None:
    api = client(minilm_api)
    texts = [f"{t} (request {i})" for i, t in enumerate(TEXTS + TEXTS[:1])]
    got: dict[int, list[float]] = {}
    errors: list[str] = []

    def one(i: int) -> None:
        try:
            got[i] = api.embeddings.create(model="minilm-l6", input=texts[i]).data[0].embedding
        except Exception as e:  # reported below
            errors.append(f"{i}: {e}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]  # 2 run at once, 2 wait their turn
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for i, text in enumerate(texts):
        cosine = torch.nn.functional.cosine_similarity(torch.tensor(got[i]), reference_embedding("minilm-l6", text),
                                                       dim=0)
        assert cosine >= 0.995


def test_full_queue_gets_429_and_a_client_that_leaves_cancels_its_run(minilm_api: str) -> None:
    api = client(minilm_api)
    before = metric_samples(minilm_api).get(("hsi_runs_total", (("outcome", "cancelled"),)), 0.0)
    # requests that hold the runtime's turns for many passes (MAX_INPUTS inputs of 106 tokens: far longer than
    # the test takes to leave, so each run is still going when its client goes), sent over raw sockets
    many = json.dumps({"model": "minilm-l6", "input": [" ".join(TEXTS * 2)] * MAX_INPUTS}).encode()
    host, port = minilm_api.removeprefix("http://").split(":")
    holders = []
    for _ in range(TURNS):
        holder = socket.create_connection((host, int(port)))
        holder.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(many), many))
        holders.append(holder)
    wait_for(minilm_api, "hsi_active_sessions", TURNS)
    waited: dict[int, Any] = {}

    def waiting(i: int) -> None:  # waits for a turn in one of the queue's two places
        waited[i] = api.embeddings.create(model="minilm-l6", input=TEXTS[i]).data

    threads = [threading.Thread(target=waiting, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    wait_for(minilm_api, "hsi_queue_depth", 2)
    with pytest.raises(openai.RateLimitError) as full:
        api.embeddings.create(model="minilm-l6", input=TEXTS[2])
    assert full.value.status_code == 429 and full.value.body["code"] == "queue_full"
    assert full.value.response.headers["retry-after"] == "1"
    for holder in holders:
        holder.close()  # the clients leave: their runs stop at the next stage and the waiting requests run
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    assert all(len(waited[i][0].embedding) == 384 for i in range(2))
    got = metric_samples(minilm_api)
    assert got[("hsi_runs_total", (("outcome", "cancelled"),))] == before + TURNS
    assert got[("hsi_http_requests_total", (("route", "/v1/embeddings"), ("status", "429")))] == 1


def test_probes_and_metrics(minilm_api: str) -> None:
    assert get(f"{minilm_api}/healthz") == (200, b'{"status":"ok"}')
    status, body = get(f"{minilm_api}/readyz")
    assert status == 200 and json.loads(body)["zones_down"] == []
    client(minilm_api).embeddings.create(model="minilm-l6", input=TEXTS[:2])
    got = metric_samples(minilm_api)
    assert got[("hsi_http_requests_total", (("route", "/v1/embeddings"), ("status", "200")))] >= 1
    assert got[("hsi_http_request_seconds_count", (("route", "/v1/embeddings"),))] >= 1
    for zone in ("embed-client", "plain-owner"):
        assert got[("hsi_zone_seconds_total", (("zone", zone),))] > 0
    assert got[("hsi_link_bytes_total", (("link", "client/embed-client->owner/plain-owner"),))] > 0
    assert got[("hsi_runs_total", (("outcome", "ok"),))] >= 3  # the warm-up pass and the requests
    assert got[("hsi_queue_depth", ())] == 0 and got[("hsi_active_sessions", ())] == 0
    assert got[("hsi_ready", ())] == 1


def test_a_stalled_zone_gives_504_and_the_service_recovers(minilm: tuple[Deployment, str], tmp_path: Path) -> None:
    """A second service over the same zones with a 3 s deadline: while the owner's zone is stopped (SIGSTOP) a
    request answers 504 at its deadline; once the zone runs again, the next request succeeds."""
    dep, _ = minilm
    pids = running(dep.policy)
    assert pids is not None
    with http_service(dep.path, tmp_path / "serve.log", "--deadline-s", "3") as svc:
        svc.wait_ready()
        api = client(svc.base)
        os.kill(pids["plain-owner@owner"], signal.SIGSTOP)
        try:
            start = time.monotonic()
            with pytest.raises(openai.APIStatusError) as late:
                api.embeddings.create(model="minilm-l6", input=TEXTS[0])
            waited = time.monotonic() - start
        finally:
            os.kill(pids["plain-owner@owner"], signal.SIGCONT)
        assert late.value.status_code == 504 and late.value.body["code"] == "deadline_exceeded"
        assert "deadline (3 s) passed" in late.value.body["message"] and 3 <= waited < 15
        got = api.embeddings.create(model="minilm-l6", input=TEXTS[1], encoding_format="float")
        assert torch.nn.functional.cosine_similarity(torch.tensor(got.data[0].embedding),
                                                     reference_embedding("minilm-l6", TEXTS[1]), dim=0) >= 0.995


def test_a_killed_zone_gives_503_naming_it_and_the_next_request_after_up_succeeds(
        minilm: tuple[Deployment, str]) -> None:
    dep, minilm_api = minilm
    pids = running(dep.policy)
    assert pids is not None
    os.kill(pids["plain-owner@owner"], signal.SIGKILL)
    time.sleep(0.5)
    api = client(minilm_api)
    with pytest.raises(openai.APIStatusError) as down:
        api.embeddings.create(model="minilm-l6", input=TEXTS[0])
    assert down.value.status_code == 503
    assert down.value.body["code"] == "zone_unavailable"
    assert down.value.body["message"].startswith("zone plain-owner@owner at 127.0.0.1:")
    status, body = get(f"{minilm_api}/readyz")
    assert status == 503 and json.loads(body)["zones_down"][0].startswith("plain-owner@owner")
    up(dep.path)  # restarts the dead zone
    got = api.embeddings.create(model="minilm-l6", input=TEXTS[1], encoding_format="float")
    assert len(got.data[0].embedding) == 384


# -- plain-smollm2: chat ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_streamed_chat_yields_the_plaintext_greedy_tokens(smollm2_api: str) -> None:
    tok = load_tokenizer("smollm2-135m")
    prompt = torch.tensor(tok.apply_chat_template(CHAT, tokenize=True, add_generation_prompt=True)["input_ids"])
    want = reference_generate("smollm2-135m", prompt, 12)
    api = client(smollm2_api)
    chunks = list(api.chat.completions.create(model="smollm2-135m", messages=CHAT, max_tokens=12, stream=True,
                                              stream_options={"include_usage": True}, temperature=0))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == tok.decode(want, skip_special_tokens=True)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop" if want[-1] == tok.eos_token_id else "length"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (len(prompt), len(want))
    whole = api.chat.completions.create(model="smollm2-135m", messages=CHAT, max_tokens=12)
    assert whole.choices[0].message.content == text and whole.usage is not None
    assert whole.usage.completion_tokens == len(want)
    got = metric_samples(smollm2_api)
    assert got[("hsi_time_to_first_token_seconds_count", ())] >= 2
    assert got[("hsi_time_per_output_token_seconds_count", ())] >= 2
    assert got[("hsi_tokens_total", (("kind", "completion"),))] >= 2 * len(want)


@pytest.mark.slow
def test_bad_chat_requests_get_openai_errors(smollm2_api: str) -> None:
    api = client(smollm2_api)
    with pytest.raises(openai.BadRequestError) as sampled:
        api.chat.completions.create(model="smollm2-135m", messages=CHAT, temperature=0.7)
    assert sampled.value.body["param"] == "temperature"
    assert "not private yet" in sampled.value.body["message"]
    with pytest.raises(openai.BadRequestError) as n:
        api.chat.completions.create(model="smollm2-135m", messages=CHAT, n=2)
    assert n.value.body["param"] == "n"
    with pytest.raises(openai.UnprocessableEntityError):
        api.chat.completions.create(model="gpt-4o", messages=CHAT)
    with pytest.raises(openai.APIStatusError) as long:
        api.chat.completions.create(model="smollm2-135m", messages=CHAT, max_tokens=1000)
    assert long.value.status_code == 413 and long.value.body["param"] == "max_tokens"
    with pytest.raises(openai.APIStatusError) as long_prompt:
        api.chat.completions.create(model="smollm2-135m", messages=[{"role": "user", "content": "tea " * 300}])
    assert long_prompt.value.status_code == 413 and long_prompt.value.body["param"] == "messages"


@pytest.mark.slow
def test_a_client_that_leaves_a_stream_cancels_its_run(smollm2_api: str) -> None:
    api = client(smollm2_api)
    before = metric_samples(smollm2_api).get(("hsi_runs_total", (("outcome", "cancelled"),)), 0.0)
    long = api.chat.completions.create(model="smollm2-135m", max_tokens=200, stream=True,
                                       messages=[{"role": "user", "content": "Tell me a long story about a dragon."}])
    stream = iter(long)
    next(stream)
    next(stream)  # it runs: its first token came
    long.close()  # the client leaves: its run stops at the next stage
    wait_for(smollm2_api, "hsi_active_sessions", 0)
    got = metric_samples(smollm2_api)
    assert got[("hsi_runs_total", (("outcome", "cancelled"),))] == before + 1
    short = api.chat.completions.create(model="smollm2-135m", max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert short.choices[0].message.content
