"""The fully private MiniLM across real zone processes: HE linears at the owner, MPC nonlinears between owner and
keyholder, the keyholder's enclave converting between them. Accuracy, what every party received, the enclave's
grants, and a killed enclave."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from hsi.audit import read_log, verify_records
from hsi.masking import MASK_SEED, fresh_mask_seed
from hsi.policy import Policy
from hsi.transport.keyclient import KeyClient
from hsi.transport.shares import split
from hsi.transport.tensor import StoredTensor
from orchestrator.cli import main as cli_main
from orchestrator.launcher import up
from protos import keys_pb2_grpc
from tests.integration.conftest import Deployment, enclave_deployment, fault_during_run, minilm_cosine
from tests.support.hsm import SoftHsm
from tests.support.http import http_service
from tests.support.tensors import channel_as, tensor_frames
from zones.common.ckks.encryptor import PublicEncryptor

RPC_S = 60.0


@pytest.fixture(scope="module")
def private(hsi_env: Path, softhsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from enclave_deployment("private-minilm.yaml", softhsm, tmp_path_factory, RPC_S)


def _receipt_verifies_and_a_changed_one_does_not(dep: Deployment, run: dict[str, Any], tmp_path: Path) -> None:
    """The run's privacy receipt, signed in the enclave, verifies with `hsi receipt verify`; a changed one not."""
    receipt = run["receipt"]
    assert receipt["signature"] is not None, receipt.get("unsigned")
    assert receipt["signature"]["simulated"] is True and receipt["body"]["privacy_check"] == "pass"
    assert receipt["body"]["received"]["keyholder"]["mpc"] == {"share": len(
        [r for r in run["privacy"]["observed"] if (r["party"], r["zone"]) == ("keyholder", "mpc")])}
    good, bad = tmp_path / "run.json", tmp_path / "changed.json"
    good.write_text(json.dumps(run))
    assert cli_main(["receipt", "verify", str(good), "--policy", str(dep.path)]) == 0
    receipt["body"]["received"]["keyholder"]["mpc"]["plain"] = 1  # a claim the enclave never signed
    bad.write_text(json.dumps(run))
    assert cli_main(["receipt", "verify", str(bad), "--policy", str(dep.path)]) == 2


def test_private_minilm_matches_plaintext_and_only_the_client_sees_plaintext(private: Deployment,
                                                                             tmp_path: Path) -> None:
    rt = private.runtime()
    try:
        for c in rt.plan.conversions:  # the plan states every mask's hiding and error budget
            if c.kind in ("he->mpc", "mpc->he"):
                assert c.hiding_bits is not None and c.hiding_bits >= 20, c
                assert c.error_budget is not None and 0 < c.error_budget < 1e-3, c
        # four tokens travel in the lane layout, the rest token-batched (lane_max_tokens 4)
        texts = ["Chest pain", "Biopsy: invasive ductal carcinoma, grade 2, estrogen-receptor positive."]
        for text in texts:
            run = rt.embed(text).to_dict()
            cosine = minilm_cosine(run["output"]["embedding"], text)
            print(f"private cosine {cosine:.6f}, {run['output']['tokens']} tokens, {run['metrics']['wall_s']} s, "
                  f"{run['metrics']['time_by_zone']}: {text}")
            assert cosine >= 0.995
            privacy = run["privacy"]
            assert privacy["mismatches"] == []
            _receipt_verifies_and_a_changed_one_does_not(private, run, tmp_path)
            got: dict[tuple[str, str], set[tuple[str, str]]] = {}
            for r in privacy["observed"]:
                if r["party"] != "client":  # no party but the client receives a plaintext activation
                    assert r["encoding"] != "plain", r
                got.setdefault((r["zone"], r["party"]), set()).add((r["encoding"], r["source_principal"]))
            assert got[("he", "owner")] == {("ckks", "client/embed-client"), ("ckks", "keyholder/enclave"),
                                            ("share", "owner/mpc")}
            # mpc->he: both parties' ring shares go to the enclave, which alone forms the bounded y - s
            assert got[("enclave", "keyholder")] == {("ckks", "owner/he"), ("share", "keyholder/mpc"),
                                                     ("share", "owner/mpc")}
            assert got[("mpc", "owner")] == {("share", "client/embed-client"), ("share", "owner/he")}
            assert got[("mpc", "keyholder")] == {("share", "client/embed-client"), ("share", "keyholder/enclave")}
    finally:
        rt.close()
    log = read_log(Path(private.policy.zones["enclave"].audit_log))  # type: ignore[union-attr]
    assert verify_records(log) == []
    allowed = {(r.principal, r.operation, r.reason) for r in log if r.decision == "allow"}
    assert ("owner/he", "decrypt_to_share", "granted, to keyholder/mpc") in allowed
    assert ("keyholder/mpc", "encrypt_share", "granted, to owner/he") in allowed
    assert ("owner/mpc", "encrypt_share", "granted, to owner/he") in allowed


