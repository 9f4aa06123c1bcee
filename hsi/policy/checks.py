"""Checks of a policy that span its sections: every name used is defined, ports are distinct, roles make sense."""

from __future__ import annotations

from hsi.policy.schema import Policy
from hsi.policy.zones import ENCLAVE_DEALER, MpcZone, TeeZone


def cross_checks(p: Policy) -> list[str]:
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
            tees = list(p.zones_of(TeeZone))
            if z.dealer == ENCLAVE_DEALER:
                if ENCLAVE_DEALER in p.parties:
                    problems.append(f"{p.where('zones', zname, 'dealer')}: 'enclave' names both a party and the "
                                    "dealer's place inside the tee zone; rename the party")
                elif len(tees) == 1:
                    ports.append((p.dealer_endpoint(zname)[0], z.dealer_port, ("zones", zname, "dealer_port")))
                else:
                    problems.append(f"{p.where('zones', zname, 'dealer')}: dealer: enclave runs the dealer inside "
                                    f"the policy's tee zone; the policy has {len(tees)} ({', '.join(tees) or 'none'})")
            elif z.dealer not in p.parties:
                problems.append(f"{p.where('zones', zname, 'dealer')}: unknown party {z.dealer!r}")
            else:
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

