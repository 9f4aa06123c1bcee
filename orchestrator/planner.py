"""The planner: model graph + policy -> a Plan of stages, conversions, privacy report and cost estimate."""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from orchestrator import cost
from orchestrator.calibration import CalibrationError, load_calibration, partial_output_bound, tensor_bound
from orchestrator.conversions import conversion, conversion_enclave
from orchestrator.ir import ELIGIBLE_KINDS, Graph, Op, OpType, ZoneKind
from orchestrator.policy import HeZone, MpcZone, Policy, TeeZone
from zones.common.ckks.packing import complex_lane_packing
from zones.common.masking import hiding_bits, prescale_for


class PlanError(ValueError):
    """The policy cannot be applied to the model; the message names the rule, op and party at fault."""


@dataclass(frozen=True)
class Stage:
    """A run of consecutive ops in one zone."""

    index: int
    zone: str
    kind: str
    parties: list[str]
    ops: list[str]
    inputs: list[str]    # tensors read from outside the stage
    outputs: list[str]   # tensors read by later stages or returned to the client
    est_seconds: float
    # HE stages: linear outputs computed times 2^-k so a mask hides them (k per tensor; see masking.py)
    prescale: dict[str, int] = field(default_factory=dict)
    # MPC stages: outputs re-shared as bounded shares for an HE zone (tensor -> that HE zone)
    reshare: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Conversion:
    """A tensor crossing from one stage's zone to another's (or from/to the client)."""

    tensor: str
    from_stage: int | None  # None: a graph input at the client
    to_stage: int | None    # None: a graph output returned to the client
    from_zone: str
    to_zone: str
    kind: str               # "<from kind>-><to kind>"
    how: str
    est_bytes: int
    hiding_bits: float | None = None   # he<->mpc: bits by which the statistical mask hides the tensor
    error_budget: float | None = None  # he<->mpc: bound on the absolute error the conversion adds
    prescale_bits: int = 0             # he->mpc: the tensor travels times 2^-prescale_bits


@dataclass(frozen=True)
class PartyView:
    """What one party sees in plaintext, and what it sees only encrypted or shared."""

    activations: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)
    ciphertexts: list[str] = field(default_factory=list)
    shares: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    """Everything the runtime and the zones need to run a model under a policy."""

    policy: str
    policy_digest: str
    model: str
    graph_digest: str
    client: str
    stages: list[Stage]
    conversions: list[Conversion]
    privacy: dict[str, PartyView]
    est_tokens: int
    est_seconds: float
    est_bytes: int
    warnings: list[str]
    calibration: dict[str, str] = field(default_factory=dict)  # MPC zone -> SHA-256 of its calibration

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-serialisable data."""
        return asdict(self)

    @functools.cached_property
    def digest(self) -> str:
        """SHA-256 of the plan; a zone refuses a runtime whose plan differs from its own. Computed once: every
        stage call carries it, and a 30-block plan takes ~30 ms to hash."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def stage_of(self, tensor: str) -> Stage | None:
        """The stage that produces `tensor` (None for a graph input)."""
        for s in self.stages:
            if tensor in s.ops:
                return s
        return None


CLIENT = "client"  # pseudo-zone of conversions to and from the runtime


def place(graph: Graph, policy: Policy) -> tuple[dict[str, str], list[str]]:
    """Op name -> zone by the first matching rule, and warnings; PlanError for unplaced ops and unknown names."""
    placement: dict[str, str] = {}
    used = [False] * len(policy.placement)
    problems = []
    warnings = []
    ineligible: dict[int, list[Op]] = {}
    for op in graph.ops:
        for i, rule in enumerate(policy.placement):
            if not fnmatch.fnmatchcase(op.name, rule.match):
                continue
            if rule.types is not None and op.type not in rule.types:
                continue
            used[i] = True
            if ZoneKind(policy.zones[rule.zone].kind) not in ELIGIBLE_KINDS[op.type]:
                ineligible.setdefault(i, []).append(op)
            placement[op.name] = rule.zone
            break
        else:
            problems.append(f"op {op.name!r} ({op.type.value}) matches no placement rule")
    for i, ops in ineligible.items():
        rule, op = policy.placement[i], ops[0]
        allowed = ", ".join(sorted(k.value for k in ELIGIBLE_KINDS[op.type]))
        more = f" (and {len(ops) - 1} more)" if len(ops) > 1 else ""
        problems.append(
            f"{policy.where('placement', i)}: rule places op {op.name!r} ({op.type.value}){more} in zone "
            f"{rule.zone!r} of kind {policy.zones[rule.zone].kind}, which cannot run it (allowed: {allowed})"
        )
    for i, rule in enumerate(policy.placement):
        if not used[i]:
            what = f"{rule.match!r}" + (f" of types {[t.value for t in rule.types]}" if rule.types else "")
            if not graph.match(rule.match):
                problems.append(f"{policy.where('placement', i, 'match')}: pattern {rule.match!r} matches no op "
                                f"of model {graph.model}")
            else:
                warnings.append(f"{policy.where('placement', i)}: rule {what} is shadowed: every op it matches is "
                                "placed by an earlier rule")
    if problems:
        raise PlanError("\n".join(problems))
    return placement, warnings


