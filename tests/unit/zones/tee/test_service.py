"""The KeyService conversions driven in-process as the HE and MPC zones call them: granted headers within their
bounds are served; an ungranted stream is refused before its body is read; receipts only of accepted calls."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import grpc
import numpy as np
import pytest

from hsi.audit import read_log, verify_records
from hsi.ckks.packing import input_packing
from hsi.masking import BOUNDED, MASK_SEED, PIECES, PRESCALE, bounded_share, bounded_values, hide, ring_mask
from hsi.policy import CkksParams, HeZone, load_policy
from hsi.transport.attestation import measurement
from hsi.transport.stream import frames
from hsi.transport.tensor import StoredTensor
from protos import tensor_pb2 as pb
from tests.conftest import POLICIES
from zones.tee.access import AccessControl, PerPrincipal
from zones.tee.audit import AuditLog
from zones.tee.convert import decrypt_values, encrypt_values
from zones.tee.delivery import Delivery
from zones.tee.hsm import Hsm
from zones.tee.keystore import KeyStore
from zones.tee.service import KeyServiceServicer

POLICY = load_policy(POLICIES / "private-minilm.yaml")
SEED = bytes(range(32))  # an he->mpc mask seed


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


class Context:
    """The parts of a grpc.ServicerContext the key service uses, for a caller with `principal`'s certificate."""

    def __init__(self, principal: str) -> None:
        self.principal = principal

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_common_name": [self.principal.encode()]}

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


class Service:
    def __init__(self, hsm: Hsm, tmp: Path) -> None:
        self.keys = KeyStore(hsm, tmp / "keys", measurement())
        self.keys.create("ckks-main", CkksParams(ring_dim=16384))
        self.log = tmp / "audit.log"
        audit = AuditLog(self.log)
        enclave = SimpleNamespace(keys=self.keys, audit=audit, access=AccessControl(list(POLICY.keys), audit),
                                  zone=POLICY.zones["enclave"])
        self.pushed: list[tuple[Any, ...]] = []
        self.receipts: list[tuple[Any, ...]] = []
        delivery = Delivery(POLICY, lambda *a: self.pushed.append(a), lambda *a: self.receipts.append(a),
                            POLICY.transport.max_tensor_bytes)
        self.servicer = KeyServiceServicer(cast(Any, enclave), 1 << 20, delivery)

    def call(self, method: str, principal: str, stream: Iterator[pb.TensorFrame]) -> Any:
        return getattr(self.servicer, method)(stream, Context(principal))


@pytest.fixture()
def service(hsm: Hsm, tmp_path: Path) -> Iterator[Service]:
    s = Service(hsm, tmp_path)
    yield s
    s.keys.close()


def _header(session: str, name: str, t: StoredTensor, meta: dict[str, str]) -> pb.TensorHeader:
    # as zones.common.outbox.Outbox.header makes it
    return pb.TensorHeader(session=session, name=name, encoding=cast(Any, t.encoding), source_party="owner",
                           dtype=t.dtype, shape=list(t.shape), meta=meta)


