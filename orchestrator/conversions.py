"""Conversions between zone kinds (DESIGN.md §4): how a tensor moves, when it can, and what it reveals.

One registry keyed by (from kind, to kind). The planner asks it whether a
move is possible and who sees what; the runtime asks it how to perform one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.ir import ZoneKind
from orchestrator.policy import HeZone, MpcZone, Policy, TeeZone


@dataclass(frozen=True)
class ConversionSpec:
    """A conversion kind: its protocol in words, and a feasibility check returning a reason or None."""

    source: ZoneKind
    target: ZoneKind
    how: str
    # (policy, from zone, to zone) -> why impossible, or None
    check: Callable[[Policy, str, str], str | None]
    # True when the receiving zone's host sees the tensor in plaintext
    reveals_to_target_host: bool


CONVERSIONS: dict[tuple[ZoneKind, ZoneKind], ConversionSpec] = {}


def _register(spec: ConversionSpec) -> None:
    key = (spec.source, spec.target)
    if key in CONVERSIONS:
        raise ValueError(f"conversion {key[0].value}->{key[1].value} is already registered")
    CONVERSIONS[key] = spec


def _always(policy: Policy, src: str, dst: str) -> str | None:
    return None


def _tee_zones(policy: Policy) -> list[str]:
    return [n for n, z in policy.zones.items() if isinstance(z, TeeZone)]


def _needs_key_service(policy: Policy, src: str, dst: str) -> str | None:
    if not _tee_zones(policy):
        return "the CKKS public key comes from the TEE key service, and the policy has no tee zone"
    return None


def _he_mpc_colocated(policy: Policy, he: str, mpc: str) -> str | None:
    he_zone, mpc_zone = policy.zones[he], policy.zones[mpc]
    assert isinstance(he_zone, HeZone) and isinstance(mpc_zone, MpcZone)
    if he_zone.party not in mpc_zone.parties:
        return (f"the HE zone's party {he_zone.party!r} runs no party of MPC zone {mpc!r}, so it cannot keep "
                "the mask as its share")
    tee_parties = {policy.zones[t].party for t in _tee_zones(policy)}  # type: ignore[union-attr]
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
        for name in _tee_zones(policy):
            if policy.zones[name].party == party:  # type: ignore[union-attr]
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
    ConversionSpec(H, P, "the enclave decrypts for the receiving party", _needs_key_service, True),
    ConversionSpec(H, M, "the HE zone masks with a bounded r, its party keeps r; the enclave decrypts x-r into the "
                   "other party's share", _he_to_mpc, False),
    ConversionSpec(M, H, "re-shared with a bounded mask s kept by the HE host's party; the enclave encrypts the other "
                   "share y-s for the HE zone, which adds s", _mpc_to_he, False),
    ConversionSpec(P, M, "the sender secret-shares its tensor to the MPC parties", _always, False),
    ConversionSpec(M, P, "every share goes to the receiving party, which reconstructs", _always, True),
    ConversionSpec(H, T, "the enclave decrypts", _always, False),
    ConversionSpec(T, H, "the enclave encrypts", _always, False),
    ConversionSpec(P, T, "plaintext is sealed to the enclave", _always, False),
    ConversionSpec(T, P, "the enclave releases plaintext to the receiving party", _always, True),
    ConversionSpec(T, M, "the enclave secret-shares its tensor to the MPC parties", _always, False),
    ConversionSpec(M, T, "every share goes to the enclave, which reconstructs", _always, False),
    ConversionSpec(H, H, "ciphertexts move between zones under the same key", _same_key, False),
    ConversionSpec(M, M, "", _never("moving shares between two MPC zones (resharing) is not supported"), False),
    ConversionSpec(T, T, "sealed transfer between enclaves", _always, False),
]:
    _register(_spec)


def conversion(source: ZoneKind, target: ZoneKind) -> ConversionSpec:
    """The registered conversion between two zone kinds."""
    return CONVERSIONS[(source, target)]