def _stages(graph: Graph, policy: Policy, placement: dict[str, str], tokens: int) -> list[Stage]:
    groups: list[tuple[str, list[Op]]] = []
    for op in graph.ops:
        zone = placement[op.name]
        if groups and groups[-1][0] == zone:
            groups[-1][1].append(op)
        else:
            groups.append((zone, [op]))
    consumers = graph.consumers()
    stage_of = {op.name: i for i, (_, ops) in enumerate(groups) for op in ops}
    widths = {op.name: op.shape[-1] if isinstance(op.shape[-1], int) else 1 for op in graph.ops}
    stages = []
    for i, (zone, ops) in enumerate(groups):
        names = {op.name for op in ops}
        inputs = sorted({t for op in ops for t in op.inputs if t not in names},
                        key=lambda t: (stage_of.get(t, -1), t))
        outputs = [op.name for op in ops
                   if op.name in graph.outputs or any(stage_of[c] != i for c in consumers.get(op.name, []))]
        kind = ZoneKind(policy.zones[zone].kind)
        est = sum(cost.op_seconds(op, kind, int(widths.get(op.inputs[0], 1)), tokens) for op in ops)
        stages.append(Stage(i, zone, kind.value, policy.zone_parties(zone), [op.name for op in ops], inputs,
                            outputs, round(est, 6)))
    return stages


def _conversions(graph: Graph, policy: Policy, stages: list[Stage], tokens: int) -> list[Conversion]:
    stage_by_tensor = {name: s for s in stages for name in s.ops}
    client_plain = ZoneKind.PLAIN
    out: list[Conversion] = []
    problems = []

    def add(tensor: str, src: Stage | None, dst: Stage | None) -> None:
        src_kind = ZoneKind(src.kind) if src else client_plain
        dst_kind = ZoneKind(dst.kind) if dst else client_plain
        src_zone = src.zone if src else CLIENT
        dst_zone = dst.zone if dst else CLIENT
        spec = conversion(src_kind, dst_kind)
        if src and dst:
            reason = spec.check(policy, src.zone, dst.zone)
            if reason:
                problems.append(f"tensor {tensor!r} must move {src_kind.value}->{dst_kind.value} from zone "
                                f"{src.zone!r} to {dst.zone!r}: impossible, {reason}")
        elif src_kind != dst_kind:
            other = src.zone if src else dst.zone  # type: ignore[union-attr]
            reason = spec.check(policy, other, other)
            if reason:
                problems.append(f"tensor {tensor!r} must move {src_kind.value}->{dst_kind.value} between the client "
                                f"and zone {other!r}: impossible, {reason}")
        producer = graph.op(tensor) if tensor in stage_by_tensor else None
        # the wire carries ciphertexts if either side is HE, shares if either side is MPC
        wire = next((k for k in (ZoneKind.HE, ZoneKind.MPC) if k in (src_kind, dst_kind)), src_kind)
        nbytes = cost.tensor_bytes(producer, wire, tokens) if producer else 8 * tokens
        out.append(Conversion(tensor, src.index if src else None, dst.index if dst else None, src_zone, dst_zone,
                              f"{src_kind.value}->{dst_kind.value}", spec.how, nbytes))

    for s in stages:
        for t in s.inputs:
            src = stage_by_tensor.get(t)
            if src is None or src.zone != s.zone:  # a zone keeps what it produced for its later stages
                add(t, src, s)
    for t in graph.outputs:
        add(t, stage_by_tensor[t], None)
    if problems:
        raise PlanError("\n".join(problems))
    return out


def ckks_conversion_error(scale_bits: int, mask_bits: int) -> float:
    """Absolute error one CKKS encryption or masked decryption with a +-2^mask_bits mask adds (per unit of
    prescale): the scheme's noise, 2^-(scale_bits - 19), and the double-precision encoding of values as large
    as the mask, 2^(mask_bits - 50).

    Measured at N=2^14, scale 2^35: a masked linear output (mask +-2^28) decrypts within 2e-5 of the unmasked
    ciphertext's value; a share masked with +-2^36, encrypted and unmasked, within 4.8e-5.
    """
    return 2.0 ** -(scale_bits - 19) + 2.0 ** (mask_bits - 50)


