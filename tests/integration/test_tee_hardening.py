"""Issue 30 against a real tee zone: no caller breaks the key service or its audit log; conversion streams are
authorised on their header before the body is read and bounded per principal; every refusal of every method is
audited and leaves no receipt; rotation lists are bounded before any key is made."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from hsi.audit import read_log, verify_records
from hsi.transport.certs import load_credentials
from hsi.transport.keyclient import KeyServiceError
from hsi.transport.server import secure_channel
from hsi.transport.stream import frames
from protos import keys_pb2 as kpb
from protos import keys_pb2_grpc, zone_pb2, zone_pb2_grpc
from protos import tensor_pb2 as pb
from tests.conftest import ROOT
from tests.integration.conftest import TeeDeployment, tee_deployment
from tests.support.hsm import SoftHsm

STREAMS_PER_PRINCIPAL = 8  # zones.tee.service.MAX_CONVERSION_STREAMS (checked at the end of its test)


@pytest.fixture(scope="module")
def tee(hsi_env: Path, softhsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeeDeployment]:
    yield from tee_deployment(softhsm, tmp_path_factory, [("t", "keyholder")])


def _stub(tee: TeeDeployment, principal: str) -> tuple[keys_pb2_grpc.KeyServiceStub, grpc.Channel]:
    creds = load_credentials(Path(os.environ["HSI_CERTS_DIR"]), principal)
    channel = secure_channel(creds, tee.policy.zone_endpoints("t")["keyholder"], tee.policy.transport.max_message_bytes)
    return keys_pb2_grpc.KeyServiceStub(channel), channel


def _audit_log(tee: TeeDeployment) -> Path:
    return Path(tee.policy.zones["t"].audit_log)  # type: ignore[union-attr]


def _receipts(tee: TeeDeployment, session: str) -> list[Any]:
    creds = load_credentials(Path(os.environ["HSI_CERTS_DIR"]), "client/runtime")
    with secure_channel(creds, tee.policy.zone_endpoints("t")["keyholder"]) as channel:
        return list(zone_pb2_grpc.ZoneStub(channel).Records(zone_pb2.RecordsRequest(session=session),
                                                            timeout=30).receipts)


def _ensure_key(tee: TeeDeployment) -> None:
    admin = tee.client("keyholder/admin")
    if "ckks-main" not in [k.key for k in admin.list()]:
        admin.create("ckks-main", 16384, 35, 60, 1)
    admin.close()


def _share(session: str, meta: dict[str, str], corrupt: bool = False) -> Iterator[pb.TensorFrame]:
    data = bytes(64)
    header = pb.TensorHeader(session=session, name="encoder.layer.0.output", encoding=pb.SHARE, dtype="int64",
                             shape=[2, 4], meta=meta)
    for f in frames(header, data, 1 << 16):
        if corrupt and f.WhichOneof("frame") == "trailer":
            f.trailer.sha256 = hashlib.sha256(b"other").digest()
        yield f


def _refused(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value


@pytest.mark.slow  # 25 s
def test_huge_key_name_breaks_neither_the_key_service_nor_its_audit_log(tee: TeeDeployment) -> None:
    _ensure_key(tee)
    huge = "A" * 70_000
    mallory = tee.client("mallory/x")
    mallory.attested = True
    with pytest.raises(KeyServiceError) as e:
        mallory.public_material(huge, [16])
    assert "PERMISSION_DENIED" in str(e.value) and "has no grant for get_public_material" in str(e.value)
    assert len(str(e.value)) < 1024  # the status message echoes no huge field
    mallory.close()
    admin = tee.client("keyholder/admin")
    with pytest.raises(KeyServiceError, match=r"INVALID_ARGUMENT: key: a key name is 1\.\.128 characters") as e:
        admin.create(huge, 16384, 35, 60, 1)
    assert len(str(e.value)) < 1024
    assert "ckks-main" in [k.key for k in admin.list()]  # the key service still serves
    admin.close()
    tee.stop("t", signal.SIGKILL)
    tee.start("t", "keyholder")
    admin = tee.client("keyholder/admin")
    admin.attest()
    assert "ckks-main" in [k.key for k in admin.list()]  # and after a restart
    admin.close()
    path = _audit_log(tee)
    log = read_log(path)
    assert verify_records(log) == []
    cut = {(r.principal, r.operation) for r in log if r.decision == "deny" and r.key.startswith("A" * 128)
           and r.key.endswith("...[truncated: 70000 chars]")}
    assert cut == {("mallory/x", "get_public_material"), ("keyholder/admin", "create")}
    assert max(len(line) for line in path.read_text().splitlines()) < 8192  # every record stays small

    def verify(log_path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orchestrator.cli", "audit", "verify", "--log", str(log_path)],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
    ok = verify(path)
    assert ok.returncode == 0 and "chain intact" in ok.stdout
    missing = verify(tee.workdir / "no-such-audit.log")
    assert missing.returncode == 1 and "no audit log file" in missing.stderr
    broken = tee.workdir / "broken-audit.log"
    broken.write_text(path.read_text() + path.read_text().splitlines()[-1][:100] + "\n")
    bad = verify(broken)
    assert bad.returncode == 1 and "not an audit record" in bad.stderr


def test_ungranted_upload_is_refused_on_its_header_and_streams_are_bounded(tee: TeeDeployment) -> None:
    stub, channel = _stub(tee, "mallory/x")
    size, pulled = 64 << 20, [0]
    meta = {"key": "ckks-main", "to_zone": "h", "to_party": "owner", "share_index": "0", "share_count": "2",
            "precision": "16"}

    def upload() -> Iterator[pb.TensorFrame]:
        yield pb.TensorFrame(header=pb.TensorHeader(session="s-upload", name="big", encoding=pb.CKKS, dtype="bytes",
                                                    shape=[size], total_bytes=size, chunk_bytes=1 << 20, meta=meta))
        chunk = bytes(1 << 20)
        for i in range(size >> 20):
            pulled[0] += 1
            yield pb.TensorFrame(chunk=pb.TensorChunk(index=i, data=chunk))
        yield pb.TensorFrame(trailer=pb.TensorTrailer(sha256=hashlib.sha256(bytes(size)).digest(), chunk_count=64))

    e = _refused(lambda: stub.DecryptToShare(upload(), timeout=120))
    assert pulled[0] < 16, f"the enclave read {pulled[0]} MiB of an ungranted upload before refusing it"
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED and "no grant for decrypt_to_share" in (e.details() or "")
    assert any(r.principal == "mallory/x" and r.operation == "decrypt_to_share" and r.session == "s-upload"
               and r.decision == "deny" for r in read_log(_audit_log(tee)))

    gate = threading.Event()

    def stalled() -> Iterator[pb.TensorFrame]:  # opens a stream and sends nothing until the gate opens
        gate.wait(60)
        yield from ()
    held = [stub.DecryptToShare.future(stalled(), timeout=90) for _ in range(STREAMS_PER_PRINCIPAL)]
    try:
        end, code = time.monotonic() + 20, None
        while code != grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < end:
            code = _refused(lambda: stub.DecryptToShare(_share("s-more", meta), timeout=30)).code()
            time.sleep(0.2)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # one more stream than the bound
        other, other_channel = _stub(tee, "owner/h")  # another principal's streams are not held up
        assert _refused(lambda: other.DecryptToShare(_share("s-other", meta), timeout=30)).code() == \
            grpc.StatusCode.PERMISSION_DENIED
        other_channel.close()
    finally:
        gate.set()
    assert all(f.exception(timeout=60) is not None for f in held)  # refused as empty (or idle) streams
    channel.close()
    from zones.tee import service

    assert service.MAX_CONVERSION_STREAMS == STREAMS_PER_PRINCIPAL


def test_every_refusal_is_audited_and_leaves_no_receipt(tee: TeeDeployment) -> None:
    _ensure_key(tee)
    before = len(read_log(_audit_log(tee)))
    mallory, mallory_channel = _stub(tee, "mallory/x")
    probe, probe_channel = _stub(tee, "keyholder/probe")
    admin, admin_channel = _stub(tee, "keyholder/admin")
    to_mpc = {"key": "ckks-main", "to_zone": "h", "to_party": "owner", "share_index": "0", "share_count": "2",
              "precision": "16"}
    to_he = {"key": "ckks-main", "to_zone": "h", "share_index": "0", "share_count": "2", "precision": "16"}
    refusals = [
        (lambda: mallory.DecryptToShare(_share("s-denied", to_mpc), timeout=30), "mallory/x", "decrypt_to_share",
         "s-denied", grpc.StatusCode.PERMISSION_DENIED),
        (lambda: mallory.DecryptToShare(_share("s-nozone", {"key": "ckks-main"}), timeout=30), "mallory/x",
         "decrypt_to_share", "s-nozone", grpc.StatusCode.PERMISSION_DENIED),
        (lambda: probe.EncryptShare(_share("s-nozone-granted", {"key": "ckks-main"}), timeout=30), "keyholder/probe",
         "encrypt_share", "s-nozone-granted", grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: probe.EncryptShare(_share("s-badhash", to_he, corrupt=True), timeout=30), "keyholder/probe",
         "encrypt_share", "s-badhash", grpc.StatusCode.DATA_LOSS),
        (lambda: mallory.Attest(kpb.AttestRequest(nonce=b"n" * 16), timeout=30), "mallory/x", "attest", "",
         grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: admin.Rotate(kpb.KeyRequest(key="no-such-key"), timeout=30), "keyholder/admin", "rotate", "",
         grpc.StatusCode.NOT_FOUND),
    ]
    problems = []
    for call, principal, operation, session, code in refusals:
        e = _refused(call)
        if e.code() != code:
            problems.append(f"{principal} {operation} {session}: {e.code().name} ({e.details()}), not {code.name}")
    for c in (mallory_channel, probe_channel, admin_channel):
        c.close()
    new = read_log(_audit_log(tee))[before:]
    denied = {(r.principal, r.operation, r.session, r.reason.partition(":")[0]) for r in new if r.decision == "deny"}
    problems += [f"no audit record of the refusal of {principal} {operation} {session}"
                 for _, principal, operation, session, code in refusals
                 if (principal, operation, session, code.name) not in denied]
    problems += [f"refused call of session {s} left a receipt" for s in ("s-denied", "s-nozone", "s-nozone-granted",
                                                                           "s-badhash") if _receipts(tee, s)]
    assert not problems, "\n".join(problems)


def test_rotation_lists_are_bounded_before_any_key_is_made(tee: TeeDeployment) -> None:
    _ensure_key(tee)
    probe = tee.client("keyholder/probe")
    cases = {"at most 128 rotation indices per request; got 129": list(range(1, 130)),
             r"each index at most once; repeated: \[2\]": [1, 2, 2],
             r"0 < \|r\| < 8192": [1, 8192], r"got \[0\]": [0, 4]}
    for why, rotations in cases.items():
        with pytest.raises(KeyServiceError, match=f"INVALID_ARGUMENT: rotations: .*{why}"):
            probe.public_material("ckks-main", rotations)
    data, _ = probe.public_material("ckks-main", [1, -1, 16])  # a bounded request is served
    assert data
    probe.close()
    refused = [r for r in read_log(_audit_log(tee)) if r.principal == "keyholder/probe" and r.decision == "deny"
               and r.operation == "get_public_material"]
    assert len(refused) == len(cases) and all("INVALID_ARGUMENT: rotations" in r.reason for r in refused)
