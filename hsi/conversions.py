"""The conversion registry, keyed by (from kind, to kind): how a tensor moves between zone kinds, when it can,
what it reveals, and (registered by the data plane) the sending side that performs it.

The planner asks it whether a move is possible and who sees what; the planner refuses every pair the data plane
cannot run; each zone kind registers the sender of the pairs it sends from (docs/design.md, "Conversions").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from hsi.ir import ZoneKind
from hsi.policy import HeZone, MpcZone, Policy, TeeZone

if TYPE_CHECKING:
    from hsi.engine import ZoneEngine
    from hsi.plan.types import Plan
    from hsi.transport.tensor import StoredTensor
    from protos import zone_pb2


@dataclass(frozen=True)
class ConversionSpec:
    """A conversion kind: its protocol in words, a feasibility check returning a reason or None, and whether hsi
    can run it at all."""

    source: ZoneKind
    target: ZoneKind
    how: str
    # (policy, from zone, to zone) -> why impossible, or None
    check: Callable[[Policy, str, str], str | None]
    # True when the receiving zone's host sees the tensor in plaintext
    reveals_to_target_host: bool
    # False: no sending side exists for this pair, so the planner refuses it
    runnable: bool = True

    @property
    def name(self) -> str:
        """`<from kind>-><to kind>`."""
        return f"{self.source.value}->{self.target.value}"

    def refusal(self, policy: Policy, src: str, dst: str) -> str | None:
        """Why this conversion cannot move a tensor from zone `src` to zone `dst` of `policy`, or None."""
        if not self.runnable:
            return f"hsi cannot run {self.name} conversions (no zone sends them); place the ops otherwise"
        return self.check(policy, src, dst)


CONVERSIONS: dict[tuple[ZoneKind, ZoneKind], ConversionSpec] = {}


def _register(spec: ConversionSpec) -> None:
    key = (spec.source, spec.target)
    if key in CONVERSIONS:
        raise ValueError(f"conversion {key[0].value}->{key[1].value} is already registered")
    CONVERSIONS[key] = spec


def _always(policy: Policy, src: str, dst: str) -> str | None:
    return None


def _needs_key_service(policy: Policy, src: str, dst: str) -> str | None:
    if not policy.zones_of(TeeZone):
        return "the CKKS public key comes from the TEE key service, and the policy has no tee zone"
    return None


def _he_mpc_colocated(policy: Policy, he: str, mpc: str) -> str | None:
    he_zone, mpc_zone = policy.zones[he], policy.zones[mpc]
    assert isinstance(he_zone, HeZone) and isinstance(mpc_zone, MpcZone)
    if he_zone.party not in mpc_zone.parties:
        return (f"the HE zone's party {he_zone.party!r} runs no party of MPC zone {mpc!r}, so it cannot keep "
                "the mask as its share")
    tee_parties = {z.party for z in policy.zones_of(TeeZone).values()}
    if not tee_parties & (set(mpc_zone.parties) - {he_zone.party}):
        return (f"no other party of MPC zone {mpc!r} runs a tee zone to decrypt the masked ciphertext "
                "into its share")
    return None


def conversion_enclave(policy: Policy, he: str, mpc: str) -> tuple[str, str]:
    """(tee zone, its party) that turns ciphertexts into shares and back between HE zone `he` and MPC zone
    `mpc`: the enclave at the first MPC party other than the HE zone's own."""
    he_zone, mpc_zone = policy.zones[he], policy.zones[mpc]
    assert isinstance(he_zone, HeZone) and isinstance(mpc_zone, MpcZone)
    for party in mpc_zone.parties:
        if party == he_zone.party:
            continue
        for name, tee in policy.zones_of(TeeZone).items():
            if tee.party == party:
                return name, party
    raise LookupError(f"no MPC party of zone {mpc!r} other than {he_zone.party!r} runs a tee zone")


def _he_to_mpc(policy: Policy, src: str, dst: str) -> str | None:
    return _he_mpc_colocated(policy, src, dst)


def _mpc_to_he(policy: Policy, src: str, dst: str) -> str | None:
    return _he_mpc_colocated(policy, dst, src)


def _same_key(policy: Policy, src: str, dst: str) -> str | None:
    a, b = policy.zones[src], policy.zones[dst]
    assert isinstance(a, HeZone) and isinstance(b, HeZone)
    return None if a.key == b.key else f"HE zones {src!r} and {dst!r} use different keys ({a.key!r}, {b.key!r})"


def _never(reason: str) -> Callable[[Policy, str, str], str | None]:
    return lambda policy, src, dst: reason


