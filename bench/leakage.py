"""Measure a model's leakage (`make leakage`): the audit at each depth, the final tensor and the noise curve, written
to the data the planner reads (hsi/models/leakage/<model>.json) and to bench/results/leakage-<model>.json."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.records import commit, stamp  # noqa: E402
from hsi.leakage import packaged_path  # noqa: E402
from orchestrator.leakage.audit import FULL, Settings, audit  # noqa: E402
from orchestrator.leakage.noise import NOISE_DEPTH, NOISE_SETTINGS, SIGMAS, noise_curve  # noqa: E402

FINAL = {"minilm-l6": "pool", "smollm2-135m": "logits"}
RESULTS = ROOT / "bench" / "results"


def _load(path: Path, model: str) -> dict[str, Any]:
    """The model's data as shipped so far (measurements are merged in, depth by depth)."""
    if path.is_file():
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    return {"model": model, "tensors": {}, "noise": []}


def _save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def _record(path: Path, record: dict[str, Any]) -> None:
    """Append one stamped record to the model's bench/results list."""
    records: list[dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else []
    stamp([record])
    records.append(record)
    _save(path, records)  # type: ignore[arg-type]


def measure(model: str, depths: list[int], final: bool, noise: bool, settings: Settings = FULL,
            data_path: Path | None = None, results: Path = RESULTS) -> dict[str, Any]:
    """Run the asked audits and merge each into the model's data as soon as it is measured."""
    path = data_path or packaged_path(model)
    data = _load(path, model)
    bench = results / f"leakage-{model}.json"
    jobs: list[tuple[str, int | None]] = [("hidden", d) for d in depths] + ([(FINAL[model], None)] if final else [])
    for tensor, depth in jobs:
        start = time.perf_counter()
        result = audit(model, tensor, depth, settings)
        wall = round(time.perf_counter() - start, 1)
        key = str(result["depth"]) if tensor == "hidden" else "final"
        data = _load(path, model)  # as written now: another measurement may have run beside this one
        data["tensors"].setdefault(tensor, {})[key] = {
            "token_recovery": result["token_recovery"], "attacks": result["attacks"], "wall_s": wall,
            "eval_tokens": result["eval_tokens"], "eval_records": result["corpus"]["eval_records"]}
        data.update(commit=commit(), date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        if result["corpus"]["eval_records"] == FULL.eval:  # the corpus and size of the audits at full size
            data.update(corpus=result["corpus"], eval_tokens=result["eval_tokens"])
        _save(path, data)
        _record(bench, result | {"wall_s": wall})
        each = ", ".join(f"{n} {a['token_accuracy']:.4f}" for n, a in result["attacks"].items())
        print(f"{model} {tensor} depth {result['depth']}: token recovery {result['token_recovery']:.4f} ({each}) "
              f"in {wall} s", flush=True)
    if noise:
        curve = noise_curve(model, NOISE_DEPTH, SIGMAS, NOISE_SETTINGS)
        data = _load(path, model)
        data["noise"] = curve
        _save(path, data)
        _record(bench, {"model": model, "noise": data["noise"]})
        for n in data["noise"]:
            print(f"{model} noise sigma {n['sigma']}: token recovery {n['token_recovery']:.4f}, {n['fidelity']}",
                  flush=True)
    return data


def main() -> int:
    """Parse the arguments and measure."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, choices=sorted(FINAL))
    ap.add_argument("--depths", default="", help="comma-separated depths of the hidden state, e.g. 0,1,2,3,30")
    ap.add_argument("--final", action="store_true", help="also the pooled embedding / logits")
    ap.add_argument("--noise", action="store_true", help="also the Gaussian-noise defence curve")
    ap.add_argument("--eval", type=int, default=FULL.eval, help="private-like records attacked (default: %(default)s)")
    ap.add_argument("--out", type=Path, help="data file (default: the one shipped with hsi)")
    args = ap.parse_args()
    depths = [int(d) for d in args.depths.split(",") if d]
    measure(args.model, depths, args.final, args.noise, replace(FULL, eval=args.eval), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