# Clinical, financial and everyday text of 5 to 60 tokens, none from the calibration corpus.
TWENTY = [
    "Sunny with a light breeze.",
    "Where is the nearest pharmacy that is open on Sunday?",
    "I loved the film, although the ending felt rushed.",
    "Please cancel my subscription and refund the last payment.",
    "The patient reports chest pain radiating to the left arm since this morning.",
    "Hemoglobin A1c 8.9%, up from 7.2% three months ago; metformin dose increased.",
    "Biopsy: invasive ductal carcinoma, grade 2, estrogen-receptor positive, HER2 negative.",
    "CT angiography shows no pulmonary embolism; small bilateral pleural effusions and bibasilar atelectasis.",
    "Post-operative day two after laparoscopic cholecystectomy, tolerating diet, pain controlled with "
    "acetaminophen, wound clean and dry, plan discharge tomorrow if afebrile.",
    "The central bank held rates steady and signalled two cuts next year.",
    "Quarterly dividend of $0.24 per share payable to holders of record on June 1.",
    "Suspicious login from an unrecognised device in another country was blocked.",
    "Net interest margin compressed to 2.9% as deposit costs rose faster than loan yields in the third quarter.",
    "The counterparty breached its covenant when leverage exceeded four times EBITDA, triggering a cross-default "
    "on the senior secured notes and an acceleration notice from the trustee.",
    "My flight was delayed by three hours, so I missed the connection in Frankfurt.",
    "Can you suggest a vegetarian recipe that takes less than thirty minutes?",
    "The kids built a sandcastle and then watched the tide wash it away.",
    "Our team shipped the new release on Friday and the crash rate dropped by half over the weekend.",
    "Mother of three, 41, presents with fatigue, weight gain and cold intolerance; TSH 11.2 mIU/L, free T4 low, "
    "started on levothyroxine 50 micrograms daily with repeat labs in six weeks and dietary advice given.",
    "Ok.",
]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_private_minilm_twenty_varied_sentences(private: Deployment) -> None:
    rt = private.runtime()
    try:
        results = []
        for text in TWENTY:
            r = rt.embed(text)
            results.append((r.output["tokens"], minilm_cosine(r.output["embedding"], text), r.metrics["wall_s"]))
    finally:
        rt.close()
    for tokens, cosine, wall in results:
        print(f"private-minilm: {tokens} tokens, cosine {cosine:.6f}, {wall:.1f} s")
    assert min(t for t, _, _ in results) <= 5 and max(t for t, _, _ in results) >= 50
    assert min(c for _, c, _ in results) >= 0.995


def _stream(policy: Policy, principal: str, method: str, t: StoredTensor, meta: dict[str, str]) -> grpc.RpcError:
    """The error the enclave answers a conversion call with, made as `principal`."""
    with channel_as(principal, policy.zone_endpoints("enclave")["keyholder"]) as ch:
        with pytest.raises(grpc.RpcError) as e:
            getattr(keys_pb2_grpc.KeyServiceStub(ch), method)(
                tensor_frames(t, "probe", "probe", principal.split("/")[0], meta), timeout=RPC_S)
        return e.value


def test_enclave_converts_only_as_granted(private: Deployment) -> None:
    policy = private.policy
    ct = PublicEncryptor(policy, "client/embed-client").encrypt("he", np.random.default_rng(0).normal(size=(4, 384)))
    to_owner = {"key": "ckks-main", "to_zone": "mpc", "to_party": "owner", "share_index": "0", "share_count": "2",
                "precision": "16", MASK_SEED: fresh_mask_seed().hex()}
    # the HE host may have shares decrypted for the keyholder's MPC party only, never for its own
    e = _stream(policy, "owner/he", "DecryptToShare", ct, to_owner)
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED and "does not name 'owner/mpc'" in e.details()
    to_keyholder = to_owner | {"to_party": "keyholder", "share_index": "1"}
    e = _stream(policy, "keyholder/mpc", "DecryptToShare", ct, to_keyholder)
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED and "no grant for decrypt_to_share" in e.details()
    e = _stream(policy, "owner/he", "DecryptToShare", ct, to_keyholder | {"share_index": "0"})
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "holds share 1" in e.details()
    e = _stream(policy, "owner/he", "DecryptToShare", ct, {k: v for k, v in to_keyholder.items() if k != MASK_SEED})
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "mask_seed" in e.details()  # its share would be bounded
    # two ring-uniform shares that do not sum to a bounded value: the enclave keeps the first, refuses the sum
    first, _ = split(torch.randn(4, 384), 2, 16)
    _, second = split(torch.randn(4, 384), 2, 16)
    to_he = {"key": "ckks-main", "to_zone": "he"}
    with channel_as("keyholder/mpc", policy.zone_endpoints("enclave")["keyholder"]) as ch:
        reply = keys_pb2_grpc.KeyServiceStub(ch).EncryptShare(
            tensor_frames(second, "probe", "probe", "keyholder", second.meta | to_he), timeout=RPC_S)
        assert reply.bytes == 0  # the other party's share is still to come
    e = _stream(policy, "owner/mpc", "EncryptShare", first, first.meta | to_he)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "beyond a bounded share" in e.details()
    e = _stream(policy, "owner/he", "EncryptShare", first, first.meta | to_he)
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED
    log = read_log(Path(policy.zones["enclave"].audit_log))  # type: ignore[union-attr]
    denied = {(r.principal, r.operation) for r in log if r.decision == "deny"}
    assert {("owner/he", "decrypt_to_share"), ("keyholder/mpc", "decrypt_to_share"), ("owner/mpc", "encrypt_share"),
            ("owner/he", "encrypt_share")} <= denied