P, H, M, T = ZoneKind.PLAIN, ZoneKind.HE, ZoneKind.MPC, ZoneKind.TEE
for _spec in [
    ConversionSpec(P, P, "plaintext crosses parties over mTLS", _always, True),
    ConversionSpec(P, H, "the sender encrypts with the attested CKKS public key", _needs_key_service, False),
    ConversionSpec(H, P, "the enclave decrypts for the receiving party", _needs_key_service, True, runnable=False),
    ConversionSpec(H, M, "the HE zone masks with a bounded r; its party gets r+u, the enclave decrypts x-r into the "
                   "other party's share x-r-u (u ring-uniform, its seed sent to the enclave alone)", _he_to_mpc, False),
    ConversionSpec(M, H, "every party sends its ring share to the enclave, the HE host's party less a bounded mask s "
                   "it sends the HE zone; the enclave encrypts the sum y-s, the HE zone adds s", _mpc_to_he, False),
    ConversionSpec(P, M, "the sender secret-shares its tensor to the MPC parties", _always, False),
    ConversionSpec(M, P, "every share goes to the receiving party, which reconstructs", _always, True),
    ConversionSpec(H, T, "the enclave decrypts", _always, False),
    ConversionSpec(T, H, "the enclave encrypts", _always, False),
    ConversionSpec(P, T, "plaintext is sealed to the enclave", _always, False),
    ConversionSpec(T, P, "the enclave releases plaintext to the receiving party", _always, True),
    ConversionSpec(T, M, "the enclave secret-shares its tensor to the MPC parties", _always, False, runnable=False),
    ConversionSpec(M, T, "every share goes to the enclave, which reconstructs", _always, False, runnable=False),
    ConversionSpec(H, H, "ciphertexts move between zones under the same key", _same_key, False, runnable=False),
    ConversionSpec(M, M, "", _never("moving shares between two MPC zones (resharing) is not supported"), False,
                   runnable=False),
    ConversionSpec(T, T, "sealed transfer between enclaves", _always, False, runnable=False),
]:
    _register(_spec)


def conversion(source: ZoneKind, target: ZoneKind) -> ConversionSpec:
    """The registered conversion between two zone kinds."""
    return CONVERSIONS[(source, target)]


class Outbox(Protocol):
    """What the sending side of a conversion may use of the zone process that sends (zones/common/outbox.py)."""

    policy: Policy
    zone: str
    party: str
    plan: Plan
    engine: ZoneEngine

    @property
    def principal(self) -> str:
        """The sending zone process's principal."""

    def send(self, sid: str, name: str, t: StoredTensor, to_zone: str, party: str) -> None:
        """Push a tensor to one process of a zone, as this zone."""

    def call_enclave(self, tee: str, method: str, sid: str, name: str, t: StoredTensor,
                     meta: dict[str, str]) -> Any:
        """Stream a tensor to a KeyService conversion method of enclave `tee`; its reply."""

    def attest(self, tee: str) -> None:
        """Verify enclave `tee`'s quote against the policy's pins (once) before plaintext goes to it."""

    def encryptor(self) -> Any:
        """The public-key encryptor of the policy's HE keys, fetched from the attested enclave on first use."""


Sender = Callable[[Outbox, "zone_pb2.TransferRequest", "StoredTensor"], "zone_pb2.TransferReply"]
_SENDERS: dict[tuple[ZoneKind, ZoneKind], Sender] = {}


def register_sender(source: ZoneKind, target: ZoneKind) -> Callable[[Sender], Sender]:
    """Register the sending side of a runnable conversion (each zone kind does, for the pairs it sends from);
    refuses a second one and a pair the planner refuses."""

    def register(fn: Sender) -> Sender:
        spec = CONVERSIONS[(source, target)]
        if not spec.runnable:
            raise ValueError(f"conversion {spec.name} is not runnable; the planner refuses it")
        if (source, target) in _SENDERS:
            raise ValueError(f"conversion {spec.name} already has a sender")
        _SENDERS[(source, target)] = fn
        return fn

    return register


def sender(source: ZoneKind, target: ZoneKind) -> Sender:
    """The registered sender of a conversion; LookupError naming it when this process has none."""
    try:
        return _SENDERS[(source, target)]
    except KeyError:
        raise LookupError(f"no sender for {source.value}->{target.value} conversions in this process") from None


def senders() -> frozenset[tuple[ZoneKind, ZoneKind]]:
    """The pairs that have a registered sender."""
    return frozenset(_SENDERS)
