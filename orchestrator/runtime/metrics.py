"""What a run measured (time, bytes, MPC rounds), its JSON result, and the receipts its privacy report misses."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from hsi import kinds
from hsi.ir import ZoneKind
from hsi.plan import Plan
from hsi.policy import Policy
from hsi.principal import Viewer

# An MPC stage's figures: the slowest party's rounds (CrypTen's count; frames waited for from the other compute
# parties, and from the dealer), and the bytes of all parties (CrypTen's count; sent to the other compute parties;
# exchanged with the dealer)
MPC_ROUNDS = ("rounds", "party_rounds", "dealer_rounds")
MPC_BYTES = ("bytes", "party_bytes", "dealer_bytes")
MPC_FIGURES = MPC_ROUNDS + MPC_BYTES


@dataclass
class Metrics:
    """Time per zone (seconds of stage compute) and bytes per link of one run."""

    time_by_zone: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    bytes_by_link: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # per MPC zone: CrypTen's `rounds` and `bytes`, and the links' exact split (MPC_FIGURES)
    mpc: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    time_by_conversion: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    peak_held_bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def held(self, zone: str, n: int) -> None:
        """Note the bytes of session tensors a zone held after a stage (the run keeps the peak)."""
        self.peak_held_bytes[zone] = max(self.peak_held_bytes[zone], n)

    def to_dict(self, wall_s: float) -> dict[str, Any]:
        """The `metrics` block of a run's JSON result."""
        out: dict[str, Any] = {"wall_s": round(wall_s, 4),
                               "time_by_zone": {k: round(v, 4) for k, v in sorted(self.time_by_zone.items())},
                               "bytes_by_link": dict(sorted(self.bytes_by_link.items()))}
        if self.time_by_conversion:  # seconds the senders spent moving tensors, by conversion kind
            out["time_by_conversion"] = {k: round(v, 4) for k, v in sorted(self.time_by_conversion.items())}
        if self.peak_held_bytes:  # the most bytes of the session's tensors a zone held after any stage
            out["peak_held_bytes"] = dict(sorted(self.peak_held_bytes.items()))
        if self.mpc:
            out["mpc"] = {z: {k: self.mpc[z][k] for k in MPC_FIGURES} for z in sorted(self.mpc)}
        return out


@dataclass
class RunResult:
    """The output of a run, its metrics and what every zone received."""

    output: dict[str, Any]
    metrics: dict[str, Any]
    privacy: dict[str, Any]
    receipt: Any = None  # the signed privacy receipt (`hsi receipt verify`): a dict, or a list (one per pass)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object `hsi embed/generate --json` prints (without `reference`)."""
        return {"output": self.output, "metrics": self.metrics, "privacy": self.privacy, "receipt": self.receipt}


def merge_metrics(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics of several runs added up (time per zone, bytes per link, MPC rounds and bytes, conversions)."""
    out: dict[str, Any] = {"wall_s": round(sum(r.get("wall_s", 0.0) for r in runs), 4)}
    for key in ("time_by_zone", "bytes_by_link", "time_by_conversion"):
        acc: dict[str, float] = defaultdict(float)
        for r in runs:
            for k, v in r.get(key, {}).items():
                acc[k] += v
        out[key] = dict(acc)
    mpc: dict[str, dict[str, int]] = {}
    for r in runs:
        for zone, m in r.get("mpc", {}).items():
            z = mpc.setdefault(zone, dict.fromkeys(MPC_FIGURES, 0))
            for k in MPC_FIGURES:
                z[k] += m.get(k, 0)
    out["mpc"] = mpc
    return out


def merge_passes(passes: list[RunResult]) -> RunResult:
    """Batched passes as one result: the embeddings in order, metrics added up, every pass's receipts and a
    receipt per pass."""
    output = {"embeddings": [e for p in passes for e in p.output["embeddings"]],
              "tokens": [n for p in passes for n in p.output["tokens"]], "passes": len(passes)}
    privacy = {"report": passes[0].privacy["report"],
               "observed": [r for p in passes for r in p.privacy["observed"]],
               "mismatches": [m for p in passes for m in p.privacy["mismatches"]]}
    return RunResult(output, merge_metrics([p.metrics for p in passes]), privacy, [p.receipt for p in passes])


def observed_mismatches(plan: Plan, receipts: list[dict[str, Any]], policy: Policy) -> list[str]:
    """Receipts that the plan's privacy report does not account for (a party got more than planned)."""
    out = []
    field_name = {"plain": "activations", "ckks": "ciphertexts", "share": "shares", "sealed": "activations"}
    for r in receipts:
        spec = kinds.spec(policy.zones[r["zone"]].kind)
        viewer = str(Viewer(r["party"], r["zone"] if spec.in_enclave else None))
        view = plan.privacy.get(viewer)
        kind = field_name[r["encoding"]]
        if kind == "shares" and spec.kind == ZoneKind.PLAIN:
            kind = "activations"  # a plain zone combines the shares it receives
        listed = getattr(view, kind) if view else []
        if r["name"] not in listed:
            out.append(f"{viewer} received {r['name']!r} as {r['encoding']}, which the privacy report does not list")
    return out
