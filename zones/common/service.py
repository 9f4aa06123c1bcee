"""The Zone gRPC service every zone process runs: its RPCs, over a session store, an outbox and its kind's engine."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, cast, runtime_checkable

import grpc

from hsi import conversions, kinds
from hsi.batch import Batch
from hsi.engine import EnclaveEngine, KeyedEngine, MaskingEngine, RunContext, StageTraffic, TrafficEngine, ZoneEngine
from hsi.ir import Graph, ZoneKind
from hsi.masking import PIECES
from hsi.models.registry import load_graph
from hsi.plan import CLIENT, Plan, Stage, make_plan
from hsi.policy import Policy
from hsi.principal import Principal
from hsi.transport.auth import peer_principal
from hsi.transport.certs import Credentials
from hsi.transport.status import ZoneError
from hsi.transport.stream import frames, receive
from hsi.transport.tensor import StoredTensor
from hsi.transport.validate import check_header
from protos import tensor_pb2 as pb
from protos import zone_pb2, zone_pb2_grpc
from zones.common.outbox import Outbox
from zones.common.sessions import Session, SessionStore
from zones.common.status import status_errors
from zones.engines import engine_for, register_all


@runtime_checkable
class CheckingEngine(Protocol):
    """An engine that checks a pushed tensor before the zone keeps it (HE: ciphertexts deserialise under its key,
    in its context and layouts), so bad input is refused on push, not when a stage runs."""

    def check_incoming(self, name: str, t: StoredTensor) -> None:
        """Raise a StatusError (INVALID_ARGUMENT, FAILED_PRECONDITION) naming what is wrong with `t`."""


class ZoneServicer(zone_pb2_grpc.ZoneServicer):
    """One zone process: holds tensors per session and runs the stages the plan assigns to it."""

    def __init__(self, policy: Policy, zone: str, party: str, creds: Credentials,
                 engine: ZoneEngine | None = None) -> None:
        register_all()  # the senders of this zone's conversions, whatever engine it was handed
        self.policy, self.zone, self.party = policy, zone, party
        self.kind = ZoneKind(policy.zones[zone].kind)
        self.graph: Graph = load_graph(policy.model.name)
        self.plan: Plan = make_plan(self.graph, policy)
        self.engine: ZoneEngine = engine or engine_for(self.kind, policy, zone, party)
        t = policy.transport
        self.sessions = SessionStore(zone, t.idle_s, t.session_bytes, t.held_bytes, on_expire=self.engine.release)
        self.outbox = Outbox(policy, zone, party, self.plan, self.engine, creds)
        self._loaded: set[int] = set()
        self._max_tensor = policy.transport.max_tensor_bytes
        self._chunk = policy.transport.chunk_bytes

    def _stage(self, digest: str, index: int) -> Stage:
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

    def close(self) -> None:
        """Stop expiring sessions, close outgoing channels and let the engine free what it holds."""
        self.sessions.close()
        self.outbox.close()
        self.engine.close()

    # -- receiving -----------------------------------------------------------------------------------------------

    def PushTensor(self, request_iterator: Iterator[pb.TensorFrame],  # noqa: N802
                   context: grpc.ServicerContext) -> zone_pb2.PushTensorReply:
        """Receive one tensor; record its encoding and source. Its header is checked before the body is read (the
        sender, then encoding, dtype, shape and size, see hsi.transport.validate, then the session's byte limits),
        the tensor by the engine before anything is kept."""
        with status_errors(context), contextlib.ExitStack() as pushing:
            principal = peer_principal(context) or ""

            def admit(h: pb.TensorHeader) -> None:
                sender = Principal.parse_or_none(principal)
                if sender is None or h.source_party != sender.party:
                    raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"tensor {h.name!r} claims source party {h.source_party!r}, but the sender's "
                                    f"certificate is {principal!r}")
                check_header(h)
                pushing.enter_context(self.sessions.receiving(h.session, h.name, h.total_bytes))

            got = receive(_after_header(request_iterator, admit), self._max_tensor, self._chunk)
            h = got.header
            stored = StoredTensor(h.encoding, h.dtype, tuple(h.shape), got.data, dict(h.meta))
            if isinstance(self.engine, CheckingEngine):
                self.engine.check_incoming(h.name, stored)
            self._keep_incoming(h.session, h.name, stored, principal)
            return zone_pb2.PushTensorReply(name=h.name, bytes=len(got.data))

    def _keep_incoming(self, sid: str, name: str, t: StoredTensor, principal: str) -> None:
        """Record a checked tensor's receipt, then keep it (an MPC conversion's piece or share once all came)."""
        session = self.sessions.session(sid)
        self.record_incoming(sid, name, t, principal)
        if isinstance(self.engine, MaskingEngine) and PIECES in t.meta:
            self._add_piece(sid, session, name, t)
            return
        whole: StoredTensor | None = t
        if t.encoding == pb.SHARE and kinds.spec(self.kind).wire != pb.SHARE:
            # mpc -> here: this zone may see the tensor; it keeps it once every share came
            whole = self.sessions.park(session, name, lambda: session.shares.add(name, t), len(t.data))
        if whole is not None:
            if isinstance(self.engine, EnclaveEngine):  # into the enclave: decrypted or reconstructed, sealed
                whole = self.engine.admit(sid, name, whole, principal)
            self.sessions.keep(sid, {name: whole})

    def record_incoming(self, sid: str, name: str, t: StoredTensor, principal: str, source_party: str = "") -> None:
        """Keep the receipt of a tensor this zone (or its enclave's key service) received."""
        self.sessions.record(zone_pb2.Receipt(
            session=sid, name=name, encoding=cast(Any, t.encoding), source_party=source_party or principal.partition(
                "/")[0], source_principal=principal, zone=self.zone, party=self.party, bytes=len(t.data)))

    def _add_piece(self, sid: str, session: Session, name: str, t: StoredTensor) -> None:
        """mpc -> he: hold the enclave's ciphertext or the co-located party's mask until both came; add them."""
        assert isinstance(self.engine, MaskingEngine)
        try:
            count = int(t.meta[PIECES])
        except ValueError:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor {name!r} has a bad pieces count") from None
        piece = self.engine.piece(name, t)

        def add() -> list[Any] | None:
            parts = session.pieces.setdefault(name, [])
            parts.append(piece)
            if len(parts) < count:
                return None
            return session.pieces.pop(name)

        parts = self.sessions.park(session, name, add, len(t.data))
        if parts is not None:
            self.sessions.keep(sid, {name: self.engine.unmask(name, parts)})

    # -- running -------------------------------------------------------------------------------------------------

    def LoadStage(self, request: zone_pb2.LoadStageRequest,  # noqa: N802
                  context: grpc.ServicerContext) -> zone_pb2.LoadStageReply:
        """Load a stage of the zone's plan (idempotent)."""
        with status_errors(context):
            stage = self._stage(request.plan_digest, request.stage)
            start = time.perf_counter()
            self.engine.load_stage(stage, self.graph)
            self._loaded.add(stage.index)
            return zone_pb2.LoadStageReply(ops=stage.ops, seconds=time.perf_counter() - start)

    def RunStage(self, request: zone_pb2.RunStageRequest,  # noqa: N802
                 context: grpc.ServicerContext) -> zone_pb2.RunStageReply:
        """Run a loaded stage on the session's tensors; keep its outputs, send on and free what the call says."""
        with status_errors(context):
            stage = self._stage(request.plan_digest, request.stage)
            if stage.index not in self._loaded:
                raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION, f"stage {stage.index} is not loaded")
            holds = self.engine.holds_tensors  # an MPC dealer computes on no tensor of its own
            with self.sessions.using(request.session, create=not holds) as session:
                return self._run(stage, request, session, holds)

    def _batch(self, lengths: Sequence[int], inputs: dict[str, StoredTensor]) -> Batch | None:
        """The batch a RunStage names, checked against the policy and the tensors it runs on."""
        try:
            batch = Batch.of(lengths)
        except ValueError as e:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        if batch is None:
            return None
        if batch.count > self.policy.model.max_batch:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"a batch of {batch.count} sequences exceeds the "
                            f"policy's max_batch {self.policy.model.max_batch}")
        wrong = [n for n, t in inputs.items() if t.shape and t.shape[0] not in (batch.rows, batch.count)]
        if wrong:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"tensors {wrong} do not have the {batch.rows} rows of a batch of {batch.count} "
                            f"sequences padded to {batch.width} tokens")
        return batch

    def _run(self, stage: Stage, request: zone_pb2.RunStageRequest, session: Session,
             holds: bool) -> zone_pb2.RunStageReply:
        """RunStage on a session kept from expiring while it runs."""
        missing = [t for t in stage.inputs if t not in session.tensors and holds]
        if missing:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"stage {stage.index} needs tensors {missing} that zone {self.zone!r} does not hold"
                            f"{self.sessions.gone(request.session)}")
        inputs = {t: session.tensors[t] for t in stage.inputs if holds}
        # a batch's longest sequence, else the tensors' rows: one sequence
        longest = max(request.lengths, default=0) or max((t.shape[0] for t in inputs.values() if t.shape), default=0)
        if request.position_offset + longest > self.policy.model.max_tokens:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"{request.position_offset + longest} tokens exceed the policy's max_tokens "
                            f"{self.policy.model.max_tokens}")
        batch = self._batch(request.lengths, inputs)
        start = time.perf_counter()
        outputs = self.engine.run_stage(stage, inputs, RunContext(request.session, request.position_offset, batch))
        seconds = time.perf_counter() - start
        self.sessions.keep(request.session, outputs)
        cost = (self.engine.stage_traffic(request.session) if isinstance(self.engine, TrafficEngine)
                else StageTraffic())
        transfers = []
        for move in request.then:
            if move.name not in outputs:
                raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                                f"stage {stage.index} does not compute {move.name!r}, so it cannot send it on")
            move.session = request.session
            transfers.append(self._transfer_releasing(move))
        held = self.sessions.drop(request.session, request.release)
        return zone_pb2.RunStageReply(outputs=list(outputs), seconds=seconds, mpc_rounds=cost.rounds,
                                      mpc_bytes=cost.bytes, party_rounds=cost.party_rounds,
                                      party_bytes=cost.party_bytes, dealer_rounds=cost.dealer_rounds,
                                      dealer_bytes=cost.dealer_bytes, held_bytes=held, transfers=transfers)

    # -- sending -------------------------------------------------------------------------------------------------

    def PullTensor(self, request: zone_pb2.PullTensorRequest,  # noqa: N802
                   context: grpc.ServicerContext) -> Iterator[pb.TensorFrame]:
        """Stream a held tensor to the caller (out of an enclave only what the plan releases to the client)."""
        with status_errors(context):
            t = self.sessions.held(request.session, request.name)
            if isinstance(self.engine, EnclaveEngine):
                if self.plan.conversion(request.name, self.zone, CLIENT) is None:
                    raise ZoneError(grpc.StatusCode.PERMISSION_DENIED,
                                    f"the plan does not release {request.name!r} from enclave {self.zone!r} to the "
                                    "client")
                t = self.engine.export(request.session, request.name, t, CLIENT)
            yield from frames(self.outbox.header(request.session, request.name, t), t.data, self._chunk)

    def Transfer(self, request: zone_pb2.TransferRequest,  # noqa: N802
                 context: grpc.ServicerContext) -> zone_pb2.TransferReply:
        """Send a held tensor to another zone of the policy, zone to zone (and free it if asked)."""
        with status_errors(context):
            return self._transfer_releasing(request)

    def _transfer_releasing(self, move: zone_pb2.TransferRequest) -> zone_pb2.TransferReply:
        """Send a held tensor on through its conversion's sender, freeing it afterwards if asked."""
        t = self.sessions.held(move.session, move.name)
        if move.to_zone not in self.policy.zones:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"unknown zone {move.to_zone!r}")
        planned = self.plan.conversion(move.name, self.zone, move.to_zone)
        if planned is None:
            raise ZoneError(grpc.StatusCode.PERMISSION_DENIED,
                            f"the plan does not move {move.name!r} from {self.zone!r} to {move.to_zone!r}")
        try:
            send = conversions.sender(self.kind, ZoneKind(self.policy.zones[move.to_zone].kind))
        except LookupError as e:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION, f"{planned.kind}: {e}") from None
        reply = send(self.outbox, move, t)
        if move.release:
            self.sessions.drop(move.session, [move.name])
        return reply

    def deliver(self, sid: str, name: str, t: StoredTensor, to_zone: str, party: str) -> None:
        """Push a tensor to a zone process of the policy as this zone (the enclave's key service uses it)."""
        self.outbox.send(sid, name, t, to_zone, party)

    # -- keys and sessions ---------------------------------------------------------------------------------------

    def _keyed(self) -> KeyedEngine:
        if not isinstance(self.engine, KeyedEngine):
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"zone {self.zone!r} of kind {self.kind.value} takes no key material")
        return self.engine

    def KeyRequirements(self, request: zone_pb2.KeyRequirementsRequest,  # noqa: N802
                        context: grpc.ServicerContext) -> zone_pb2.KeyRequirementsReply:
        """The key handle and rotations this zone needs."""
        with status_errors(context):
            key, rotations, params = self._keyed().key_requirements()
            return zone_pb2.KeyRequirementsReply(key=key, rotations=rotations, params_json=params)

    def InstallPublicMaterial(self, request_iterator: Iterator[pb.TensorFrame],  # noqa: N802
                              context: grpc.ServicerContext) -> zone_pb2.InstallPublicMaterialReply:
        """Install the key holder's public material (never a secret key)."""
        with status_errors(context):
            engine = self._keyed()
            got = receive(_after_header(request_iterator, check_header), self._max_tensor, self._chunk)
            key_tag, rotations = engine.install(got.data, dict(got.header.meta))
            self._loaded.clear()  # stages must be re-encoded under the new context
            return zone_pb2.InstallPublicMaterialReply(key=got.header.name, key_tag=key_tag, rotations=rotations)

    def Records(self, request: zone_pb2.RecordsRequest,  # noqa: N802
                context: grpc.ServicerContext) -> zone_pb2.RecordsReply:
        """The receipts of a session."""
        with status_errors(context):
            return zone_pb2.RecordsReply(receipts=self.sessions.receipts(request.session))

    def Release(self, request: zone_pb2.ReleaseRequest,  # noqa: N802
                context: grpc.ServicerContext) -> zone_pb2.ReleaseReply:
        """Free a session's tensors, receipts and engine state."""
        with status_errors(context):
            s = self.sessions.pop(request.session)
            self.engine.release(request.session)
            return zone_pb2.ReleaseReply(freed_tensors=len(s.tensors) if s else 0)


def _after_header(frames_in: Iterator[pb.TensorFrame],
                  admit: Callable[[pb.TensorHeader], None]) -> Iterator[pb.TensorFrame]:
    """The frames of a stream, calling `admit(header)` once `receive` has checked the header, before it reads a
    chunk: a refused push costs no more than its header."""
    it = iter(frames_in)
    for first in it:
        yield first
        if first.WhichOneof("frame") == "header":
            admit(first.header)
        yield from it
