"""The tee zone as a process: attestation, key custody in SoftHSM2, grants, audit, restart; the HE zone takes
its public material from it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hsi.audit import read_log, verify_records
from hsi.models.registry import load_graph
from hsi.plan import make_plan
from hsi.transport.attestation import AttestationError, measurement
from hsi.transport.certs import load_credentials
from hsi.transport.keyclient import KeyClient, KeyServiceError
from hsi.transport.server import secure_channel
from protos import keys_pb2 as kpb
from protos import keys_pb2_grpc, zone_pb2, zone_pb2_grpc
from tests.conftest import ROOT
from tests.integration.conftest import TeeDeployment, tee_deployment
from tests.support.hsm import SoftHsm


@pytest.fixture(scope="module")
def tee(hsi_env: Path, softhsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeeDeployment]:
    yield from tee_deployment(softhsm, tmp_path_factory, [("t", "keyholder"), ("h", "owner")])


def test_attestation_and_key_creation(tee: TeeDeployment) -> None:
    admin = tee.client("keyholder/admin")
    q = admin.attest()
    assert q.measurement == measurement() and q.simulated
    r = admin.create("ckks-main", 16384, 35, 60, 1)
    assert len(r.public_key_sha256) == 32
    with pytest.raises(KeyServiceError, match="ALREADY_EXISTS"):
        admin.create("ckks-main", 16384, 35, 60, 1)
    assert [k.key for k in admin.list()] == ["ckks-main"]
    admin.close()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "keys", "attest", "--policy", str(tee.path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert measurement().hex() in proc.stdout and "verified against the policy's pins" in proc.stdout


def test_wrong_pins_refused(tee: TeeDeployment) -> None:
    bad = tee.policy.model_copy(deep=True)
    bad.zones["t"] = bad.zones["t"].model_copy(update={"measurement": "00" * 32})
    client = KeyClient(bad, "t", "keyholder/admin")
    with pytest.raises(AttestationError, match="differs from the pinned"):
        client.attest()
    client.close()


def test_unauthorised_principals_refused_and_audited(tee: TeeDeployment) -> None:
    for principal in ("mallory/x", "client/runtime"):
        c = tee.client(principal)
        c.attested = True  # skip attestation: the refusal must come from the grants
        with pytest.raises(KeyServiceError, match="PERMISSION_DENIED.*has no grant for get_public_material"):
            c.public_material("ckks-main", [16])
        c.close()
    owner = tee.client("owner/h")
    with pytest.raises(KeyServiceError, match="PERMISSION_DENIED.*no grant for destroy"):
        owner.destroy("ckks-main")
    owner.close()
    log = read_log(Path(tee.policy.zones["t"].audit_log))  # type: ignore[union-attr]
    denied = [(r.principal, r.operation) for r in log if r.decision == "deny"]
    assert ("mallory/x", "get_public_material") in denied and ("client/runtime", "get_public_material") in denied
    assert ("owner/h", "destroy") in denied
    assert verify_records(log) == []


def test_he_zone_takes_public_material_from_key_service(tee: TeeDeployment) -> None:
    plan = make_plan(load_graph("minilm-l6"), tee.policy)
    target = tee.policy.zone_endpoints("h")["owner"]
    runtime = zone_pb2_grpc.ZoneStub(secure_channel(load_credentials(Path(os.environ["HSI_CERTS_DIR"]),
                                                                     "client/runtime"), target))
    stage = next(s for s in plan.stages if s.zone == "h")
    reply = runtime.LoadStage(zone_pb2.LoadStageRequest(plan_digest=plan.digest, stage=stage.index), timeout=300)
    assert list(reply.ops) == stage.ops
    log = read_log(Path(tee.policy.zones["t"].audit_log))  # type: ignore[union-attr]
    fetched = [r for r in log if r.principal == "owner/h" and r.operation == "get_public_material"]
    assert [r.decision for r in fetched] == ["allow"]


def test_grant_past_its_limit(tee: TeeDeployment) -> None:
    owner = tee.client("owner/h")
    used = len([r for r in read_log(Path(tee.policy.zones["t"].audit_log))  # type: ignore[union-attr]
                if r.principal == "owner/h" and r.operation == "get_public_material" and r.decision == "allow"])
    for _ in range(3 - used):
        owner.public_material("ckks-main", [16])
    with pytest.raises(KeyServiceError, match="RESOURCE_EXHAUSTED.*allows 3 calls"):
        owner.public_material("ckks-main", [16])
    owner.close()


@pytest.mark.slow  # 16 s; a killed enclave's keys: test_private_minilm, slow too
def test_restart_keeps_keys_and_audit_chain(tee: TeeDeployment) -> None:
    before = read_log(Path(tee.policy.zones["t"].audit_log))  # type: ignore[union-attr]
    tee.stop("t", signal.SIGKILL)
    tee.start("t", "keyholder")
    admin = tee.client("keyholder/admin")
    keys = admin.list()
    assert [(k.key, k.destroyed) for k in keys] == [("ckks-main", False)]
    # the sealed key still opens in the restarted enclave: rotation unseals and replaces it
    assert admin.rotate("ckks-main").version == 2
    admin.close()
    after = read_log(Path(tee.policy.zones["t"].audit_log))  # type: ignore[union-attr]
    assert after[: len(before)] == before and verify_records(after) == []
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "audit", "verify", "--log",
                           tee.policy.zones["t"].audit_log], capture_output=True, text=True, cwd=ROOT,  # type: ignore[union-attr]
                          timeout=60)
    assert proc.returncode == 0 and "chain intact" in proc.stdout


def test_key_service_needs_a_certificate(tee: TeeDeployment) -> None:
    ca = (Path(os.environ["HSI_CERTS_DIR"]) / "ca.pem").read_bytes()
    target = tee.policy.zone_endpoints("t")["keyholder"]
    stub = keys_pb2_grpc.KeyServiceStub(grpc.secure_channel(target, grpc.ssl_channel_credentials(ca)))
    with pytest.raises(grpc.RpcError) as e:
        stub.Attest(kpb.AttestRequest(nonce=b"n" * 32), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
