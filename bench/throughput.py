"""Throughput of batched passes: embeddings per minute for batches of texts under a plan, on loopback or across
network namespaces (`--network lan wan`). Prints a table; `--json FILE` writes one record per (network, batch).

The texts are the leakage audit's private-like records (clinical notes, bank messages), the first `batch` of
them per pass; every embedding is checked against the plaintext model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.records import stamp, write_records  # noqa: E402
from hsi.policy import load_policy  # noqa: E402
from orchestrator.launcher import zones_up  # noqa: E402
from orchestrator.leakage.corpus import private_records  # noqa: E402
from orchestrator.reference import compare_embeddings, reference_embedding  # noqa: E402
from orchestrator.runtime import Runtime  # noqa: E402

BATCHES = (1, 8, 32)


def client_records(policy_path: str | Path, plan: str, network: str, batches: list[int]) -> list[dict[str, Any]]:
    """As the client, with the policy's zones running: one pass per batch size, its figures and accuracy."""
    policy = load_policy(policy_path)
    texts = [r.text for r in private_records()]
    records = []
    rt = Runtime(policy)
    try:
        rt.load()
        rt.embed("warm-up")
        for size in batches:
            batch = texts[:size]
            start = time.perf_counter()
            r = rt.embed_batch(batch)
            wall = time.perf_counter() - start
            cos = [compare_embeddings(e, reference_embedding(policy.model.name, t))["cosine"]
                   for e, t in zip(r.output["embeddings"], batch, strict=True)]
            mpc = r.metrics.get("mpc", {})
            records.append({
                "bench": "throughput", "plan": plan, "network": network, "batch": size, "passes": r.output["passes"],
                "tokens": sum(r.output["tokens"]), "width": max(r.output["tokens"]), "wall_s": round(wall, 2),
                "embeddings_per_min": round(60 * size / wall, 2),
                "mpc_rounds": sum(z["rounds"] for z in mpc.values()),  # CrypTen's counts
                "mpc_bytes": sum(z["bytes"] for z in mpc.values()),
                # counted on the links: between the compute parties, and with the dealer
                "party_rounds": sum(z.get("party_rounds", 0) for z in mpc.values()),
                "party_bytes": sum(z.get("party_bytes", 0) for z in mpc.values()),
                "dealer_bytes": sum(z.get("dealer_bytes", 0) for z in mpc.values()),
                "bytes_between_zones": sum(r.metrics["bytes_by_link"].values()),
                "min_cosine": round(min(cos), 6)})
            print(json.dumps(records[-1]), file=sys.stderr, flush=True)
    finally:
        rt.close()
    return records


def bench(plan: str, network: str, batches: list[int]) -> list[dict[str, Any]]:
    """Run the shipped policy `plan` on loopback or one network namespace per party (orchestrator/netns.py)."""
    path = ROOT / "deploy" / "policies" / f"{plan}.yaml"
    if network == "loopback":
        with zones_up(path):
            return client_records(path, plan, network, batches)
    from orchestrator.netns import netns_deployment

    with tempfile.TemporaryDirectory(prefix=f"hsi-throughput-{plan}-") as work, \
            netns_deployment(path, work, network, startup_s=600.0) as dep:
        code = (f"import json, sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom bench.throughput import client_records\n"
                f"print(json.dumps(client_records({str(dep.policy)!r}, {plan!r}, {network!r}, {batches!r})))\n")
        records: list[dict[str, Any]] = json.loads(dep.client_python(code, timeout=6 * 3600).strip().splitlines()[-1])
        for r in records:
            r["shaping"] = dep.shaping
        return records


def print_table(records: list[dict[str, Any]]) -> None:
    """One line per (plan, network, batch)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title="throughput of batched passes")
    for col in ("plan", "network", "batch", "tokens", "wall s", "embeddings/min", "MPC rounds", "MPC GB",
                "min cosine"):
        t.add_column(col)
    for r in records:
        t.add_row(r["plan"], r["network"], str(r["batch"]), str(r["tokens"]), f"{r['wall_s']:.1f}",
                  f"{r['embeddings_per_min']:.1f}", f"{r['mpc_rounds']:,}", f"{r['mpc_bytes'] / 1e9:.2f}",
                  f"{r['min_cosine']:.6f}")
    Console().print(t)


def main() -> int:
    """Run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", default="private-minilm", help="a shipped encoder policy (default: %(default)s)")
    ap.add_argument("--network", nargs="+", default=["loopback"], choices=["loopback", "lan", "wan"])
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)), help="batch sizes (default: %(default)s)")
    ap.add_argument("--json", type=Path, help="write the records to this file")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b]
    records: list[dict[str, Any]] = []
    for network in args.network:
        found = bench(args.plan, network, batches)
        stamp(found, network)
        records += found
    print_table(records)
    write_records(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
