"""The KeyService gRPC servicer: every call authorised from the mTLS principal and audited."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from hsi.masking import PIECES, PRESCALE
from hsi.policy import CkksParams
from hsi.transport.attestation import NONCE_BYTES
from hsi.transport.auth import peer_principal
from hsi.transport.material import bundle
from hsi.transport.status import StatusError
from hsi.transport.stream import StreamError, frames, receive
from hsi.transport.tensor import StoredTensor
from protos import keys_pb2 as kpb
from protos import keys_pb2_grpc
from protos import tensor_pb2 as pb
from zones.common.ckks.params import HeParamsError
from zones.tee.access import Denied
from zones.tee.convert import ConversionError, decrypt_to_share, encrypt_share, reencrypt
from zones.tee.delivery import Delivery
from zones.tee.enclave import Enclave
from zones.tee.hsm import SealError
from zones.tee.keystore import KeyMeta, KeyStoreError

T = TypeVar("T")


def _info(m: KeyMeta) -> Any:
    return kpb.KeyInfo(key=m.key, version=m.version, params_json=m.params_json,
                       public_key_sha256=m.public_key_sha256, created=m.created, destroyed=m.destroyed)


class KeyServiceServicer(keys_pb2_grpc.KeyServiceServicer):
    """Attested key custody; no operation returns a plaintext or a secret key to a caller."""

    def __init__(self, enclave: Enclave, chunk_bytes: int = 1 << 20, delivery: Delivery | None = None) -> None:
        self.enclave = enclave
        self.chunk = chunk_bytes
        self.delivery = delivery  # where conversion results go; None: the conversion RPCs are refused

    def _guard(self, context: grpc.ServicerContext, operation: str, key: str, session: str,
               body: Callable[[], T], recipient: str = "") -> T:
        principal = peer_principal(context) or ""
        try:
            self.enclave.access.authorize(principal, operation, key, session, recipient)
        except Denied as d:
            context.abort(d.code, d.reason)
        try:
            return body()
        except KeyStoreError as e:
            code = grpc.StatusCode.ALREADY_EXISTS if "already exists" in str(e) else grpc.StatusCode.NOT_FOUND
            context.abort(code, str(e))
        except HeParamsError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except SealError as e:
            context.abort(grpc.StatusCode.DATA_LOSS,
                          f"sealed key {key!r} does not open: {e}. Keys are sealed to one enclave build: after the "
                          f"enclave code changed, its keys under {self.enclave.zone.key_dir} do not open (there is "
                          "no migration); a dev deployment re-creates them (hsi down, remove that directory, hsi up)")
        raise AssertionError("unreachable")

    def Attest(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """A quote over the caller's nonce."""
        if len(request.nonce) != NONCE_BYTES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"nonce must be {NONCE_BYTES} random bytes")

        def body() -> Any:
            q = self.enclave.quote(request.nonce)
            return kpb.AttestReply(measurement=q.measurement, enclave_public_key=q.enclave_public_key, nonce=q.nonce,
                                   unix_time=q.unix_time, signature=q.signature, simulated=True,
                                   platform_public_key=self.enclave.hsm.platform_public_key())
        return self._guard(context, "attest", "", "", body)

    def CreateKey(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Create a CKKS key; its secret key is sealed before the reply."""
        def body() -> Any:
            params = CkksParams(ring_dim=request.ring_dim or 16384, scale_bits=request.scale_bits or 35,
                                first_mod_bits=request.first_mod_bits or 60, depth=request.depth or 1,
                                security=request.security or 128)
            m = self.enclave.keys.create(request.key, params)
            return kpb.CreateKeyReply(key=m.key, public_key_sha256=bytes.fromhex(m.public_key_sha256))
        return self._guard(context, "create", request.key, "", body)

    def GetPublicMaterial(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:  # noqa: N802
        """Context, public key, relinearisation and exactly the requested rotation keys, as one stream."""
        def body() -> tuple[bytes, dict[str, str]]:
            return bundle(self.enclave.keys.public_material(request.key, list(request.rotations)))
        data, meta = self._guard(context, "get_public_material", request.key, "", body)
        header = pb.TensorHeader(session="", name=request.key, encoding=pb.SEALED, source_party="",
                                 dtype="bytes", shape=[len(data)], meta=meta)
        yield from frames(header, data, self.chunk)

    def _conversion(self, context: grpc.ServicerContext, request_iterator: Iterator[Any], operation: str,
                    recipient: Callable[[Delivery, dict[str, str]], str],
                    body: Callable[[Delivery, Any, StoredTensor, str], T]) -> T:
        """Receive a tensor, record it, authorise `operation` towards the recipient its header names, run `body`
        (header, tensor, recipient)."""
        if self.delivery is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{operation} needs a policy's zones to deliver to")
        d: Delivery = self.delivery  # type: ignore[assignment]
        try:
            got = receive(request_iterator, d.max_tensor_bytes, self.chunk)
        except StreamError as e:
            context.abort(e.code, str(e))
        h = got.header
        stored = StoredTensor(h.encoding, h.dtype, tuple(h.shape), got.data, dict(h.meta))
        principal = peer_principal(context) or ""
        d.record(h.session, h.name, stored, principal)
        try:
            to = recipient(d, stored.meta)
        except (KeyError, ValueError) as e:
            what = f"missing header field {e}" if isinstance(e, KeyError) else str(e)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{operation} of {h.name!r}: {what}")

        def run() -> T:
            try:
                return body(d, h, stored, to)
            except (ConversionError, ValueError) as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{operation} of {h.name!r}: {e}")
            except StatusError as e:
                context.abort(e.code, f"{operation} of {h.name!r}: {e}")
            raise AssertionError("unreachable")
        return self._guard(context, operation, stored.meta.get("key", ""), h.session, run, recipient=to)

    def DecryptToShare(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Decrypt a masked ciphertext into one MPC party's bounded share and push it to that party only."""
        def recipient(d: Delivery, meta: dict[str, str]) -> str:
            return d.mpc_recipient(meta["to_zone"], meta["to_party"], int(meta["share_index"]))

        def body(d: Delivery, h: Any, t: StoredTensor, to: str) -> Any:
            start = time.perf_counter()
            m = t.meta
            share = decrypt_to_share(self.enclave.keys, m["key"], t, int(m["share_index"]), int(m["share_count"]),
                                     int(m["precision"]), int(m.get(PRESCALE, "0")))
            d.push(h.session, h.name, share, m["to_zone"], m["to_party"])
            return kpb.ConversionReply(to_principal=to, bytes=len(share.data), seconds=time.perf_counter() - start)
        return self._conversion(context, request_iterator, "decrypt_to_share", recipient, body)

    def EncryptShare(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Encrypt a bounded MPC share under the key and push the ciphertext to the HE zone the grant names."""
        def recipient(d: Delivery, meta: dict[str, str]) -> str:
            return d.he_recipient(meta["to_zone"], meta["key"])

        def body(d: Delivery, h: Any, t: StoredTensor, to: str) -> Any:
            start = time.perf_counter()
            ct = encrypt_share(self.enclave.keys, t.meta["key"], t, d.packing(t.meta["to_zone"], t.shape[0]))
            ct.meta[PIECES] = "2"  # the HE zone adds the co-located party's mask to it
            d.push(h.session, h.name, ct, t.meta["to_zone"], d.party_of(t.meta["to_zone"]))
            return kpb.ConversionReply(to_principal=to, bytes=len(ct.data), seconds=time.perf_counter() - start)
        return self._conversion(context, request_iterator, "encrypt_share", recipient, body)

    def Reencrypt(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:  # noqa: N802
        """The caller's ciphertext tensor under the recipient key the grant names, streamed back."""
        def body(d: Delivery, h: Any, t: StoredTensor, to: str) -> tuple[Any, StoredTensor]:
            return h, reencrypt(self.enclave.keys, t.meta["key"], t, to)
        h, out = self._conversion(context, request_iterator, "reencrypt", lambda d, meta: meta["recipient"], body)
        header = pb.TensorHeader(session=h.session, name=h.name, encoding=out.encoding,  # type: ignore[arg-type]
                                 source_party=self.enclave.zone.party, dtype=out.dtype, shape=list(out.shape),
                                 meta=out.meta | {"key": h.meta["recipient"]})
        yield from frames(header, out.data, self.chunk)

    def Rotate(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Replace a key by a new version."""
        return self._guard(context, "rotate", request.key, "", lambda: _info(self.enclave.keys.rotate(request.key)))

    def Destroy(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Delete a key's sealed secret key."""
        return self._guard(context, "destroy", request.key, "", lambda: _info(self.enclave.keys.destroy(request.key)))

    def ListKeys(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Metadata of every key."""
        return self._guard(context, "list", "*", "",
                           lambda: kpb.ListKeysReply(keys=[_info(m) for m in self.enclave.keys.all()]))

    def Audit(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Audit records from an index."""
        def body() -> Any:
            recs = self.enclave.audit.records()[request.from_index:]
            if request.limit:
                recs = recs[: request.limit]
            return kpb.AuditReply(records=[kpb.AuditRecord(
                index=r.index, time=r.time, principal=r.principal, operation=r.operation, key=r.key,
                session=r.session, decision=r.decision, reason=r.reason, prev_hash=bytes.fromhex(r.prev_hash),
                hash=bytes.fromhex(r.hash)) for r in recs])
        return self._guard(context, "audit", "*", "", body)