def _partial_bound(graph: Graph, calibration: dict[str, Any], tensor: str, slots: int, width: int) -> float:
    """The largest magnitude a slot of an HE tensor in the complex lane layout may take: a linear output's
    partial sums, a sum of such tensors the sum of their bounds, anything else its own bound."""
    op = None if tensor in graph.inputs else graph.op(tensor)
    if op is not None and op.type == OpType.LINEAR:
        return partial_output_bound(calibration, op, slots, width)
    if op is not None and op.type == OpType.ADD:
        return sum(max(tensor_bound(calibration, t), _partial_bound(graph, calibration, t, slots, width))
                   for t in op.inputs)
    return tensor_bound(calibration, tensor)


def _masks(graph: Graph, policy: Policy, stages: list[Stage],
           conversions: list[Conversion]) -> tuple[list[Stage], list[Conversion]]:
    """Choose each he<->mpc mask's prescale; state its hiding bits and error budget; refuse weak masks."""
    problems: list[str] = []
    prescale: dict[int, dict[str, int]] = {}
    reshare: dict[int, dict[str, str]] = {}
    out = []
    for c in conversions:
        if c.kind not in ("he->mpc", "mpc->he"):
            out.append(c)
            continue
        he_name, mpc_name = (c.from_zone, c.to_zone) if c.kind == "he->mpc" else (c.to_zone, c.from_zone)
        he, mpc = policy.zones[he_name], policy.zones[mpc_name]
        assert isinstance(he, HeZone) and isinstance(mpc, MpcZone)
        try:
            calibration = load_calibration(policy.model.name, graph, mpc.calibration)
            bound = tensor_bound(calibration, c.tensor)
            single = complex_lane_packing(he)
            if c.kind == "he->mpc" and single is not None:
                # a one-token tensor leaves HE with its lanes unsummed: the enclave sees every lane's partial sum
                bound = max(bound, _partial_bound(graph, calibration, c.tensor, single.slots, single.width))
        except CalibrationError as e:
            problems.append(f"tensor {c.tensor!r} ({c.kind}): {e}")
            continue
        step = 2.0 ** -mpc.fixed_point_bits
        if c.kind == "he->mpc":
            mask = he.mask_bits
            k = prescale_for(mask, bound, he.min_hiding_bits)
            if k and graph.op(c.tensor).type != OpType.LINEAR:
                problems.append(f"tensor {c.tensor!r} (up to {bound:.3g}) needs mask_bits "
                                f"{mask + k} of zone {he_name!r} to be hidden by {he.min_hiding_bits} bits; "
                                "only a linear output can be prescaled to fit the CKKS modulus")
                continue
            if k:
                prescale.setdefault(c.from_stage, {})[c.tensor] = k  # type: ignore[arg-type]
            bits = hiding_bits(mask + k, bound)
            budget = 2.0 ** k * ckks_conversion_error(he.ckks.scale_bits, mask) + step
        else:
            k = 0
            reshare.setdefault(c.from_stage, {})[c.tensor] = he_name  # type: ignore[arg-type]
            bits = hiding_bits(he.reshare_mask_bits, bound)
            budget = ckks_conversion_error(he.ckks.scale_bits, he.reshare_mask_bits) + step
        if bits < he.min_hiding_bits:
            problems.append(f"tensor {c.tensor!r} ({c.kind}, up to {bound:.3g}) is hidden by only {bits:.1f} bits; "
                            f"zone {he_name!r} requires {he.min_hiding_bits} (raise its mask bits)")
        out.append(replace(c, hiding_bits=round(bits, 2), error_budget=float(f"{budget:.3g}"), prescale_bits=k))
    if problems:
        raise PlanError("\n".join(problems))
    stages = [replace(s, prescale=prescale.get(s.index, {}), reshare=reshare.get(s.index, {})) for s in stages]
    return stages, out