@pytest.mark.slow
def test_killed_enclave_fails_the_run_naming_it_and_keys_survive_a_restart(private: Deployment) -> None:
    policy = private.policy
    admin = KeyClient(policy, "enclave", "keyholder/admin")
    before = [(k.key, k.version, k.public_key_sha256) for k in admin.list()]
    admin.close()
    # 3 s in, conversions through the enclave are under way
    error, seconds = fault_during_run(private, "enclave@keyholder", signal.SIGKILL, 3, 2 * RPC_S + 60)
    print(f"killed enclave: failed after {seconds:.1f} s: {error[:300]}")
    assert "enclave" in error
    assert seconds < 2 * RPC_S + 30
    up(private.path)  # restarts the enclave only; it unseals its keys from disk
    admin = KeyClient(policy, "enclave", "keyholder/admin")
    assert [(k.key, k.version, k.public_key_sha256) for k in admin.list()] == before
    admin.close()
    rt = private.runtime()
    try:
        text = "Back in service."
        assert minilm_cosine(rt.embed(text).output["embedding"], text) >= 0.995
    finally:
        rt.close()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_four_concurrent_http_requests_all_succeed(private: Deployment, tmp_path: Path) -> None:
    # the zones run them at once (transport.max_sessions: 4): MPC workers and meshes, HE and enclave sessions each
    import openai

    texts = ["Patient stable.", "Refill metformin.", "Card blocked after three failed PINs.", "MRI next Tuesday."]
    with http_service(private.path, tmp_path / "serve.log") as svc:
        svc.wait_ready(600)
        api = openai.OpenAI(base_url=f"{svc.base}/v1", api_key="unused", max_retries=0, timeout=1200)
        got: dict[int, list[float]] = {}
        errors: list[str] = []

        def one(i: int) -> None:
            try:
                got[i] = api.embeddings.create(model="minilm-l6", input=texts[i]).data[0].embedding
            except Exception as e:  # reported below
                errors.append(f"{i}: {e}")

        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(1500)
        print(f"4 concurrent private-minilm requests in {time.monotonic() - start:.0f} s")
        assert not errors, errors
        assert min(minilm_cosine(got[i], texts[i]) for i in range(4)) >= 0.995


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_list_over_http_is_one_batched_pass_equal_to_the_cli(private: Deployment, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Four texts of different lengths: one private pass through /v1/embeddings (the official client) and one
    through `hsi embed A B C D --json`; each embedding matches plaintext and the other's."""
    import openai

    texts = ["Patient stable.", "Refill metformin 500 mg twice daily for ninety days.", "Card blocked.",
             "MRI next Tuesday at 9:30, fasting from midnight; bring the referral letter."]
    assert cli_main(["embed", "--policy", str(private.path), "--json", *texts]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["output"]["passes"] == 1 and len(cli["receipt"]) == 1
    with http_service(private.path, tmp_path / "serve.log") as svc:
        svc.wait_ready(600)
        api = openai.OpenAI(base_url=f"{svc.base}/v1", api_key="unused", max_retries=0, timeout=1200)
        got = api.embeddings.create(model="minilm-l6", input=texts, encoding_format="float")
    http = [d.embedding for d in got.data]
    for text, a, b in zip(texts, http, cli["output"]["embeddings"], strict=True):
        assert minilm_cosine(a, text) >= 0.995 and minilm_cosine(b, text) >= 0.995
        assert float(torch.nn.functional.cosine_similarity(torch.tensor(a), torch.tensor(b), dim=0)) >= 0.999
    assert cli["privacy"]["mismatches"] == []
