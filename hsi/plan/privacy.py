"""The privacy report: what each party (and each enclave) sees, and the policy's privacy rules enforced on it."""

from __future__ import annotations

import fnmatch
from typing import Any

from hsi import kinds
from hsi.conversions import conversion_enclave
from hsi.ir import Graph
from hsi.leakage import strongest
from hsi.plan.types import Conversion, PartyView, PlanError, Stage
from hsi.policy import Policy, TeeZone
from hsi.principal import Viewer

_FIELDS = ("activations", "weights", "ciphertexts", "shares")


def privacy_report(graph: Graph, policy: Policy, stages: list[Stage], conversions: list[Conversion],
                   leakage: dict[str, Any] | None = None) -> dict[str, PartyView]:
    """For every party (and every enclave, apart from its host), the tensors and weights it sees in plaintext,
    those it holds only encrypted or shared, and the measured token recovery of the plaintext it sees."""
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
    out = {}
    for v, view in views.items():
        seen = sorted(view["activations"])
        worst = strongest(graph, leakage, seen)
        out[str(v)] = PartyView(**{k: sorted(t) for k, t in view.items()},
                                token_recovery=round(worst.token_recovery, 4) if worst else None,
                                recovered_from=f"{worst.tensor}: {worst.measured_as}" if worst else None)
    return out


def _enclave(policy: Policy, zone: str) -> Viewer:
    return Viewer(policy.zone_parties(zone)[0], zone)


def enforce(graph: Graph, policy: Policy, privacy: dict[str, PartyView]) -> None:
    problems = []
    for i, c in enumerate(policy.privacy):
        for viewer, view in privacy.items():
            if viewer != c.party:
                continue
            if c.max_token_recovery is not None:
                problems += _recovery_problems(policy, i, view)
                continue
            assert c.ops is not None
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


def _recovery_problems(policy: Policy, rule: int, view: PartyView) -> list[str]:
    """Why a party's view breaks a `max_token_recovery` rule (nothing when it keeps to it)."""
    c = policy.privacy[rule]
    cap = c.max_token_recovery
    assert cap is not None
    where = policy.where("privacy", rule)
    if view.activations and view.recovered_from is None:
        return [f"{where}: no leakage is measured for model {policy.model.name!r}, so the token recovery of what "
                f"party {c.party!r} sees cannot be bounded; run `hsi leakage`"]
    if view.token_recovery is not None and view.token_recovery > cap:
        return [f"{where}: party {c.party!r} would see {view.recovered_from}, from which {view.token_recovery:.2f} "
                f"of the input tokens are recovered; the policy allows at most {cap:.2f}"]
    return []
