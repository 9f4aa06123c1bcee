"""The KeyService gRPC servicer: every call bounded, authorised from the mTLS principal and audited."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
import pydantic

from hsi.masking import BOUNDED, MASK_SEED, PIECES, PRESCALE
from hsi.policy import CkksParams
from hsi.transport.attestation import NONCE_BYTES
from hsi.transport.material import bundle
from hsi.transport.shares import ring_of
from hsi.transport.status import StatusError
from hsi.transport.stream import frames, receive_body, receive_header
from hsi.transport.tensor import StoredTensor
from protos import keys_pb2 as kpb
from protos import keys_pb2_grpc
from protos import tensor_pb2 as pb
from zones.tee.access import (
    MAX_SESSION_CHARS,
    Invalid,
    PerPrincipal,
    check_header,
    check_int,
    check_key_name,
    check_rotations,
    check_text,
)
from zones.tee.calls import CallGate
from zones.tee.convert import check_seed, decrypt_to_share, encrypt_share, reencrypt
from zones.tee.delivery import Delivery
from zones.tee.enclave import Enclave
from zones.tee.keystore import KeyMeta
from zones.tee.pieces import Pieces

T = TypeVar("T")

MAX_CONVERSION_STREAMS = 8  # conversion streams (DecryptToShare, EncryptShare, Reencrypt) open at once per principal
MAX_AUDIT_RECORDS = 500  # records per Audit reply
DIGEST_BYTES = 32  # a receipt's SHA-256
RING_DIMS = (1 << 10, 1 << 16)  # CreateKey's ring_dim: a power of two in this range (the HE standard's table)


def _info(m: KeyMeta) -> Any:
    return kpb.KeyInfo(key=m.key, version=m.version, params_json=m.params_json,
                       public_key_sha256=m.public_key_sha256, created=m.created, destroyed=m.destroyed)


def _key_only(key: str) -> str:
    """Admission of a call that names only a key: its name within bounds; no recipient."""
    check_key_name(key)
    return ""


class KeyServiceServicer(CallGate, keys_pb2_grpc.KeyServiceServicer):
    """Attested key custody; no operation returns a plaintext or a secret key to a caller.

    Every call goes: grant held (from the principal and the key named) -> request fields within their bounds ->
    grant decided (recipient, limits) and recorded -> work. A refusal at any step is recorded and returned with
    a bounded message. Conversion streams are decided on their header, before the body is read."""

    def __init__(self, enclave: Enclave, chunk_bytes: int = 1 << 20, delivery: Delivery | None = None) -> None:
        self.enclave = enclave
        self.chunk = chunk_bytes
        self.delivery = delivery  # where conversion results go; None: the conversion RPCs are refused
        self._streams = PerPrincipal(MAX_CONVERSION_STREAMS)
        self._pieces = Pieces(delivery.policy.transport.deadlines.stage_s if delivery else 600.0)

    def Attest(self, request: kpb.AttestRequest, context: grpc.ServicerContext) -> kpb.AttestReply:  # noqa: N802
        """A quote over the caller's nonce."""
        def admit() -> str:
            if len(request.nonce) != NONCE_BYTES:
                raise Invalid("nonce", f"exactly {NONCE_BYTES} random bytes; got {len(request.nonce)}")
            return ""

        def body(_: str) -> Any:
            q = self.enclave.quote(request.nonce)
            return kpb.AttestReply(measurement=q.measurement, enclave_public_key=q.enclave_public_key, nonce=q.nonce,
                                   unix_time=q.unix_time, signature=q.signature, simulated=True,
                                   platform_public_key=self.enclave.hsm.platform_public_key())
        return self._run(context, self._call(context, "attest"), body, admit)

    def CreateKey(self, request: kpb.CreateKeyRequest,  # noqa: N802
                  context: grpc.ServicerContext) -> kpb.CreateKeyReply:
        """Create a CKKS key; its secret key is sealed before the reply."""
        params: list[CkksParams] = []

        def admit() -> str:
            check_key_name(request.key)
            ring = request.ring_dim or 16384
            if not RING_DIMS[0] <= ring <= RING_DIMS[1] or ring & (ring - 1):
                raise Invalid("ring_dim", f"a power of two in {RING_DIMS[0]}..{RING_DIMS[1]}; got {ring}")
            try:
                params.append(CkksParams(ring_dim=ring, scale_bits=request.scale_bits or 35,
                                         first_mod_bits=request.first_mod_bits or 60, depth=request.depth or 1,
                                         security=request.security or 128))
            except pydantic.ValidationError as e:
                err = e.errors()[0]
                raise Invalid(".".join(str(x) for x in err["loc"]), err["msg"]) from None
            self.enclave.keys.check_absent(request.key)
            return ""

        def body(_: str) -> Any:
            m = self.enclave.keys.create(request.key, params[0])
            return kpb.CreateKeyReply(key=m.key, public_key_sha256=bytes.fromhex(m.public_key_sha256))
        return self._run(context, self._call(context, "create", request.key), body, admit)

    def GetPublicMaterial(self, request: kpb.PublicMaterialRequest,  # noqa: N802
                          context: grpc.ServicerContext) -> Iterator[pb.TensorFrame]:
        """Context, public key, relinearisation and exactly the requested rotation keys, as one stream."""
        def admit() -> str:
            check_rotations(request.rotations, self.enclave.keys.slots(check_key_name(request.key)))
            return ""

        def body(_: str) -> tuple[bytes, dict[str, str]]:
            return bundle(self.enclave.keys.public_material(request.key, list(request.rotations)))
        data, meta = self._run(context, self._call(context, "get_public_material", request.key), body, admit)
        header = pb.TensorHeader(session="", name=request.key, encoding=pb.SEALED, source_party="",
                                 dtype="bytes", shape=[len(data)], meta=meta)
        yield from frames(header, data, self.chunk)

    def _conversion(self, context: grpc.ServicerContext, request_iterator: Iterator[Any], operation: str,
                    recipient: Callable[[Delivery, dict[str, str]], str],
                    body: Callable[[Delivery, Any, StoredTensor, str], T]) -> T:
        """Read a conversion stream's header; authorise `operation` on it (the key and the recipient its meta
        names) before reading the body; then run `body` (header, tensor, recipient) and keep the receipt of what
        was accepted."""
        call = self._call(context, operation)
        with self._streams.hold(call.principal) as free:
            if not free:
                self._refuse(context, call, grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"principal {call.principal!r} has {MAX_CONVERSION_STREAMS} conversion streams open; "
                             "that is the most the enclave takes at once")
            if self.delivery is None:
                self._refuse(context, call, grpc.StatusCode.FAILED_PRECONDITION,
                             f"{operation} needs a policy's zones to deliver to")
            d: Delivery = self.delivery
            it = iter(request_iterator)
            try:
                h = receive_header(it, d.max_tensor_bytes, self.chunk)
            except StatusError as e:
                self._refuse(context, call, e.code, str(e))
            meta = dict(h.meta)
            call.key, call.session = meta.get("key", ""), h.session

            def admit() -> str:
                check_header(h.session, h.name, h.dtype, h.source_party, h.shape, meta)
                return recipient(d, meta)

            def run(to: str) -> T:
                got = receive_body(h, it)
                stored = StoredTensor(h.encoding, h.dtype, tuple(h.shape), got.data, meta)
                result = body(d, h, stored, to)
                d.record(h.session, h.name, stored, call.principal)  # only what was accepted and converted
                return result
            return self._run(context, call, run, admit)

    def DecryptToShare(self, request_iterator: Iterator[pb.TensorFrame],  # noqa: N802
                       context: grpc.ServicerContext) -> kpb.ConversionReply:
        """Decrypt a masked ciphertext into one MPC party's share, hidden by the ring-uniform mask whose seed the
        caller sent, and push it to that party only."""
        def recipient(d: Delivery, meta: dict[str, str]) -> str:
            count = check_int(meta, "share_count", 1, 64)
            check_int(meta, "precision", 1, 62)
            check_int(meta, PRESCALE, 0, 62, "0")
            check_seed(meta)
            return d.mpc_recipient(meta["to_zone"], meta["to_party"], check_int(meta, "share_index", 0, count - 1),
                                   count)

        def body(d: Delivery, h: Any, t: StoredTensor, to: str) -> Any:
            start = time.perf_counter()
            m = t.meta
            share = decrypt_to_share(self.enclave.keys, m["key"], t, int(m["share_index"]), int(m["share_count"]),
                                     int(m["precision"]), int(m.get(PRESCALE, "0")), bytes.fromhex(m[MASK_SEED]))
            d.push(h.session, h.name, share, m["to_zone"], m["to_party"])
            return kpb.ConversionReply(to_principal=to, bytes=len(share.data), seconds=time.perf_counter() - start)
        return self._conversion(context, request_iterator, "decrypt_to_share", recipient, body)

    def EncryptShare(self, request_iterator: Iterator[pb.TensorFrame],  # noqa: N802
                     context: grpc.ServicerContext) -> kpb.ConversionReply:
        """Keep one MPC party's ring share of a tensor; once every party's came, encrypt their sum (y - s, bounded,
        formed only here) under the key and push the ciphertext to the HE zone the grant names."""
        def recipient(d: Delivery, meta: dict[str, str]) -> str:
            count = check_int(meta, "share_count", 1, 64)
            check_int(meta, "share_index", 0, count - 1)
            check_int(meta, "precision", 1, 62)
            return d.he_recipient(meta["to_zone"], meta["key"])

        def body(d: Delivery, h: Any, t: StoredTensor, to: str) -> Any:
            start = time.perf_counter()
            m = t.meta
            if len(t.shape) != 2 or t.encoding != pb.SHARE:
                raise Invalid("shape", f"a (tokens, features) share; got {len(t.shape)} dimensions")
            total = self._pieces.add(h.session, h.name, int(m["share_index"]), int(m["share_count"]),
                                     int(m["precision"]), ring_of(t))
            if total is None:  # another party's share is still to come
                return kpb.ConversionReply(to_principal=to, bytes=0, seconds=time.perf_counter() - start)
            whole = StoredTensor(pb.SHARE, "int64", t.shape, total.tobytes(), {"precision": m["precision"],
                                                                               BOUNDED: "1"})
            ct = encrypt_share(self.enclave.keys, m["key"], whole, d.packing(m["to_zone"], t.shape[0]))
            ct.meta[PIECES] = "2"  # the HE zone adds the mask s, which the HE host's party sends it
            d.push(h.session, h.name, ct, m["to_zone"], d.party_of(m["to_zone"]))
            return kpb.ConversionReply(to_principal=to, bytes=len(ct.data), seconds=time.perf_counter() - start)
        return self._conversion(context, request_iterator, "encrypt_share", recipient, body)

    def Reencrypt(self, request_iterator: Iterator[pb.TensorFrame],  # noqa: N802
                  context: grpc.ServicerContext) -> Iterator[pb.TensorFrame]:
        """The caller's ciphertext tensor under the recipient key the grant names, streamed back."""
        def body(d: Delivery, h: Any, t: StoredTensor, to: str) -> tuple[Any, StoredTensor]:
            return h, reencrypt(self.enclave.keys, t.meta["key"], t, to)
        h, out = self._conversion(context, request_iterator, "reencrypt", lambda d, meta: meta["recipient"], body)
        header = pb.TensorHeader(session=h.session, name=h.name, encoding=out.encoding,  # type: ignore[arg-type]
                                 source_party=self.enclave.zone.party, dtype=out.dtype, shape=list(out.shape),
                                 meta=out.meta | {"key": h.meta["recipient"]})
        yield from frames(header, out.data, self.chunk)

    def Rotate(self, request: kpb.KeyRequest, context: grpc.ServicerContext) -> kpb.KeyInfo:  # noqa: N802
        """Replace a key by a new version."""
        return self._run(context, self._call(context, "rotate", request.key),
                         lambda _: _info(self.enclave.keys.rotate(request.key)),
                         lambda: _key_only(request.key), known_key=True)

    def Destroy(self, request: kpb.KeyRequest, context: grpc.ServicerContext) -> kpb.KeyInfo:  # noqa: N802
        """Delete a key's sealed secret key."""
        return self._run(context, self._call(context, "destroy", request.key),
                         lambda _: _info(self.enclave.keys.destroy(request.key)),
                         lambda: _key_only(request.key), known_key=True)

    def ListKeys(self, request: kpb.ListKeysRequest, context: grpc.ServicerContext) -> kpb.ListKeysReply:  # noqa: N802
        """Metadata of every key."""
        return self._run(context, self._call(context, "list", "*"),
                         lambda _: kpb.ListKeysReply(keys=[_info(m) for m in self.enclave.keys.all()]))

    def Audit(self, request: kpb.AuditRequest, context: grpc.ServicerContext) -> kpb.AuditReply:  # noqa: N802
        """Audit records from an index, at most MAX_AUDIT_RECORDS (also when `limit` is 0)."""
        def admit() -> str:
            if request.limit > MAX_AUDIT_RECORDS:
                raise Invalid("limit", f"at most {MAX_AUDIT_RECORDS} records per call; got {request.limit}")
            return ""

        def body(_: str) -> Any:
            recs = self.enclave.audit.records()[request.from_index:][: request.limit or MAX_AUDIT_RECORDS]
            return kpb.AuditReply(records=[kpb.AuditRecord(
                index=r.index, time=r.time, principal=r.principal, operation=r.operation, key=r.key,
                session=r.session, decision=r.decision, reason=r.reason, prev_hash=bytes.fromhex(r.prev_hash),
                hash=bytes.fromhex(r.hash)) for r in recs])
        return self._run(context, self._call(context, "audit", "*"), body, admit)

    def SignReceipt(self, request: kpb.SignReceiptRequest,  # noqa: N802
                    context: grpc.ServicerContext) -> kpb.SignReceiptReply:
        """The platform key's signature over a privacy receipt's digest, this enclave's measurement and the time."""
        def admit() -> str:
            if len(request.digest) != DIGEST_BYTES:
                raise Invalid("digest", f"a SHA-256 digest of {DIGEST_BYTES} bytes; got {len(request.digest)}")
            check_text(request.session, "session", MAX_SESSION_CHARS, spaces=False)
            return ""

        def body(_: str) -> Any:
            measurement, unix_time, signature = self.enclave.sign_receipt(request.digest)
            return kpb.SignReceiptReply(measurement=measurement, unix_time=unix_time, signature=signature,
                                        simulated=True)
        return self._run(context, self._call(context, "sign_receipt", "*", request.session), body, admit)
