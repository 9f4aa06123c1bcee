"""What each process receives of each conversion, and how well it is hidden there (the plan's conversion table)."""

from __future__ import annotations

from dataclasses import replace

from hsi.conversions import conversion_enclave
from hsi.plan.types import CLIENT, Conversion, Seen
from hsi.policy import HeZone, Policy

UNIFORM = Seen("share, uniform over Z_2^64", "perfect")
PLAINTEXT = Seen("plaintext", "none")


def _processes(policy: Policy, zone: str) -> list[str]:
    """The principals of a zone's processes (the runtime's for the client)."""
    if zone == CLIENT:
        return [policy.runtime_principal]
    return [policy.principal(p, zone) for p in policy.zone_parties(zone)]


def _ciphertext(policy: Policy, he: str) -> Seen:
    z = policy.zones[he]
    assert isinstance(z, HeZone)
    insecure = " (allow_insecure)" if z.ckks.allow_insecure else ""
    return Seen("CKKS ciphertext", f"{z.ckks.security}-bit RLWE{insecure}")


def _views(policy: Policy, c: Conversion) -> dict[str, Seen]:
    dst = c.kind.partition("->")[2]
    if c.kind in ("he->mpc", "mpc->he"):
        he, mpc = (c.from_zone, c.to_zone) if c.kind == "he->mpc" else (c.to_zone, c.from_zone)
        tee, tee_party = conversion_enclave(policy, he, mpc)
        masked = "x-r (bounded mask r)" if c.kind == "he->mpc" else "y-s (bounded mask s)"
        bounded = Seen(f"{masked}, in the enclave",
                       f"{c.hiding_bits} bits (statistical)")
        views = {p: UNIFORM for p in _processes(policy, mpc)}
        views[policy.principal(tee_party, tee)] = bounded
        views.update({p: _ciphertext(policy, he) for p in _processes(policy, he)})
        return views
    if dst == "he":
        return {p: _ciphertext(policy, c.to_zone) for p in _processes(policy, c.to_zone)}
    seen = {"plain": PLAINTEXT, "mpc": UNIFORM, "tee": Seen("plaintext, in the enclave", "none")}[dst]
    return {p: seen for p in _processes(policy, c.to_zone)}


def with_views(policy: Policy, conversions: list[Conversion]) -> list[Conversion]:
    """Each conversion with `sees`: principal -> what that process receives of the tensor, hidden how well."""
    return [replace(c, sees=_views(policy, c)) for c in conversions]