def test_conversions_as_the_zones_send_them_are_served_and_leave_receipts(service: Service) -> None:
    he = POLICY.zones["he"]
    assert isinstance(he, HeZone)
    values = np.random.default_rng(0).normal(size=(5, 384))
    ct = encrypt_values(service.keys, "ckks-main", values, input_packing(he, 5))
    sid, name = uuid.uuid4().hex, "encoder.layer.0.attention.self.query"
    meta = ct.meta | {"key": "ckks-main", "to_zone": "mpc", "to_party": "keyholder", "share_index": "1",
                      "share_count": "2", "precision": "16", PRESCALE: "0", MASK_SEED: SEED.hex()}
    reply = service.call("DecryptToShare", "owner/he", frames(_header(sid, name, ct, meta), ct.data, 1 << 20))
    assert reply.to_principal == "keyholder/mpc"
    (psid, pname, share, zone, party), = service.pushed
    assert (psid, pname, zone, party) == (sid, name, "mpc", "keyholder")
    assert BOUNDED not in share.meta  # ring-uniform: the seed's mask is subtracted
    assert np.abs(bounded_values(hide(share, ring_mask(SEED, share.shape), +1)) - values).max() < 1e-3

    # mpc -> he: each party's ring share of y - s; the enclave encrypts once both came
    u = ring_mask(SEED, values.shape)
    whole = bounded_share(values, 1, 2, 16)
    parts = [hide(bounded_share(np.zeros_like(values), 0, 2, 16), u, +1), hide(whole, u, -1)]
    for principal, part in [("keyholder/mpc", parts[1]), ("owner/mpc", parts[0])]:
        meta = part.meta | {"key": "ckks-main", "to_zone": "he"}
        reply = service.call("EncryptShare", principal, frames(_header(sid, "x", part, meta), part.data, 1 << 20))
        assert reply.to_principal == "owner/he"
        assert (reply.bytes > 0) == (principal == "owner/mpc")
        assert len(service.pushed) == (2 if principal == "owner/mpc" else 1)
    ct = service.pushed[1][2]
    assert ct.meta[PIECES] == "2" and np.abs(decrypt_values(service.keys, "ckks-main", ct) - values).max() < 1e-3
    assert [(s, n, p) for s, n, _, p in service.receipts] == [
        (sid, name, "owner/he"), (sid, "x", "keyholder/mpc"), (sid, "x", "owner/mpc")]
    assert [r.decision for r in read_log(service.log)] == ["allow"] * 3


def test_ungranted_stream_is_refused_on_its_header_and_leaves_no_receipt(service: Service) -> None:
    ct = StoredTensor(pb.CKKS, "bytes", (5, 384), bytes(1 << 16), {"key": "ckks-main"})
    meta = {"key": "ckks-main", "to_zone": "mpc", "to_party": "keyholder", "share_index": "1", "share_count": "2",
            "precision": "16", MASK_SEED: SEED.hex()}
    unseeded = {k: v for k, v in meta.items() if k != MASK_SEED}

    def header_only(m: dict[str, str]) -> Iterator[pb.TensorFrame]:
        yield next(frames(_header("s", "t", ct, m), ct.data, 1 << 20))
        raise AssertionError("the key service read past the header of a stream it refuses")

    for principal, m, code in [("mallory/x", meta, grpc.StatusCode.PERMISSION_DENIED),
                               ("keyholder/mpc", meta, grpc.StatusCode.PERMISSION_DENIED),  # no such grant
                               ("owner/he", meta | {"to_party": "owner", "share_index": "0"},
                                grpc.StatusCode.PERMISSION_DENIED),  # a recipient its grant does not name
                               ("owner/he", meta | {"share_count": "3"}, grpc.StatusCode.INVALID_ARGUMENT),
                               ("owner/he", meta | {"precision": "x" * 5000}, grpc.StatusCode.INVALID_ARGUMENT),
                               ("owner/he", meta | {"to_zone": "z" * 200}, grpc.StatusCode.INVALID_ARGUMENT),
                               ("owner/he", meta | {"key": "k" * 200}, grpc.StatusCode.PERMISSION_DENIED),
                               ("owner/he", unseeded, grpc.StatusCode.INVALID_ARGUMENT),  # the share would be bounded
                               ("owner/he", meta | {MASK_SEED: "ab" * 16}, grpc.StatusCode.INVALID_ARGUMENT)]:
        with pytest.raises(Aborted) as e:
            service.call("DecryptToShare", principal, header_only(m))
        assert e.value.code == code, e.value.details
        assert len(e.value.details) <= 1024
    assert service.receipts == [] and service.pushed == []
    records = read_log(service.log)
    assert [r.decision for r in records] == ["deny"] * 9 and verify_records(records) == []
    assert "mask_seed" in records[-2].reason and "32 bytes in hex" in records[-1].reason


def test_streams_per_principal_are_bounded() -> None:
    slots = PerPrincipal(2)
    with slots.hold("a") as one, slots.hold("a") as two, slots.hold("a") as three, slots.hold("b") as other:
        assert (one, two, three, other) == (True, True, False, True)
    with slots.hold("a") as again:
        assert again
