"""The Zone gRPC service every zone process runs: tensor store, receipts, stage dispatch to its kind's engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import grpc
import numpy as np

from orchestrator.conversions import conversion_enclave
from orchestrator.ir import Graph, ZoneKind
from orchestrator.models.registry import load_graph
from orchestrator.planner import CLIENT, Plan, make_plan
from orchestrator.policy import HeZone, MpcZone, Policy
from protos import keys_pb2_grpc, zone_pb2, zone_pb2_grpc
from protos import tensor_pb2 as pb
from zones.common.auth import peer_principal
from zones.common.certs import Credentials
from zones.common.codec import CodecError, decode_tensor
from zones.common.engine import KeyedEngine, RunContext, StoredTensor, ZoneEngine, ZoneError, engine_for
from zones.common.masking import BOUNDED, PIECES, PRESCALE, bounded_share
from zones.common.server import secure_channel
from zones.common.shares import ShareAssembler, split
from zones.common.status import StatusError
from zones.common.stream import frames, receive

ZONE_SERVICE = "hsi.v1.Zone"
_SENDERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hsi-send")  # pushes that overlap other calls


@dataclass
class _Session:
    tensors: dict[str, StoredTensor] = field(default_factory=dict)
    receipts: list[zone_pb2.Receipt] = field(default_factory=list)
    shares: ShareAssembler = field(default_factory=ShareAssembler)
    pieces: dict[str, list[Any]] = field(default_factory=dict)  # mpc->he: ciphertext and mask (HeEngine.piece)


def zone_allow_table(policy: Policy, plan: Plan, zone: str) -> dict[str, frozenset[str]]:
    """Per-method principals allowed to call a zone: the runtime drives it; only the plan's senders push to it."""
    runtime = frozenset({policy.runtime_principal})
    senders: set[str] = set()
    for c in plan.conversions:
        if c.to_zone != zone:
            continue
        if c.from_zone == CLIENT:
            senders.add(policy.runtime_principal)
        else:
            senders.update(policy.principal(p, c.from_zone) for p in policy.zone_parties(c.from_zone))
        if c.kind in ("he->mpc", "mpc->he"):  # the enclave delivers the converted piece
            he, mpc = (c.from_zone, c.to_zone) if c.kind == "he->mpc" else (c.to_zone, c.from_zone)
            enclave, enclave_party = conversion_enclave(policy, he, mpc)
            senders.add(policy.principal(enclave_party, enclave))
    m = f"/{ZONE_SERVICE}/"
    tee = [n for n, z in policy.zones.items() if z.kind == "tee"]
    # The key holder installs public material: the TEE key service, or (while a policy has no tee zone)
    # the client, which then holds the key itself.
    key_holders = frozenset(policy.principal(z.party, n) for n, z in policy.zones.items()  # type: ignore[union-attr]
                            if n in tee) or runtime
    return {
        m + "KeyRequirements": runtime | key_holders,
        m + "InstallPublicMaterial": key_holders,
        m + "LoadStage": runtime,
        m + "RunStage": runtime,
        m + "Transfer": runtime,
        m + "PullTensor": runtime,
        m + "Records": runtime,
        m + "Release": runtime,
        m + "PushTensor": frozenset(senders),
    }


