"""What each process receives of each conversion and how well it is hidden there; who must not collude."""

from __future__ import annotations

from dataclasses import replace

from hsi.conversions import conversion_enclave
from hsi.plan.types import CLIENT, Collusion, Conversion, Seen, Stage
from hsi.policy import HeZone, MpcZone, Policy, TeeZone

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


def _enclave_name(policy: Policy, tee: str) -> str:
    return f"{policy.zones[tee].party}'s enclave ({tee})"  # type: ignore[union-attr]


def collusion(policy: Policy, stages: list[Stage]) -> list[Collusion]:
    """The pairs whose pooled views would break the plan (semi-honest parties), per zone the plan uses: an MPC
    zone's compute parties together, each with the dealer (a party, or the enclave it runs in), and an HE zone's
    host with the enclave holding its key."""
    out: list[Collusion] = []
    for zone in dict.fromkeys(s.zone for s in stages):
        z = policy.zones[zone]
        if isinstance(z, MpcZone):
            names = list(z.parties)
            out += [Collusion([a, b], f"both shares of every tensor in MPC zone {zone!r}")
                    for i, a in enumerate(names) for b in names[i + 1:]]
            enclave = policy.dealer_enclave(zone)
            dealer = _enclave_name(policy, enclave) if enclave else policy.dealer_endpoint(zone)[0]
            out += [Collusion([p, dealer], f"every value opened in a multiplication in MPC zone {zone!r}, "
                              "from the dealer's triples") for p in names]
        elif isinstance(z, HeZone):
            out += [Collusion([z.party, _enclave_name(policy, tee)], f"every ciphertext of HE zone {zone!r} (the "
                              "enclave holds its key)")
                    for tee in policy.zones_of(TeeZone)]
    return out
