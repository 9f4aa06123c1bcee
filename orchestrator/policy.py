"""The policy: a typed schema for parties, zones, placement, privacy, keys and transport, loaded from YAML.

Every error found while loading is reported at once, each with the file, the
line and the dotted path of the offending key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from orchestrator.ir import OpType


class PolicyError(ValueError):
    """A policy that cannot be used; the message lists every problem with its location."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        head = f"{source}: {len(problems)} error{'s' if len(problems) != 1 else ''} in policy"
        super().__init__("\n".join([head] + [f"  {p}" for p in problems]))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """Which model runs, who owns its weights, and the largest input accepted."""

    name: str = Field(description="packaged model name (minilm-l6, smollm2-135m) or a local checkpoint directory")
    owner: str = Field(description="the party that owns the model weights")
    max_tokens: int = Field(128, ge=1, le=8192, description="longest input (prompt + generated) in tokens")


class Party(_Strict):
    """A party and the host its zones listen on."""

    address: str = Field(description="host name or IP address of the party's zones")


class CkksParams(_Strict):
    """OpenFHE CKKS parameters of an HE zone."""

    ring_dim: int = Field(16384, description="ring dimension N, a power of two")
    scale_bits: int = Field(35, ge=20, le=60)
    first_mod_bits: int = Field(60, ge=30, le=60)
    depth: int = Field(1, ge=1, le=20, description="multiplicative depth")
    security: Literal[128, 192, 256] = 128
    allow_insecure: bool = Field(False, description="permit parameters below the security level (tests only)")

    @field_validator("ring_dim")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v < 1024 or v & (v - 1):
            raise ValueError(f"ring_dim must be a power of two >= 1024, got {v}")
        return v


class PlainZone(_Strict):
    """A PyTorch zone: its host sees everything it computes."""

    kind: Literal["plain"]
    party: str
    port: int = Field(ge=1, le=65535)