class ZoneServicer(zone_pb2_grpc.ZoneServicer):
    """One zone process: holds tensors per session and runs the stages the plan assigns to it."""

    def __init__(self, policy: Policy, zone: str, party: str, creds: Credentials,
                 engine: ZoneEngine | None = None) -> None:
        self.policy = policy
        self.zone = zone
        self.party = party
        self.creds = creds
        self.kind = ZoneKind(policy.zones[zone].kind)
        self.graph: Graph = load_graph(policy.model.name)
        self.plan: Plan = make_plan(self.graph, policy)
        self.engine: ZoneEngine = engine or engine_for(self.kind, policy, zone, party)
        self._takes_tensors = getattr(self.engine, "takes_tensors", True)  # an MPC dealer holds none
        self._sessions: dict[str, _Session] = {}
        self._loaded: set[int] = set()
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._encryptor: Any = None  # plain -> he: the attested public key, fetched on first use
        self._attested: set[str] = set()  # enclaves whose quote this zone verified before sending plaintext
        transport = policy.transport
        self._max_tensor = transport.max_tensor_bytes
        self._chunk = transport.chunk_bytes

    # -- helpers -------------------------------------------------------------------------------------------------

    def _session(self, sid: str) -> _Session:
        if not sid:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, "session id is empty")
        with self._lock:
            return self._sessions.setdefault(sid, _Session())

    def _stage(self, digest: str, index: int) -> Any:
        if digest != self.plan.digest:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"plan digest mismatch: zone {self.zone!r} runs plan {self.plan.digest[:12]} of policy "
                            f"{self.policy.name!r}, the caller sent {digest[:12]}; both sides must use the same policy")
        if index >= len(self.plan.stages):
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"stage {index} does not exist")
        stage = self.plan.stages[index]
        if stage.zone != self.zone:
            raise ZoneError(grpc.StatusCode.PERMISSION_DENIED,
                            f"stage {index} belongs to zone {stage.zone!r}, not {self.zone!r}")
        return stage

    def _channel(self, target: str) -> grpc.Channel:
        with self._lock:
            if target not in self._channels:
                self._channels[target] = secure_channel(self.creds, target, self.policy.transport.max_message_bytes)
            return self._channels[target]

    def close(self) -> None:
        """Close outgoing channels and let the engine free what it holds."""
        for ch in self._channels.values():
            ch.close()
        close = getattr(self.engine, "close", None)
        if close:
            close()

    # -- RPCs ----------------------------------------------------------------------------------------------------

    def LoadStage(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Load a stage of the zone's plan (idempotent)."""
        with _Errors(context):
            stage = self._stage(request.plan_digest, request.stage)
            start = time.perf_counter()
            self.engine.load_stage(stage, self.graph)
            self._loaded.add(stage.index)
            return zone_pb2.LoadStageReply(ops=stage.ops, seconds=time.perf_counter() - start)

    def PushTensor(self, request_iterator: Iterator[pb.TensorFrame], context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Receive one tensor; record its encoding and source."""
        with _Errors(context):
            got = receive(request_iterator, self._max_tensor, self._chunk)
            h = got.header
            principal = peer_principal(context) or ""
            cert_party = principal.partition("/")[0]
            if h.source_party != cert_party:
                raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                                f"tensor {h.name!r} claims source party {h.source_party!r}, but the sender's "
                                f"certificate is {principal!r}")
            stored = StoredTensor(h.encoding, h.dtype, tuple(h.shape), got.data, dict(h.meta))
            session = self._session(h.session)
            self.record_incoming(h.session, h.name, stored, principal, h.source_party)
            if self.kind == ZoneKind.HE and PIECES in stored.meta:
                self._add_piece(session, h.name, stored)
                return zone_pb2.PushTensorReply(name=h.name, bytes=len(got.data))
            whole: StoredTensor | None = stored
            if stored.encoding == pb.SHARE and self.kind != ZoneKind.MPC:
                # mpc -> here: this zone may see the tensor; it keeps it once every share came
                with self._lock:
                    whole = session.shares.add(h.name, stored)
            if whole is not None:
                if self.kind == ZoneKind.TEE:  # into the enclave: decrypted or reconstructed, then sealed
                    whole = self.engine.admit(h.session, h.name, whole, principal)  # type: ignore[attr-defined]
                with self._lock:
                    session.tensors[h.name] = whole
            return zone_pb2.PushTensorReply(name=h.name, bytes=len(got.data))

    def record_incoming(self, sid: str, name: str, t: StoredTensor, principal: str, source_party: str = "") -> None:
        """Keep the receipt of a tensor this zone (or its enclave's key service) received."""
        receipt = zone_pb2.Receipt(session=sid, name=name, encoding=cast(Any, t.encoding),
                                   source_party=source_party or principal.partition("/")[0],
                                   source_principal=principal, zone=self.zone, party=self.party, bytes=len(t.data))
        session = self._session(sid)
        with self._lock:
            session.receipts.append(receipt)

    def _add_piece(self, session: _Session, name: str, t: StoredTensor) -> None:
        """mpc -> he: hold the enclave's ciphertext or the co-located party's mask until both came; add them."""
        try:
            count = int(t.meta[PIECES])
        except ValueError:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor {name!r} has a bad pieces count") from None
        piece = self.engine.piece(name, t)  # type: ignore[attr-defined]
        with self._lock:
            parts = session.pieces.setdefault(name, [])
            parts.append(piece)
            if len(parts) < count:
                return
            del session.pieces[name]
        whole = self.engine.unmask(name, parts)  # type: ignore[attr-defined]
        with self._lock:
            session.tensors[name] = whole

    def _header(self, sid: str, name: str, t: StoredTensor) -> pb.TensorHeader:
        return pb.TensorHeader(session=sid, name=name, encoding=cast(Any, t.encoding), source_party=self.party,
                               dtype=t.dtype,
                               shape=list(t.shape), meta=t.meta)

    def _held(self, sid: str, name: str) -> StoredTensor:
        t = self._session(sid).tensors.get(name)
        if t is None:
            raise ZoneError(grpc.StatusCode.NOT_FOUND,
                            f"zone {self.zone!r} holds no tensor {name!r} for session {sid!r}")
        return t

    def PullTensor(self, request: Any, context: grpc.ServicerContext) -> Iterator[pb.TensorFrame]:  # noqa: N802
        """Stream a held tensor to the caller."""
        with _Errors(context):
            t = self._held(request.session, request.name)
            if self.kind == ZoneKind.TEE:
                if not self._plans_move(request.name, CLIENT):
                    raise ZoneError(grpc.StatusCode.PERMISSION_DENIED,
                                    f"the plan does not release {request.name!r} from enclave {self.zone!r} to the "
                                    "client")
                t = self.engine.export(request.session, request.name, t, CLIENT)  # type: ignore[attr-defined]
        yield from frames(self._header(request.session, request.name, t), t.data, self._chunk)

    def RunStage(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Run a loaded stage on the session's tensors; keep its outputs."""
        with _Errors(context):
            stage = self._stage(request.plan_digest, request.stage)
            if stage.index not in self._loaded:
                raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION, f"stage {stage.index} is not loaded")
            session = self._session(request.session)
            missing = [t for t in stage.inputs if t not in session.tensors and self._takes_tensors]
            if missing:
                raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                                f"stage {stage.index} needs tensors {missing} that zone {self.zone!r} does not hold")
            inputs = {t: session.tensors[t] for t in stage.inputs if self._takes_tensors}
            longest = max((t.shape[0] for t in inputs.values() if t.shape), default=0)
            if request.position_offset + longest > self.policy.model.max_tokens:
                raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{request.position_offset + longest} tokens exceed the policy's max_tokens "
                                f"{self.policy.model.max_tokens}")
            start = time.perf_counter()
            outputs = self.engine.run_stage(stage, inputs, RunContext(request.session, request.position_offset))
            seconds = time.perf_counter() - start
            with self._lock:
                session.tensors.update(outputs)
            traffic = getattr(self.engine, "stage_traffic", None)
            rounds, sent = traffic(request.session) if traffic else (0, 0)
            transfers = []
            for move in request.then:
                if move.name not in outputs:
                    raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"stage {stage.index} does not compute {move.name!r}, so it cannot send it on")
                move.session = request.session
                transfers.append(self._transfer_releasing(move))
            held = self._drop(request.session, request.release)
            return zone_pb2.RunStageReply(outputs=list(outputs), seconds=seconds, mpc_rounds=rounds, mpc_bytes=sent,
                                          held_bytes=held, transfers=transfers)

    def _drop(self, sid: str, names: Iterable[str]) -> int:
        """Free the session's tensors `names` (their last use in this zone is over); the bytes still held."""
        session = self._session(sid)
        with self._lock:
            for name in names:
                session.tensors.pop(name, None)
            return sum(len(t.data) for t in session.tensors.values())

    def Transfer(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Send a held tensor to another zone of the policy, zone to zone (and free it if asked)."""
        with _Errors(context):
            return self._transfer_releasing(request)

    def _transfer_releasing(self, request: zone_pb2.TransferRequest) -> zone_pb2.TransferReply:
        """Send a held tensor on as `request` says, freeing it afterwards if asked."""
        reply = self._transfer(request)
        if request.release:
            self._drop(request.session, [request.name])
        return reply

    def _transfer(self, request: zone_pb2.TransferRequest) -> zone_pb2.TransferReply:
        t = self._held(request.session, request.name)
        if request.to_zone not in self.policy.zones:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"unknown zone {request.to_zone!r}")
        if not self._plans_move(request.name, request.to_zone):
            raise ZoneError(grpc.StatusCode.PERMISSION_DENIED,
                            f"the plan does not move {request.name!r} from {self.zone!r} to {request.to_zone!r}")
        endpoints = self.policy.zone_endpoints(request.to_zone)
        start = time.perf_counter()
        target_kind = self.policy.zones[request.to_zone].kind
        if self.kind == ZoneKind.TEE:  # out of the enclave: encrypted for an HE zone, else plaintext
            t = self.engine.export(request.session, request.name, t, request.to_zone)  # type: ignore[attr-defined]
        if target_kind == "tee" and t.encoding == pb.PLAIN:
            self._attest(request.to_zone)
        if target_kind == "he" and self.kind == ZoneKind.PLAIN:
            sent = self._encrypt_out(request.session, request.name, t, request.to_zone)
            return zone_pb2.TransferReply(bytes=sent, seconds=time.perf_counter() - start)
        if target_kind == "mpc" and self.kind == ZoneKind.HE:
            links = self._he_to_mpc(request.session, request.name, t, request.to_zone)
            return zone_pb2.TransferReply(bytes=sum(links.values()), seconds=time.perf_counter() - start,
                                          bytes_by_link=links)
        if target_kind == "he" and self.kind == ZoneKind.MPC:
            links = self._mpc_to_he(request.session, request.name, t, request.to_zone)
            return zone_pb2.TransferReply(bytes=sum(links.values()), seconds=time.perf_counter() - start,
                                          bytes_by_link=links)
        if target_kind == "mpc" and t.encoding == pb.PLAIN:
            if request.to_party:
                raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                                "a plaintext tensor goes to an MPC zone as one share per party; leave to_party "
                                "empty")
            sent = self._share_out(request.session, request.name, t, request.to_zone)
            return zone_pb2.TransferReply(bytes=sent, seconds=time.perf_counter() - start)
        party = request.to_party or next(iter(endpoints))
        if party not in endpoints:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"zone {request.to_zone!r} has no process at party {party!r}")
        self._send(request.session, request.name, t, request.to_zone, party)
        return zone_pb2.TransferReply(bytes=len(t.data), seconds=time.perf_counter() - start)

    def _attest(self, tee: str) -> None:
        """Verify enclave `tee`'s quote against the policy's pins once, before this zone sends it plaintext."""
        from orchestrator.keyclient import KeyServiceError, attest_enclave
        from zones.common.attestation import AttestationError

        if tee in self._attested:
            return
        try:
            attest_enclave(self.policy, tee, self.policy.principal(self.party, self.zone))
        except (KeyServiceError, AttestationError) as e:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"zone {self.zone!r} sends no plaintext to enclave {tee!r}: its attestation failed: "
                            f"{e}") from None
        with self._lock:
            self._attested.add(tee)

    def _send(self, sid: str, name: str, t: StoredTensor, to_zone: str, party: str) -> None:
        target = self.policy.zone_endpoints(to_zone)[party]
        stub = zone_pb2_grpc.ZoneStub(self._channel(target))
        try:
            stub.PushTensor(frames(self._header(sid, name, t), t.data, self._chunk),
                            timeout=self.policy.transport.deadlines.rpc_s)
        except grpc.RpcError as e:
            raise ZoneError(_peer_status(e), f"zone {to_zone!r} at {party} ({target}) refused {name!r}: "
                            f"{e.details()}") from None

    def deliver(self, sid: str, name: str, t: StoredTensor, to_zone: str, party: str) -> None:
        """Push a tensor to a zone process of the policy as this zone (the enclave's key service uses it)."""
        self._send(sid, name, t, to_zone, party)

    def _key_service(self, tee: str) -> keys_pb2_grpc.KeyServiceStub:
        z = self.policy.zones[tee]
        return keys_pb2_grpc.KeyServiceStub(self._channel(self.policy.zone_endpoints(tee)[z.party]))  # type: ignore[union-attr]

    def _call_enclave(self, tee: str, method: str, sid: str, name: str, t: StoredTensor,
                      meta: dict[str, str]) -> Any:
        header = pb.TensorHeader(session=sid, name=name, encoding=cast(Any, t.encoding), source_party=self.party,
                                 dtype=t.dtype, shape=list(t.shape), meta=meta)
        try:
            return getattr(self._key_service(tee), method)(frames(header, t.data, self._chunk),
                                                            timeout=self.policy.transport.deadlines.rpc_s)
        except grpc.RpcError as e:
            raise ZoneError(_peer_status(e),
                            f"the enclave {tee!r} refused {method} of {name!r}: {e.details()}") from None

    def _encrypt_out(self, sid: str, name: str, t: StoredTensor, to_zone: str) -> int:
        """plain -> he: encrypt under the attested public key of the HE zone's key; send the ciphertexts."""
        from zones.common.ckks.encryptor import PublicEncryptor

        if self._encryptor is None:
            self._encryptor = PublicEncryptor(self.policy, self.policy.principal(self.party, self.zone))
        try:
            values = decode_tensor(t.dtype, list(t.shape), t.data).double().numpy()
        except CodecError as e:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor {name!r} cannot be encrypted: {e}") from None
        ct = self._encryptor.encrypt(to_zone, values)
        self._send(sid, name, ct, to_zone, self.policy.zones[to_zone].party)  # type: ignore[union-attr]
        return len(ct.data)

    def _plans_move(self, name: str, to_zone: str) -> bool:
        """Whether the plan moves tensor `name` from this zone to `to_zone` (CLIENT: the runtime)."""
        return any(c.tensor == name and c.from_zone == self.zone and c.to_zone == to_zone
                   for c in self.plan.conversions)

    def _conversion(self, name: str, to_zone: str) -> Any:
        return next(c for c in self.plan.conversions
                    if c.tensor == name and c.from_zone == self.zone and c.to_zone == to_zone)

    def _he_to_mpc(self, sid: str, name: str, t: StoredTensor, to_zone: str) -> dict[str, int]:
        """he -> mpc: mask with r; the HE host's party keeps r as its share, the enclave decrypts ct(x - r) into
        its party's share; any other party gets a zero share. Bytes per link."""
        he, mpc = self.policy.zones[self.zone], self.policy.zones[to_zone]
        assert isinstance(he, HeZone) and isinstance(mpc, MpcZone)
        tee, tee_party = conversion_enclave(self.policy, self.zone, to_zone)
        k = self._conversion(name, to_zone).prescale_bits
        r, masked = self.engine.mask(name, t, he.mask_bits)  # type: ignore[attr-defined]
        names, bits = list(mpc.parties), mpc.fixed_point_bits
        me = self.policy.principal(self.party, self.zone)
        links: dict[str, int] = {}
        sends = []  # the other parties' shares go out while the enclave decrypts
        for i, party in enumerate(names):
            if party == tee_party:
                continue
            share = bounded_share(r if party == he.party else np.zeros_like(r), i, len(names), bits, k)
            sends.append(_SENDERS.submit(self._send, sid, name, share, to_zone, party))
            links[f"{me}->{self.policy.principal(party, to_zone)}"] = len(share.data)
        meta = {"key": he.key, "to_zone": to_zone, "to_party": tee_party, "share_index": str(names.index(tee_party)),
                "share_count": str(len(names)), "precision": str(bits), PRESCALE: str(k)}
        try:
            reply = self._call_enclave(tee, "DecryptToShare", sid, name, masked, masked.meta | meta)
        finally:
            wait(sends)  # an enclave refusal is the error to report; a failed push is reported after
        for f in sends:
            f.result()
        links[f"{me}->{self.policy.principal(tee_party, tee)}"] = len(masked.data)
        links[f"{self.policy.principal(tee_party, tee)}->{reply.to_principal}"] = reply.bytes
        return links

    def _mpc_to_he(self, sid: str, name: str, t: StoredTensor, to_zone: str) -> dict[str, int]:
        """mpc -> he: the HE host's party sends its bounded share s (the mask); the enclave's party has the enclave
        encrypt its share y - s for the HE zone, which adds the two. Bytes per link."""
        he = self.policy.zones[to_zone]
        assert isinstance(he, HeZone)
        if t.meta.get(BOUNDED) != "1":
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"the share of {name!r} was not re-shared with a bounded mask for an HE zone; the plan "
                            "of this zone does not send it there")
        tee, tee_party = conversion_enclave(self.policy, to_zone, self.zone)
        me = self.policy.principal(self.party, self.zone)
        if self.party == he.party:
            mask = StoredTensor(t.encoding, t.dtype, t.shape, t.data, t.meta | {PIECES: "2"})
            self._send(sid, name, mask, to_zone, he.party)
            return {f"{me}->{self.policy.principal(he.party, to_zone)}": len(t.data)}
        if self.party == tee_party:
            reply = self._call_enclave(tee, "EncryptShare", sid, name, t,
                                       t.meta | {"key": he.key, "to_zone": to_zone})
            return {f"{me}->{self.policy.principal(tee_party, tee)}": len(t.data),
                    f"{self.policy.principal(tee_party, tee)}->{reply.to_principal}": reply.bytes}
        return {}  # any other party's share is zero after the re-sharing

    def _share_out(self, sid: str, name: str, t: StoredTensor, to_zone: str) -> int:
        """Secret-share a plaintext tensor to the parties of an MPC zone: share i to party i."""
        mpc = self.policy.zones[to_zone]
        assert isinstance(mpc, MpcZone)
        try:
            value = decode_tensor(t.dtype, list(t.shape), t.data)
            shares = split(value, len(mpc.parties), mpc.fixed_point_bits)
        except (CodecError, ValueError) as e:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor {name!r} cannot be shared: {e}") from None
        for party, share in zip(mpc.parties, shares, strict=True):
            self._send(sid, name, share, to_zone, party)
        return sum(len(s.data) for s in shares)

    def _keyed(self) -> KeyedEngine:
        if not hasattr(self.engine, "install"):
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"zone {self.zone!r} of kind {self.kind.value} takes no key material")
        return self.engine  # type: ignore[return-value]

    def KeyRequirements(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """The key handle and rotations this zone needs."""
        with _Errors(context):
            key, rotations, params = self._keyed().key_requirements()
            return zone_pb2.KeyRequirementsReply(key=key, rotations=rotations, params_json=params)

    def InstallPublicMaterial(self, request_iterator: Iterator[pb.TensorFrame],  # noqa: N802
                              context: grpc.ServicerContext) -> Any:
        """Install the key holder's public material (never a secret key)."""
        with _Errors(context):
            engine = self._keyed()
            got = receive(request_iterator, self._max_tensor, self._chunk)
            key_tag, rotations = engine.install(got.data, dict(got.header.meta))
            with self._lock:
                self._loaded.clear()  # stages must be re-encoded under the new context
            return zone_pb2.InstallPublicMaterialReply(key=got.header.name, key_tag=key_tag, rotations=rotations)

    def Records(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """The receipts of a session."""
        with _Errors(context):
            with self._lock:
                s = self._sessions.get(request.session)
                return zone_pb2.RecordsReply(receipts=list(s.receipts) if s else [])

    def Release(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Free a session's tensors, receipts and engine state."""
        with _Errors(context):
            with self._lock:
                s = self._sessions.pop(request.session, None)
            self.engine.release(request.session)
            return zone_pb2.ReleaseReply(freed_tensors=len(s.tensors) if s else 0)


def _peer_status(e: grpc.RpcError) -> grpc.StatusCode:
    """The status a zone answers with when a peer it pushes to fails: the peer's refusal as it is, a peer that
    is down or too slow as UNAVAILABLE."""
    code = e.code()
    return grpc.StatusCode.UNAVAILABLE if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN) else code


class _Errors:
    """Turn a StatusError (zone or stream) into its gRPC status; unexpected errors become INTERNAL with their text."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self.context = context

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: Any, e: Any, tb: Any) -> Literal[False]:
        if e is None:
            return False
        if isinstance(e, StatusError):
            self.context.abort(e.code, str(e))
        if isinstance(e, Exception) and not _is_abort(e):
            self.context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
        return False


def _is_abort(e: BaseException) -> bool:
    # grpc's context.abort raises a bare Exception after setting the status.
    return type(e) is Exception
