"""Masks of the he<->mpc conversions: the prescale of each, the bits by which it hides, its error budget."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hsi.calibration import CalibrationError, load_calibration, partial_output_bound, tensor_bound
from hsi.ckks.packing import complex_lane_packing
from hsi.ir import Graph, OpType
from hsi.masking import hiding_bits, prescale_for
from hsi.plan.types import Conversion, PlanError, Stage
from hsi.policy import HeZone, MpcZone, Policy


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


def choose_masks(graph: Graph, policy: Policy, stages: list[Stage],
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