class HeZone(_Strict):
    """An OpenFHE CKKS zone: its host sees only ciphertexts."""

    kind: Literal["he"]
    party: str
    port: int = Field(ge=1, le=65535)
    ckks: CkksParams = CkksParams()
    key: str = Field("ckks-main", description="handle of the CKKS key at the TEE key service")
    pack_width: int = Field(512, description="features per ciphertext block (a power of two); the rest of the "
                                             "slots hold tokens")
    mask_bits: int = Field(28, ge=8, le=40, description="he->mpc: the HE zone masks a ciphertext with values "
                                                        "uniform in +-2^mask_bits before the enclave decrypts it")
    reshare_mask_bits: int = Field(36, ge=8, le=44, description="mpc->he: the HE host's MPC party masks the "
                                                                "other parties' share with +-2^bits")
    min_hiding_bits: float = Field(20.0, ge=0, description="the plan is refused when a mask hides a tensor "
                                                           "(widened calibrated range) by fewer bits")
    lane_max_tokens: int = Field(4, ge=0, description="tensors of at most this many tokens (each generated "
                                                      "token) use the lane layout: a token's features repeated "
                                                      "in slots/pack_width lanes, each lane working through its "
                                                      "share of the weight diagonals (that many times fewer "
                                                      "multiplies and plaintexts than the token-batched "
                                                      "layout, more rotations per token); 0 turns it off")
    token_width: int | None = Field(None, description="features per ciphertext chunk of a single token (the "
                                                      "complex lane layout of each generated token; a power of "
                                                      "two). Wider: fewer ciphertexts per tensor, so fewer "
                                                      "enclave conversions, more plaintexts. Default: pack_width")
    plaintext_cache_mb: int | None = Field(None, ge=0, description="memory for encoded weight plaintexts (about "
                                                                   "0.4 MB each at N=2^14); layers beyond it are "
                                                                   "encoded during each call, ~5x slower. Default: "
                                                                   "3/4 of the machine's memory")

    @model_validator(mode="after")
    def _mask_fits_modulus(self) -> HeZone:
        # Measured (N=2^14, scale 2^35, first modulus 2^60): a linear layer's output masked with +-2^28
        # decrypts to 1.4e-5; +-2^30 wraps the last modulus. The headroom grows with first_mod - scale.
        limit = self.ckks.first_mod_bits - self.ckks.scale_bits + 3
        if self.mask_bits > limit:
            raise ValueError(f"mask_bits {self.mask_bits} exceeds what the last CKKS modulus holds: at most "
                             f"first_mod_bits - scale_bits + 3 = {limit}")
        return self

    @field_validator("pack_width", "token_width")
    @classmethod
    def _width_power_of_two(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and (v < 1 or v & (v - 1)):
            raise ValueError(f"{info.field_name} must be a power of two, got {v}")
        return v


class MpcMember(_Strict):
    """One compute party of an MPC zone."""

    port: int = Field(ge=1, le=65535, description="gRPC port of this party's MPC process")


class MpcZone(_Strict):
    """A CrypTen zone run by several parties; each sees only its shares."""

    kind: Literal["mpc"]
    parties: dict[str, MpcMember] = Field(description="compute party name -> its process settings, in rank order")
    dealer: str = Field(description="party running the trusted third party for Beaver triples")
    dealer_port: int = Field(ge=1, le=65535, description="gRPC port of the dealer process")
    rendezvous_port: int = Field(ge=1, le=65535, description="torch.distributed TCP rendezvous port at rank 0")
    fixed_point_bits: int = Field(16, ge=8, le=32)
    peer_timeout_s: float = Field(60.0, gt=0, description="a party waiting longer than this for a peer within a "
                                                         "stage gives the session up (a dead or stalled peer)")
    allow_insecure_dealer: bool = Field(False, description="permit the dealer at a compute party (tests only)")
    calibration: str | None = Field(None, description="MPC calibration file (`hsi calibrate`); default: the one "
                                                      "shipped for a packaged model")

    @field_validator("parties")
    @classmethod
    def _at_least_two(cls, v: dict[str, MpcMember]) -> dict[str, MpcMember]:
        if len(v) < 2:
            raise ValueError(f"an MPC zone needs at least 2 compute parties, got {len(v)}")
        return v


class HsmSettings(_Strict):
    """Where the PKCS#11 token holding the platform key and the key-encryption key is."""

    module: str = Field("/usr/lib/softhsm/libsofthsm2.so", description="PKCS#11 module path")
    token_label: str = "hsi-tee"
    pin_env: str = Field("HSI_HSM_PIN", description="environment variable holding the user PIN")
    pin_file: str | None = Field(None, description="file holding the user PIN, used when pin_env is unset")
    softhsm_conf: str | None = Field(None, description="SOFTHSM2_CONF for SoftHSM2 tokens (dev deployments)")


class TeeZone(_Strict):
    """A simulated enclave holding every secret key; it may also compute."""

    kind: Literal["tee"]
    party: str
    port: int = Field(ge=1, le=65535)
    measurement: str | None = Field(None, description="expected enclave measurement (hex SHA-256) pinned by clients, "
                                                      "or 'build': the measurement of the enclave code the client "
                                                      "itself has (a reproducible build)")
    platform_key: str | None = Field(None, description="the platform's Ed25519 public key (hex) pinned by clients")
    platform_key_file: str | None = Field(None, description="file holding platform_key (hex), for dev tokens "
                                                            "made by `hsi tee init-token`")
    audit_log: str = Field(".hsi/tee/audit.log", description="hash-chained audit log of the key service")
    hsm: HsmSettings = HsmSettings()
    key_dir: str = Field(".hsi/tee/keys", description="directory of sealed keys")


Zone = Annotated[PlainZone | HeZone | MpcZone | TeeZone, Field(discriminator="kind")]


class PlacementRule(_Strict):
    """Ops whose name matches `match` (a glob), and whose type is in `types` if given, run in `zone`."""

    match: str
    types: list[OpType] | None = None
    zone: str


class PrivacyConstraint(_Strict):
    """`party` must never see in plaintext the `what` (activations or weights) of ops matching `ops`."""

    party: str
    never_sees: Literal["activations", "weights"]
    ops: str = Field(description="glob over op names (activations are named after the op that writes them)")
    reason: str | None = None


Operation = Literal["create", "list", "get_public_material", "decrypt_to_share", "encrypt_share", "reencrypt",
                    "decrypt_in_enclave", "encrypt_result", "rotate", "destroy", "audit"]


class KeyGrant(_Strict):
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


class TlsSettings(_Strict):
    """Certificates: a CA and one certificate per principal, named `<party>__<zone>.pem` / `.key`."""

    certs_dir: str = ".hsi/certs"


class Deadlines(_Strict):
    """Seconds allowed per kind of call."""

    rpc_s: float = Field(30.0, gt=0)
    stage_s: float = Field(600.0, gt=0)
    startup_s: float = Field(120.0, gt=0)


class Transport(_Strict):
    """Transport settings shared by every channel of the deployment."""

    tls: TlsSettings = TlsSettings()
    chunk_bytes: int = Field(1 << 20, ge=1 << 16, le=4 << 20, description="tensor stream chunk size (64 KiB-4 MiB)")
    max_message_bytes: int = Field(8 << 20, ge=1 << 20)
    max_tensor_bytes: int = Field(1 << 30, ge=1 << 20, description="largest tensor a zone accepts")
    deadlines: Deadlines = Deadlines()


class ZoneProcess(NamedTuple):
    """One process of a zone: which party runs it, where it listens, whether it is an MPC dealer."""

    zone: str
    party: str
    address: str
    dealer: bool = False

    @property
    def key(self) -> str:
        """`zone@party` (`zone@party+dealer` for a dealer), as logs and the launcher name it."""
        return f"{self.zone}@{self.party}" + ("+dealer" if self.dealer else "")


class Policy(_Strict):
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
        line = _nearest_line(self._lines, key)
        return f"{Path(self._source).name}:{line} {'.'.join(key)}" if line else f"{self._source} {'.'.join(key)}"

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
        """Every zone process of the deployment: one per zone party, plus each MPC zone's dealer."""
        out = [ZoneProcess(z, p, a) for z in self.zones for p, a in self.zone_endpoints(z).items()]
        for name, z in self.zones.items():
            if isinstance(z, MpcZone):
                out.append(ZoneProcess(name, *self.dealer_endpoint(name), dealer=True))
        return out

    def dealer_endpoint(self, zone: str) -> tuple[str, str]:
        """(party, host:port) of the dealer process of an MPC zone."""
        z = self.zones[zone]
        if not isinstance(z, MpcZone):
            raise ValueError(f"zone {zone!r} is not an MPC zone and has no dealer")
        return z.dealer, f"{self.parties[z.dealer].address}:{z.dealer_port}"

    def digest(self) -> str:
        """SHA-256 of the policy's canonical JSON: zones refuse a runtime holding another policy."""
        import hashlib

        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def _nearest_line(lines: dict[tuple[str, ...], int], key: tuple[str, ...]) -> int | None:
    while key:
        if key in lines:
            return lines[key]
        key = key[:-1]
    return lines.get((), None)


class _LineLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_map(node: yaml.Node, path: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            child = path + (str(k.value),)
            out[child] = k.start_mark.line + 1
            _line_map(v, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            child = path + (str(i),)
            out[child] = v.start_mark.line + 1
            _line_map(v, child, out)


def _pydantic_problems(err: ValidationError, lines: dict[tuple[str, ...], int], name: str) -> list[str]:
    problems = []
    for e in err.errors():
        # Discriminated unions put the variant tag ("he", "plain") in the path; drop it.
        loc = tuple(str(p) for p in e["loc"] if p not in ("plain", "he", "mpc", "tee"))
        line = _nearest_line(lines, loc)
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "union_tag_invalid":
            msg = f"unknown zone kind {e.get('input', {}).get('kind')!r}; expected one of plain, he, mpc, tee"
        elif e["type"] == "union_tag_not_found":
            msg = "zone has no 'kind' (one of plain, he, mpc, tee)"
        problems.append(f"{name}:{line} {'.'.join(loc) or '<root>'}: {msg}")
    return problems


def _cross_checks(p: Policy) -> list[str]:
    """Checks that span sections: every name used is defined, ports are distinct, roles make sense."""
    problems: list[str] = []
    if p.client not in p.parties:
        problems.append(f"{p.where('client')}: unknown party {p.client!r}")
    if p.model.owner not in p.parties:
        problems.append(f"{p.where('model', 'owner')}: unknown party {p.model.owner!r}")
    endpoints: dict[str, str] = {}
    for zname, z in p.zones.items():
        if "/" in zname or "__" in zname:
            problems.append(f"{p.where('zones', zname)}: zone names may not contain '/' or '__'")
        if zname == "client":
            problems.append(f"{p.where('zones', zname)}: the zone name 'client' is reserved for the runtime's "
                            "inputs and outputs; name the client's zone otherwise (e.g. embed-client)")
        parties = list(z.parties) if isinstance(z, MpcZone) else [z.party]
        for party in parties:
            field = ("zones", zname, "parties", party) if isinstance(z, MpcZone) else ("zones", zname, "party")
            if party not in p.parties:
                problems.append(f"{p.where(*field)}: unknown party {party!r}")
        ports: list[tuple[str, int, tuple[str, ...]]] = []
        if isinstance(z, MpcZone):
            ports += [(m, z.parties[m].port, ("zones", zname, "parties", m, "port")) for m in z.parties]
            if z.dealer not in p.parties:
                problems.append(f"{p.where('zones', zname, 'dealer')}: unknown party {z.dealer!r}")
            ports.append((z.dealer, z.dealer_port, ("zones", zname, "dealer_port")))
            first = next(iter(z.parties))
            ports.append((first, z.rendezvous_port, ("zones", zname, "rendezvous_port")))
            if z.dealer in z.parties and not z.allow_insecure_dealer:
                problems.append(
                    f"{p.where('zones', zname, 'dealer')}: dealer {z.dealer!r} is also a compute party of the MPC "
                    "zone, so it could learn the shares it deals; put the dealer at another party or set "
                    "allow_insecure_dealer: true"
                )
        else:
            ports.append((z.party, z.port, ("zones", zname, "port")))
        for party, port, where in ports:
            if party not in p.parties:
                continue
            ep = f"{p.parties[party].address}:{port}"
            if ep in endpoints:
                problems.append(f"{p.where(*where)}: {ep} is already used by {endpoints[ep]}")
            else:
                endpoints[ep] = ".".join(where)
    for i, rule in enumerate(p.placement):
        if rule.zone not in p.zones:
            problems.append(f"{p.where('placement', i, 'zone')}: unknown zone {rule.zone!r}")
    for i, c in enumerate(p.privacy):
        if c.party not in p.parties:
            problems.append(f"{p.where('privacy', i, 'party')}: unknown party {c.party!r}")
    for i, g in enumerate(p.keys):
        party, _, zone = g.principal.partition("/")
        if party not in p.parties or not zone:
            problems.append(f"{p.where('keys', i, 'principal')}: principal must be <party>/<zone> of a known party, "
                            f"got {g.principal!r}")
    return problems


def load_policy_text(text: str, source: str = "<memory>") -> Policy:
    """A Policy from YAML text; PolicyError listing every problem with file:line and key path."""
    name = Path(source).name
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise PolicyError(source, [f"{name}{line}: not valid YAML: {getattr(e, 'problem', None) or e}"]) from None
    if not isinstance(data, dict):
        raise PolicyError(source, [f"{name}:1: a policy is a YAML mapping, got {type(data).__name__}"])
    lines: dict[tuple[str, ...], int] = {}
    if node is not None:
        _line_map(node, (), lines)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as e:
        raise PolicyError(source, _pydantic_problems(e, lines, name)) from None
    policy._source = source
    policy._lines = lines
    problems = _cross_checks(policy)
    if problems:
        raise PolicyError(source, problems)
    return policy


def load_policy(path: str | Path) -> Policy:
    """A Policy from a YAML file; PolicyError naming every problem."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise PolicyError(str(path), [f"cannot read policy file: {e.strerror}"]) from None
    return load_policy_text(text, str(p))


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of the policy format."""
    return Policy.model_json_schema()