def _privacy(graph: Graph, policy: Policy, stages: list[Stage], conversions: list[Conversion]) -> dict[str, PartyView]:
    views: dict[str, dict[str, set[str]]] = {
        p: {"activations": set(), "weights": set(), "ciphertexts": set(), "shares": set()} for p in policy.parties
    }
    enclaves = {n: z for n, z in policy.zones.items() if isinstance(z, TeeZone)}
    for name, z in enclaves.items():
        views[f"{z.party} (enclave {name})"] = {"activations": set(), "weights": set(), "ciphertexts": set(),
                                                "shares": set()}
    client = views[policy.client]
    client["activations"].update(graph.inputs)
    # The owner holds every weight of its model in plaintext.
    views[policy.model.owner]["weights"].update(w for op in graph.ops for w in op.weights)
    for s in stages:
        kind = ZoneKind(s.kind)
        tensors = set(s.inputs) | set(s.ops)
        weights = {w for name in s.ops for w in graph.op(name).weights}
        if kind == ZoneKind.PLAIN:
            views[s.parties[0]]["activations"] |= tensors
            views[s.parties[0]]["weights"] |= weights
        elif kind == ZoneKind.TEE:
            enclave = views[f"{s.parties[0]} (enclave {s.zone})"]
            enclave["activations"] |= tensors
            enclave["weights"] |= weights
        elif kind == ZoneKind.HE:
            views[s.parties[0]]["ciphertexts"] |= tensors
            views[s.parties[0]]["weights"] |= weights  # the HE host multiplies by plaintext weights
        else:
            for p in s.parties:
                views[p]["shares"] |= tensors
    for c in conversions:
        if c.to_stage is None:  # returned to the client
            client["activations"].add(c.tensor)
        if c.kind == "he->tee":  # the enclave receives the ciphertext it decrypts
            views[f"{policy.zones[c.to_zone].party} (enclave {c.to_zone})"]["ciphertexts"].add(c.tensor)  # type: ignore[union-attr]
        if c.kind in ("he->mpc", "mpc->he"):
            he, mpc = (c.from_zone, c.to_zone) if c.kind == "he->mpc" else (c.to_zone, c.from_zone)
            tee, party = conversion_enclave(policy, he, mpc)
            enclave = views[f"{party} (enclave {tee})"]
            enclave["shares"].add(c.tensor)  # it sees the masked value: one party's bounded share
            if c.kind == "he->mpc":
                enclave["ciphertexts"].add(c.tensor)
            else:
                views[policy.zones[he].party]["shares"].add(c.tensor)  # type: ignore[union-attr]  # the mask
    return {p: PartyView(**{k: sorted(v) for k, v in view.items()}) for p, view in views.items()}


def _enforce(graph: Graph, policy: Policy, privacy: dict[str, PartyView]) -> None:
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


def _mpc_checks(graph: Graph, policy: Policy, stages: list[Stage]) -> dict[str, str]:
    """Refuse MPC stages whose weights the owner cannot share; the digest of each MPC zone's calibration."""
    problems, digests = [], {}
    for s in stages:
        z = policy.zones[s.zone]
        if not isinstance(z, MpcZone):
            continue
        weighted = [name for name in s.ops if graph.op(name).weights]
        if weighted and policy.model.owner not in z.parties:
            problems.append(f"MPC zone {s.zone!r} runs op {weighted[0]!r}, which needs the model's weights, but the "
                            f"model owner {policy.model.owner!r} is not one of its parties and cannot share them")
        if s.zone not in digests:
            try:
                data = load_calibration(policy.model.name, graph, z.calibration)
            except CalibrationError as e:
                problems.append(str(e))
                continue
            digests[s.zone] = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    if problems:
        raise PlanError("\n".join(problems))
    return digests


def _warnings(policy: Policy) -> list[str]:
    out = []
    for name, z in policy.zones.items():
        if getattr(z, "ckks", None) is not None and z.ckks.allow_insecure:  # type: ignore[union-attr]
            out.append(f"zone {name!r}: allow_insecure is set; CKKS parameters may give less than "
                       f"{z.ckks.security}-bit security")  # type: ignore[union-attr]
        if isinstance(z, MpcZone) and z.allow_insecure_dealer:
            out.append(f"zone {name!r}: allow_insecure_dealer is set; the dealer may be a compute party")
    return out


def make_plan(graph: Graph, policy: Policy, tokens: int = 32) -> Plan:
    """The plan of running `graph` under `policy`; PlanError naming what is wrong when it cannot be run."""
    if graph.model != policy.model.name:
        raise PlanError(f"policy {policy.name!r} is for model {policy.model.name!r}, not {graph.model!r}")
    placement, placement_warnings = place(graph, policy)
    stages = _stages(graph, policy, placement, tokens)
    conversions = _conversions(graph, policy, stages, tokens)
    stages, conversions = _masks(graph, policy, stages, conversions)
    privacy = _privacy(graph, policy, stages, conversions)
    _enforce(graph, policy, privacy)
    calibration = _mpc_checks(graph, policy, stages)
    return Plan(
        policy=policy.name,
        policy_digest=policy.digest(),
        model=graph.model,
        graph_digest=graph.digest(),
        client=policy.client,
        stages=stages,
        conversions=conversions,
        privacy=privacy,
        est_tokens=tokens,
        est_seconds=round(sum(s.est_seconds for s in stages), 6),
        est_bytes=sum(c.est_bytes for c in conversions),
        warnings=placement_warnings + _warnings(policy),
        calibration=calibration,
    )

