"""The policy: a typed schema for parties, zones, placement, privacy, keys and transport."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, NamedTuple, TypeVar

from pydantic import Field, PrivateAttr, model_validator

from hsi.ir import OpType
from hsi.policy.base import Strict
from hsi.policy.zones import ENCLAVE_DEALER, HeZone, MpcZone, PlainZone, TeeZone, Zone

ZoneT = TypeVar("ZoneT", PlainZone, HeZone, MpcZone, TeeZone)


class ModelSpec(Strict):
    """Which model runs, who owns its weights, and the largest input accepted."""

    name: str = Field(description="packaged model name (minilm-l6, smollm2-135m) or a local checkpoint directory")
    owner: str = Field(description="the party that owns the model weights")
    max_tokens: int = Field(128, ge=1, le=8192, description="longest input (prompt + generated) in tokens")
    max_batch: int = Field(32, ge=1, le=256, description="most texts one batched pass embeds together")


class Party(Strict):
    """A party and the host its zones listen on."""

    address: str = Field(description="host name or IP address of the party's zones")



class PlacementRule(Strict):
    """Ops whose name matches `match` (a glob), and whose type is in `types` if given, run in `zone`."""

    match: str
    types: list[OpType] | None = None
    zone: str


class PrivacyConstraint(Strict):
    """A rule on what `party` may see: never the plaintext `never_sees` (activations or weights) of ops matching
    `ops`; or no plaintext activation from which more than `max_token_recovery` of the input tokens are
    recovered (the model's measured leakage, `hsi leakage`)."""

    party: str
    never_sees: Literal["activations", "weights"] | None = None
    ops: str | None = Field(None, description="glob over op names (activations are named after the op that writes "
                                              "them)")
    max_token_recovery: float | None = Field(None, ge=0, le=1, description="largest fraction of the input's "
                                             "tokens an attack may recover from what the party sees")
    reason: str | None = None

    @model_validator(mode="after")
    def _one_kind_of_rule(self) -> PrivacyConstraint:
        if self.max_token_recovery is None and (self.never_sees is None or self.ops is None):
            raise ValueError("a privacy rule needs never_sees and ops, or max_token_recovery")
        if self.max_token_recovery is not None and (self.never_sees is not None or self.ops is not None):
            raise ValueError("a privacy rule has either never_sees and ops, or max_token_recovery, not both")
        return self


Operation = Literal["create", "list", "get_public_material", "decrypt_to_share", "encrypt_share", "reencrypt",
                    "decrypt_in_enclave", "encrypt_result", "rotate", "destroy", "audit", "sign_receipt"]


class KeyGrant(Strict):
    """An HSM-style grant: `principal` may perform `operations` on key `key`, within limits."""

    principal: str = Field(description="party/zone, as named in the peer certificate")
    key: str
    operations: list[Operation]
    max_calls: int | None = Field(None, ge=1)
    max_sessions: int | None = Field(None, ge=1)
    recipients: list[str] = Field([], description="who may receive the result: the MPC party principal "
                                                  "(decrypt_to_share), the HE zone principal (encrypt_share, "
                                                  "encrypt_result), the key handle (reencrypt); none: the "
                                                  "operation is denied")


class TlsSettings(Strict):
    """Certificates: a CA and one certificate per principal, named `<party>__<zone>.pem` / `.key`."""

    certs_dir: str = ".hsi/certs"


class Deadlines(Strict):
    """Seconds allowed per kind of call."""

    rpc_s: float = Field(30.0, gt=0)
    stage_s: float = Field(600.0, gt=0)
    startup_s: float = Field(120.0, gt=0)


class Transport(Strict):
    """Transport settings shared by every channel of the deployment."""

    tls: TlsSettings = TlsSettings()
    chunk_bytes: int = Field(1 << 20, ge=1 << 16, le=4 << 20, description="tensor stream chunk size (64 KiB-4 MiB)")
    max_message_bytes: int = Field(8 << 20, ge=1 << 20)
    max_tensor_bytes: int = Field(1 << 30, ge=1 << 20, description="largest tensor a zone accepts")
    deadlines: Deadlines = Deadlines()
    calls_per_principal: int = Field(16, ge=1, le=1024, description="calls one principal may have open at a "
                                     "server at once; more get RESOURCE_EXHAUSTED")
    stream_idle_s: float = Field(20.0, gt=0, description="a call waiting longer than this for its next request "
                                 "message is cancelled (a client that opens calls and stops sending holds nothing "
                                 "for longer)")
    max_sessions: int = Field(4, ge=1, le=64, description="sessions a zone process runs at once (an MPC zone: one "
                              "worker and mesh each); one more is refused with RESOURCE_EXHAUSTED")
    session_idle_s: float | None = Field(None, gt=0, description="a session no call touched for this long is "
                                         "released in a zone (tensors and engine state); default 2 x stage_s")
    max_session_bytes: int | None = Field(None, ge=1 << 20, description="bytes a zone holds for one session; "
                                          "default 2 x max_tensor_bytes")
    max_held_bytes: int | None = Field(None, ge=1 << 20, description="bytes a zone process holds over all its "
                                       "sessions; default 4 x max_tensor_bytes")

    @property
    def idle_s(self) -> float:
        """Seconds a session may sit untouched in a zone before it is released (`session_idle_s`, default twice
        the stage deadline: a zone waiting while a slow stage runs elsewhere keeps its tensors)."""
        return self.session_idle_s or 2 * self.deadlines.stage_s

    @property
    def session_bytes(self) -> int:
        """The most a zone holds for one session (`max_session_bytes`, default 2 x max_tensor_bytes)."""
        return self.max_session_bytes or 2 * self.max_tensor_bytes

    @property
    def held_bytes(self) -> int:
        """The most a zone process holds over all sessions (`max_held_bytes`, default 4 x max_tensor_bytes)."""
        return self.max_held_bytes or 4 * self.max_tensor_bytes


class ZoneProcess(NamedTuple):
    """One process of a zone: which party runs it, where it listens, whether it is an MPC dealer."""

    zone: str
    party: str
    address: str
    dealer: bool = False
    host: str | None = None  # the tee zone whose process serves this one (an MPC dealer in an enclave)

    @property
    def key(self) -> str:
        """`zone@party` (`zone@party+dealer` for a dealer), as logs and the launcher name it."""
        return f"{self.zone}@{self.party}" + ("+dealer" if self.dealer else "")


class Policy(Strict):
    """A whole deployment: who runs what, where each op runs, and what each party may see."""

    version: Literal[1]
    name: str
    model: ModelSpec
    client: str = Field(description="the party that owns the input and runs the runtime")
    parties: dict[str, Party]
    zones: dict[str, Zone]
    placement: list[PlacementRule] = Field(min_length=1)
    privacy: list[PrivacyConstraint] = []
    keys: list[KeyGrant] = []
    transport: Transport = Transport()

    _source: str = PrivateAttr("<memory>")
    _lines: dict[tuple[str, ...], int] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> str:
        """The file this policy was read from."""
        return self._source

    def where(self, *path: str | int) -> str:
        """`file:line path` of a key, for error messages."""
        key = tuple(str(p) for p in path)
        line = nearest_line(self._lines, key)
        return f"{Path(self._source).name}:{line} {'.'.join(key)}" if line else f"{self._source} {'.'.join(key)}"

    def zones_of(self, kind: type[ZoneT]) -> dict[str, ZoneT]:
        """The zones of one kind (its policy model, e.g. TeeZone), by name, in policy order."""
        return {name: z for name, z in self.zones.items() if isinstance(z, kind)}

    def zone_parties(self, zone: str) -> list[str]:
        """The parties that run `zone` (several for MPC)."""
        z = self.zones[zone]
        return list(z.parties) if isinstance(z, MpcZone) else [z.party]

    def principal(self, party: str, zone: str) -> str:
        """The principal name a zone process presents in its certificate."""
        return f"{party}/{zone}"

    @property
    def runtime_principal(self) -> str:
        """The principal of the runtime at the client."""
        return f"{self.client}/runtime"

    def zone_endpoints(self, zone: str) -> dict[str, str]:
        """party -> host:port of each process of `zone`."""
        z = self.zones[zone]
        if isinstance(z, MpcZone):
            return {p: f"{self.parties[p].address}:{m.port}" for p, m in z.parties.items()}
        return {z.party: f"{self.parties[z.party].address}:{z.port}"}

    def processes(self) -> list[ZoneProcess]:
        """Every zone endpoint of the deployment: one per zone party, plus each MPC zone's dealer."""
        out = [ZoneProcess(z, p, a) for z in self.zones for p, a in self.zone_endpoints(z).items()]
        for name, z in self.zones.items():
            if isinstance(z, MpcZone):
                out.append(ZoneProcess(name, *self.dealer_endpoint(name), dealer=True, host=self.dealer_enclave(name)))
        return out

    def started_processes(self) -> list[ZoneProcess]:
        """The processes a deployment starts: every zone endpoint but the dealers an enclave's process serves."""
        return [p for p in self.processes() if p.host is None]

    def process_principal(self, proc: ZoneProcess) -> str:
        """The principal a zone endpoint presents (an enclave's for the dealer it serves)."""
        return self.principal(proc.party, proc.host or proc.zone)

    def dealer_enclave(self, zone: str) -> str | None:
        """The tee zone an MPC zone's dealer runs in (`dealer: enclave`), or None for a dealer at a party."""
        z = self.zones[zone]
        if not isinstance(z, MpcZone) or z.dealer != ENCLAVE_DEALER:
            return None
        tees = list(self.zones_of(TeeZone))
        if len(tees) != 1:
            raise ValueError(f"zone {zone!r}: dealer: enclave needs exactly one tee zone; the policy has {tees}")
        return tees[0]

    def dealer_principal(self, zone: str) -> str:
        """The principal an MPC zone's dealer presents to the parties."""
        party, _ = self.dealer_endpoint(zone)
        return self.principal(party, self.dealer_enclave(zone) or zone)

    def hosted_dealers(self, tee: str) -> list[str]:
        """The MPC zones whose dealer runs in tee zone `tee`."""
        return [n for n, z in self.zones.items() if isinstance(z, MpcZone) and self.dealer_enclave(n) == tee]

    def has_dealer(self, zone: str) -> bool:
        """Whether `zone` has a dealer process (an MPC zone's), which runs each of its stages in lockstep."""
        return isinstance(self.zones[zone], MpcZone)

    def dealer_endpoint(self, zone: str) -> tuple[str, str]:
        """(party, host:port) of the dealer process of an MPC zone."""
        z = self.zones[zone]
        if not isinstance(z, MpcZone):
            raise ValueError(f"zone {zone!r} is not an MPC zone and has no dealer")
        enclave = self.dealer_enclave(zone)
        party = z.dealer if enclave is None else self.zones[enclave].party  # type: ignore[union-attr]
        return party, f"{self.parties[party].address}:{z.dealer_port}"

    def digest(self) -> str:
        """SHA-256 of the policy's canonical JSON: zones refuse a runtime holding another policy."""
        import hashlib

        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def nearest_line(lines: dict[tuple[str, ...], int], key: tuple[str, ...]) -> int | None:
    """The line of `key` in the YAML source, or of its nearest ancestor that has one."""
    while key:
        if key in lines:
            return lines[key]
        key = key[:-1]
    return lines.get((), None)

