"""The privacy report: what each party (and each enclave) sees, and the policy's privacy rules enforced on it."""

from __future__ import annotations

import fnmatch

from hsi import kinds
from hsi.conversions import conversion_enclave
from hsi.ir import Graph
from hsi.plan.types import Conversion, PartyView, PlanError, Stage
from hsi.policy import Policy, TeeZone
from hsi.principal import Viewer

_FIELDS = ("activations", "weights", "ciphertexts", "shares")


def privacy_report(graph: Graph, policy: Policy, stages: list[Stage],
                   conversions: list[Conversion]) -> dict[str, PartyView]:
    """For every party (and every enclave, apart from its host), the tensors and weights it sees in plaintext
    and those it holds only encrypted or shared."""
    viewers = [Viewer(p) for p in policy.parties] + [Viewer(z.party, n) for n, z in policy.zones_of(TeeZone).items()]
    views: dict[Viewer, dict[str, set[str]]] = {v: {f: set() for f in _FIELDS} for v in viewers}
    client = views[Viewer(policy.client)]
    client["activations"].update(graph.inputs)
    # The owner holds every weight of its model in plaintext.
    views[Viewer(policy.model.owner)]["weights"].update(w for op in graph.ops for w in op.weights)
    for s in stages:
        spec = kinds.spec(s.kind)
        tensors = set(s.inputs) | set(s.ops)
        weights = {w for name in s.ops for w in graph.op(name).weights}
        for party in s.parties:
            view = views[Viewer(party, s.zone if spec.in_enclave else None)]
            view[spec.host_view] |= tensors
            if spec.sees_weights:
                view["weights"] |= weights
    for c in conversions:
        if c.to_stage is None:  # returned to the client
            client["activations"].add(c.tensor)
        if c.kind == "he->tee":  # the enclave receives the ciphertext it decrypts
            views[_enclave(policy, c.to_zone)]["ciphertexts"].add(c.tensor)
        if c.kind in ("he->mpc", "mpc->he"):
            he, mpc = (c.from_zone, c.to_zone) if c.kind == "he->mpc" else (c.to_zone, c.from_zone)
            tee, party = conversion_enclave(policy, he, mpc)
            enclave = views[Viewer(party, tee)]
            enclave["shares"].add(c.tensor)  # it sees the masked value: one party's bounded share
            if c.kind == "he->mpc":
                enclave["ciphertexts"].add(c.tensor)
            else:
                views[Viewer(policy.zone_parties(he)[0])]["shares"].add(c.tensor)  # the mask
    return {str(v): PartyView(**{k: sorted(t) for k, t in view.items()}) for v, view in views.items()}


def _enclave(policy: Policy, zone: str) -> Viewer:
    return Viewer(policy.zone_parties(zone)[0], zone)


def enforce(graph: Graph, policy: Policy, privacy: dict[str, PartyView]) -> None:
    problems = []
    for i, c in enumerate(policy.privacy):
        for viewer, view in privacy.items():
            if viewer != c.party:
                continue
            if c.never_sees == "activations":
                seen = [t for t in view.activations if fnmatch.fnmatchcase(t, c.ops)]
            else:
                seen = [op.name for op in graph.ops
                        if fnmatch.fnmatchcase(op.name, c.ops) and set(op.weights) & set(view.weights)]
            if seen:
                more = f" (and {len(seen) - 1} more)" if len(seen) > 1 else ""
                problems.append(f"{policy.where('privacy', i)}: party {c.party!r} would see the plaintext "
                                f"{c.never_sees} of op {seen[0]!r}{more}, which the policy forbids")
    if problems:
        raise PlanError("\n".join(problems))


