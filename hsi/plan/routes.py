"""Routes: every tensor that crosses from one zone to another (or from or to the client) as a conversion."""

from __future__ import annotations

from hsi import kinds
from hsi.conversions import conversion
from hsi.ir import Graph, ZoneKind
from hsi.plan.types import CLIENT, Conversion, PlanError, Stage
from hsi.policy import Policy


def routes(graph: Graph, policy: Policy, stages: list[Stage], tokens: int) -> list[Conversion]:
    """Every move of a tensor between zones (a zone keeps what it produced for its later stages), each checked
    against the conversion registry; PlanError naming every move that cannot be made."""
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
            reason = spec.refusal(policy, src.zone, dst.zone)
            if reason:
                problems.append(f"tensor {tensor!r} must move {src_kind.value}->{dst_kind.value} from zone "
                                f"{src.zone!r} to {dst.zone!r}: impossible, {reason}")
        elif src_kind != dst_kind:
            other = src.zone if src else dst.zone  # type: ignore[union-attr]
            reason = spec.refusal(policy, other, other)
            if reason:
                problems.append(f"tensor {tensor!r} must move {src_kind.value}->{dst_kind.value} between the client "
                                f"and zone {other!r}: impossible, {reason}")
        producer = graph.op(tensor) if tensor in stage_by_tensor else None
        # the wire carries the encoding of the higher-ranked side: ciphertexts if either is HE, else shares if MPC
        wire = max((src_kind, dst_kind), key=lambda k: kinds.spec(k).wire_rank)
        nbytes = kinds.spec(wire).tensor_bytes(producer, tokens, 0) if producer else 8 * tokens
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


