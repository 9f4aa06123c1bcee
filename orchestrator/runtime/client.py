"""The runtime's client of the zone processes: channels, calls, health, and the client's own tensors in and out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import grpc
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hsi import kinds
from hsi.plan import Stage
from hsi.policy import MpcZone, Policy, TeeZone
from hsi.transport.attestation import AttestationError
from hsi.transport.certs import Credentials
from hsi.transport.codec import decode_tensor, encode_tensor
from hsi.transport.keyclient import KeyServiceError, attest_enclave
from hsi.transport.server import secure_channel
from hsi.transport.shares import combine, split
from hsi.transport.status import ZoneError
from hsi.transport.stream import Received, StreamError, frames, receive
from hsi.transport.tensor import StoredTensor
from orchestrator.runtime.errors import RunError
from orchestrator.runtime.metrics import Metrics
from protos import tensor_pb2 as pb
from protos import zone_pb2, zone_pb2_grpc

T = TypeVar("T")


class ZoneClient:
    """One channel per zone process, the calls the runtime makes on them, and RunError naming who failed."""

    def __init__(self, policy: Policy, creds: Credentials) -> None:
        self.policy = policy
        self.creds = creds
        self.deadline = policy.transport.deadlines
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, zone_pb2_grpc.ZoneStub] = {}
        self._attested: set[str] = set()  # enclaves whose quote this runtime verified

    # -- channels and calls --------------------------------------------------------------------------------------

    def channel(self, target: str) -> grpc.Channel:
        """The channel to a zone process at `target` (host:port), opened on first use."""
        if target not in self._channels:
            self._channels[target] = secure_channel(self.creds, target, self.policy.transport.max_message_bytes)
        return self._channels[target]

    def stub_at(self, target: str) -> zone_pb2_grpc.ZoneStub:
        """The Zone stub of the process at `target`."""
        if target not in self._stubs:
            self._stubs[target] = zone_pb2_grpc.ZoneStub(self.channel(target))
        return self._stubs[target]

    def stub(self, zone: str, party: str | None = None) -> zone_pb2_grpc.ZoneStub:
        """The Zone stub of `party`'s process of `zone` (its first party's by default)."""
        endpoints = self.policy.zone_endpoints(zone)
        return self.stub_at(endpoints[party or next(iter(endpoints))])

    def _call(self, zone: str, method: str, party: str | None, invoke: Callable[[zone_pb2_grpc.ZoneStub], T]) -> T:
        try:
            return invoke(self.stub(zone, party))
        except grpc.RpcError as e:
            where = self.policy.zone_endpoints(zone)
            if party:
                where = {party: where[party]}
            raise RunError(f"zone {zone!r} ({', '.join(f'{p} at {a}' for p, a in where.items())}) failed {method}: "
                           f"{e.code().name}: {e.details()}") from None

    def load_stage(self, zone: str, party: str, request: zone_pb2.LoadStageRequest) -> zone_pb2.LoadStageReply:
        """LoadStage at `party`'s process of `zone`."""
        return self._call(zone, "LoadStage", party, lambda s: s.LoadStage(request, timeout=self.deadline.stage_s))

    def load_stage_at_dealer(self, zone: str, request: zone_pb2.LoadStageRequest) -> zone_pb2.LoadStageReply:
        """LoadStage at the dealer of MPC zone `zone`."""
        target = self.policy.dealer_endpoint(zone)[1]
        try:
            reply: zone_pb2.LoadStageReply = self.stub_at(target).LoadStage(request, timeout=self.deadline.stage_s)
            return reply
        except grpc.RpcError as e:
            raise RunError(f"the dealer of zone {zone!r} at {target} failed LoadStage: "
                           f"{e.code().name}: {e.details()}") from None

    def run_stage(self, zone: str, party: str, request: zone_pb2.RunStageRequest) -> zone_pb2.RunStageReply:
        """RunStage at `party`'s process of `zone`."""
        return self._call(zone, "RunStage", party, lambda s: s.RunStage(request, timeout=self.deadline.stage_s))

    def records(self, zone: str, party: str, session: str) -> zone_pb2.RecordsReply:
        """What `party`'s process of `zone` received in `session`."""
        request = zone_pb2.RecordsRequest(session=session)
        return self._call(zone, "Records", party, lambda s: s.Records(request, timeout=self.deadline.rpc_s))

    # -- health --------------------------------------------------------------------------------------------------

    def _check(self, target: str, timeout: float) -> None:
        health_pb2_grpc.HealthStub(self.channel(target)).Check(health_pb2.HealthCheckRequest(service=""),
                                                                timeout=timeout)

    def healthy(self, target: str, timeout: float = 2.0) -> bool:
        """Whether the process at `target` answers its health check within `timeout` seconds."""
        try:
            self._check(target, timeout)
            return True
        except grpc.RpcError:
            return False

    def wait_ready(self, timeout: float) -> None:
        """Block until every zone answers its health check; RunError naming the zones that do not."""
        end = time.monotonic() + timeout
        pending = {proc.key: proc.address for proc in self.policy.processes()}
        last: dict[str, str] = {}
        while pending and time.monotonic() < end:
            for key, target in sorted(pending.items()):
                try:
                    self._check(target, 2)
                    del pending[key]
                except grpc.RpcError as e:
                    last[key] = f"{e.code().name}: {e.details()}"
            if pending:
                time.sleep(0.3)
        if pending:
            raise RunError(f"zones not healthy within {timeout:.0f} s: " + "; ".join(
                f"{k}: {last.get(k, 'no answer')}" for k in sorted(pending)))

    def close(self) -> None:
        """Close every channel."""
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()
        self._stubs.clear()

    # -- the client's own tensors --------------------------------------------------------------------------------

    def push(self, session: str, stage: Stage, name: str, tensor: torch.Tensor, m: Metrics) -> None:
        """Send a client tensor to a stage's zone: as it is, or secret-shared to the parties of an MPC zone."""
        zone = self.policy.zones[stage.zone]
        if isinstance(zone, MpcZone):
            sent = split(tensor, len(stage.parties), zone.fixed_point_bits)
        else:
            if isinstance(zone, TeeZone):
                self._attest(stage.zone)
            dtype, shape, data = encode_tensor(tensor)
            sent = [StoredTensor(pb.PLAIN, dtype, tuple(shape), data)] * len(stage.parties)
        for party, t in zip(stage.parties, sent, strict=True):
            header = pb.TensorHeader(session=session, name=name, encoding=t.encoding,  # type: ignore[arg-type]
                                     source_party=self.policy.client, dtype=t.dtype, shape=list(t.shape),
                                     meta=t.meta)
            try:
                self.stub(stage.zone, party).PushTensor(frames(header, t.data, self.policy.transport.chunk_bytes),
                                                        timeout=self.deadline.rpc_s)
            except grpc.RpcError as e:
                raise RunError(f"zone {stage.zone!r} refused input {name!r}: {e.code().name}: {e.details()}") from None
            link = f"{self.policy.runtime_principal}->{self.policy.principal(party, stage.zone)}"
            m.bytes_by_link[link] += len(t.data)

    def _attest(self, zone: str) -> None:
        """Verify an enclave's quote against the policy's pins once, before the first plaintext goes to it."""
        if zone in self._attested:
            return
        try:
            attest_enclave(self.policy, zone, self.policy.runtime_principal)
        except (KeyServiceError, AttestationError) as e:
            raise RunError(f"no plaintext goes to enclave {zone!r}: its attestation failed: {e}") from None
        self._attested.add(zone)

    def _pull_one(self, session: str, stage: Stage, party: str, name: str, m: Metrics) -> Received:
        stream = self.stub(stage.zone, party).PullTensor(zone_pb2.PullTensorRequest(session=session, name=name),
                                                         timeout=self.deadline.rpc_s)
        try:
            got = receive(stream, self.policy.transport.max_tensor_bytes, self.policy.transport.chunk_bytes)
        except grpc.RpcError as e:
            raise RunError(f"zone {stage.zone!r} at {party} failed PullTensor of {name!r}: "
                           f"{e.code().name}: {e.details()}") from None
        except StreamError as e:
            raise RunError(f"zone {stage.zone!r} at {party} sent a bad stream for {name!r}: {e}") from None
        m.bytes_by_link[f"{self.policy.principal(party, stage.zone)}->{self.policy.runtime_principal}"] += len(got.data)
        return got

    def pull(self, session: str, stage: Stage, name: str, m: Metrics) -> torch.Tensor:
        """An output of the plan: plaintext from a zone, or every party's share from an MPC zone, combined."""
        if kinds.spec(stage.kind).shared:
            shares = []
            for party in stage.parties:
                got = self._pull_one(session, stage, party, name, m)
                h = got.header
                shares.append(StoredTensor(h.encoding, h.dtype, tuple(h.shape), got.data, dict(h.meta)))
            try:
                return combine(name, shares)
            except ZoneError as e:
                raise RunError(f"the shares of output {name!r} from zone {stage.zone!r} do not combine: {e}") from None
        got = self._pull_one(session, stage, stage.parties[0], name, m)
        if got.header.encoding != pb.PLAIN:
            raise RunError(f"output {name!r} arrived as {pb.Encoding.Name(got.header.encoding)}, not plaintext")
        return decode_tensor(got.header.dtype, list(got.header.shape), got.data)
