"""What a zone process sends: tensors to other zones and to its enclave's key service, over pooled mTLS channels."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import grpc

from hsi import conversions
from hsi.engine import ZoneEngine
from hsi.plan import Plan
from hsi.policy import Policy, TeeZone
from hsi.transport.attestation import AttestationError
from hsi.transport.certs import Credentials
from hsi.transport.keyclient import KeyServiceError, attest_enclave
from hsi.transport.server import secure_channel
from hsi.transport.status import ZoneError
from hsi.transport.stream import frames
from hsi.transport.tensor import StoredTensor
from protos import keys_pb2_grpc, zone_pb2, zone_pb2_grpc
from protos import tensor_pb2 as pb
from zones.common.status import peer_status


class Outbox:
    """The sending side of one zone process (the conversions' `Outbox`): pushes as this zone's principal."""

    def __init__(self, policy: Policy, zone: str, party: str, plan: Plan, engine: ZoneEngine,
                 creds: Credentials) -> None:
        self.policy, self.zone, self.party, self.plan, self.engine = policy, zone, party, plan, engine
        self._creds = creds
        self._chunk = policy.transport.chunk_bytes
        self._channels: dict[str, grpc.Channel] = {}
        self._attested: set[str] = set()  # enclaves whose quote this zone verified before sending plaintext
        self._encryptor: Any = None  # plain -> he: the attested public key, fetched on first use
        self._lock = threading.Lock()

    @property
    def principal(self) -> str:
        """This zone process's principal."""
        return self.policy.principal(self.party, self.zone)

    def _channel(self, target: str) -> grpc.Channel:
        with self._lock:
            if target not in self._channels:
                self._channels[target] = secure_channel(self._creds, target, self.policy.transport.max_message_bytes)
            return self._channels[target]

    def header(self, sid: str, name: str, t: StoredTensor, meta: dict[str, str] | None = None) -> pb.TensorHeader:
        """The stream header of a tensor this zone sends."""
        return pb.TensorHeader(session=sid, name=name, encoding=cast(Any, t.encoding), source_party=self.party,
                               dtype=t.dtype, shape=list(t.shape), meta=t.meta if meta is None else meta)

    def send(self, sid: str, name: str, t: StoredTensor, to_zone: str, party: str) -> None:
        """Push a tensor to the process of `to_zone` at `party`; the peer's refusal as a ZoneError."""
        target = self.policy.zone_endpoints(to_zone)[party]
        stub = zone_pb2_grpc.ZoneStub(self._channel(target))
        try:
            stub.PushTensor(frames(self.header(sid, name, t), t.data, self._chunk),
                            timeout=self.policy.transport.deadlines.rpc_s)
        except grpc.RpcError as e:
            raise ZoneError(peer_status(e), f"zone {to_zone!r} at {party} ({target}) refused {name!r}: "
                            f"{e.details()}") from None

    def call_enclave(self, tee: str, method: str, sid: str, name: str, t: StoredTensor,
                     meta: dict[str, str]) -> Any:
        """Stream a tensor to a KeyService conversion method of enclave `tee`; its reply."""
        z = self.policy.zones[tee]
        assert isinstance(z, TeeZone)
        stub = keys_pb2_grpc.KeyServiceStub(self._channel(self.policy.zone_endpoints(tee)[z.party]))
        try:
            return getattr(stub, method)(frames(self.header(sid, name, t, meta), t.data, self._chunk),
                                         timeout=self.policy.transport.deadlines.rpc_s)
        except grpc.RpcError as e:
            raise ZoneError(peer_status(e), f"the enclave {tee!r} refused {method} of {name!r}: "
                            f"{e.details()}") from None

    def attest(self, tee: str) -> None:
        """Verify enclave `tee`'s quote against the policy's pins once, before this zone sends it plaintext."""
        if tee in self._attested:
            return
        try:
            attest_enclave(self.policy, tee, self.principal)
        except (KeyServiceError, AttestationError) as e:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"zone {self.zone!r} sends no plaintext to enclave {tee!r}: its attestation failed: "
                            f"{e}") from None
        with self._lock:
            self._attested.add(tee)

    def encryptor(self) -> Any:
        """The public-key encryptor of the policy's HE keys (fetched from the attested enclave on first use)."""
        from zones.common.ckks.encryptor import PublicEncryptor

        with self._lock:
            if self._encryptor is None:
                self._encryptor = PublicEncryptor(self.policy, self.principal)
            return self._encryptor

    def close(self) -> None:
        """Close every outgoing channel."""
        for ch in self._channels.values():
            ch.close()


def send_as_is(out: conversions.Outbox, move: zone_pb2.TransferRequest, t: StoredTensor) -> zone_pb2.TransferReply:
    """The conversions that carry a tensor unchanged: to the receiving zone's process at `move.to_party` (or its
    only one)."""
    endpoints = out.policy.zone_endpoints(move.to_zone)
    party = move.to_party or next(iter(endpoints))
    if party not in endpoints:
        raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"zone {move.to_zone!r} has no process at party {party!r}")
    start = time.perf_counter()
    out.send(move.session, move.name, t, move.to_zone, party)
    return zone_pb2.TransferReply(bytes=len(t.data), seconds=time.perf_counter() - start)
