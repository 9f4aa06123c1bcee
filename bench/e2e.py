"""End-to-end benchmark: each plan against the Hugging Face model called directly, on the same inputs.

Prints a table; `--json FILE` writes one flat record per (plan, input).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cost import ZAMA_FHE_PER_TOKEN, ZAMA_NEEDED_PER_TOKEN, Prices, cpu_seconds, priced  # noqa: E402
from bench.records import write_records  # noqa: E402
from hsi.models.registry import load_model  # noqa: E402
from hsi.policy import load_policy  # noqa: E402
from orchestrator.launcher import running, zones_up  # noqa: E402
from orchestrator.netns import PROFILES  # noqa: E402
from orchestrator.reference import (  # noqa: E402
    compare_embeddings,
    compare_tokens,
    reference_embedding,
    reference_generate,
)
from orchestrator.runtime import Runtime  # noqa: E402
from zones.mpc.fss import limit  # noqa: E402

SENTENCES = [
    # 32 tokens: the target length for private-minilm
    "Patient is a 67-year-old man with type 2 diabetes, hypertension and stage 3 chronic kidney disease; admitted "
    "today with acute chest pain.",
    "The account holder disputes two card payments made in Lisbon on the 3rd and 4th of March.",
    "Can you remind me to water the plants tomorrow morning?",
    "Post-operative day two: afebrile, wound clean and dry, tolerating oral intake, plan discharge tomorrow.",
]
POOL_ELEMENTS = 4_000_000  # `+pool` variants: DCF keys dealt ahead for up to this many elements (~3 GB a party)
PROMPTS = ["Write a haiku about the sea.", "Explain what a mortgage is in one sentence."]
PLANS = ["plain-minilm", "plain-smollm2", "all-mpc-minilm", "private-minilm", "enclave-minilm", "all-mpc-smollm2",
         "selective-smollm2", "private-smollm2"]


def _hf_embed(model: str, text: str) -> dict[str, Any]:
    start = time.perf_counter()
    reference_embedding(model, text)
    return {"wall_s": time.perf_counter() - start}


def client_records(policy_path: str | Path, name: str, new_tokens: int, network: str,
                   inputs: int | None = None, sessions: list[int] | None = None,
                   idle_s: float = 0.0) -> list[dict[str, Any]]:
    """As the client, with the policy's zones running: the plan's records and HF's on the benchmark inputs (the
    first `inputs` of them, or all), each request after `idle_s` seconds of rest; each plan record with the CPU
    seconds (`cpu_s`) its run took in this process and in every zone process of `sessions` (their session ids)."""
    rest = {"idle_s": idle_s} if idle_s else {}
    policy = load_policy(policy_path)

    def cpu() -> float:
        return time.process_time() + cpu_seconds(sessions or [])

    records: list[dict[str, Any]] = []
    load_model(policy.model.name)  # warm the reference outside the timings
    rt = Runtime(policy)
    try:
        rt.load()
        if policy.model.name == "minilm-l6":
            rt.embed(SENTENCES[0] if idle_s else "warm-up")  # with rest: keys dealt ahead for such a sentence
            for text in SENTENCES[:inputs]:
                want = reference_embedding(policy.model.name, text)
                hf = _hf_embed(policy.model.name, text)
                time.sleep(idle_s)
                cpu0 = cpu()
                r = rt.embed(text)
                cpu_s = cpu() - cpu0
                acc = compare_embeddings(r.output["embedding"], want)
                base = {"model": policy.model.name, "network": network, "tokens": r.output["tokens"]}
                records.append({"plan": "hf-direct", **base, "wall_s": round(hf["wall_s"], 4),
                                "time_by_zone": {}, "bytes_by_link": {}, "cosine": 1.0})
                records.append({"plan": name, **base, **r.metrics, "cosine": acc["cosine"],
                                "max_abs_err": acc["max_abs_err"], "cpu_s": round(cpu_s, 2), **rest})
        else:
            for prompt in PROMPTS[:inputs]:
                ids = rt.prompt_ids(prompt)
                start = time.perf_counter()
                want = reference_generate(policy.model.name, ids, new_tokens)
                hf_s = time.perf_counter() - start
                time.sleep(idle_s)
                cpu0 = cpu()
                r = rt.generate(prompt, new_tokens)
                cpu_s = cpu() - cpu0
                match = compare_tokens(r.output["token_ids"], want)
                base = {"model": policy.model.name, "network": network, "tokens": len(ids)}
                records.append({"plan": "hf-direct", **base, "wall_s": round(hf_s, 4),
                                "per_token_s": round(hf_s / max(1, len(want)), 4), "time_by_zone": {},
                                "bytes_by_link": {}, "token_match": len(want)})
                records.append({"plan": name, **base, **r.metrics, "token_match": match["token_match"],
                                "new_tokens": len(r.output["token_ids"]), "cpu_s": round(cpu_s, 2), **rest})
    finally:
        rt.close()
    return records


def _with_comparisons(name: str, comparisons: str, work: Path) -> tuple[Path, str]:
    """A copy of a shipped policy whose MPC zones compare by `comparisons`, and the plan's name in records."""
    data = yaml.safe_load((ROOT / "deploy" / "policies" / f"{name}.yaml").read_text())
    zones = [z for z in data["zones"].values() if z.get("kind") == "mpc"]
    if not zones:
        raise SystemExit(f"{name} has no MPC zone: --comparisons does not apply")
    how, plus, ahead = comparisons.partition("+")
    most = limit(how)  # refuses a name it does not know
    if plus and (ahead != "pool" or not most):
        raise ValueError(f"a DCF way takes `+pool` (keys dealt ahead) and nothing else, not {comparisons!r}")
    for z in zones:
        z["comparisons"] = "dcf" if most else "circuit"
        z.pop("dcf_max_elements", None)  # the shipped bound, if any, gives way to the one named here
        if 0 < most < sys.maxsize:
            z["dcf_max_elements"] = most
        if plus:
            z["dcf_pool_elements"] = POOL_ELEMENTS
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, f"{name}+{comparisons}"


def bench_plan(name: str, new_tokens: int, network: str, inputs: int | None = None,
               comparisons: str | None = None, idle_s: float = 0.0) -> list[dict[str, Any]]:
    """Run one shipped policy on the benchmark inputs, its zones on loopback or one network namespace per party
    under a network profile (orchestrator/netns.py); records for the plan and for HF called directly. With
    `comparisons`, the policy's MPC zones compare that way and the plan is recorded as `name+comparisons`."""
    if comparisons:
        with tempfile.TemporaryDirectory(prefix="hsi-bench-policy-", dir=ROOT / ".hsi") as tmp:
            path, label = _with_comparisons(name, comparisons, Path(tmp))
            return _bench_policy(path, label, new_tokens, network, inputs, idle_s)
    return _bench_policy(ROOT / "deploy" / "policies" / f"{name}.yaml", name, new_tokens, network, inputs, idle_s)


def _bench_policy(path: Path, name: str, new_tokens: int, network: str, inputs: int | None,
                  idle_s: float) -> list[dict[str, Any]]:
    if network == "loopback":
        with zones_up(path):
            pids = running(load_policy(path)) or {}
            return client_records(path, name, new_tokens, network, inputs, [os.getsid(p) for p in pids.values()],
                                  idle_s)
    from orchestrator.netns import netns_deployment

    with tempfile.TemporaryDirectory(prefix=f"hsi-bench-{name}-") as work, \
            netns_deployment(path, work, network, startup_s=600.0) as dep:
        code = (f"import json, sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom bench.e2e import client_records\n"
                f"print(json.dumps(client_records({str(dep.policy)!r}, {name!r}, {new_tokens}, {network!r}, "
                f"{inputs!r}, {[p.pid for p in dep.procs.values()]!r}, {idle_s!r})))\n")  # start.sh: a session
        out = dep.client_python(code, timeout=6 * 3600)
        records: list[dict[str, Any]] = json.loads(out.strip().splitlines()[-1])
        for r in records:
            r["shaping"] = dep.shaping
        return records


def print_table(records: list[dict[str, Any]]) -> None:
    """One line per (plan, model): medians over the inputs."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title="end-to-end (medians over inputs)")
    for col in ("plan", "model", "network", "n", "wall s", "per token s", "bytes between parties", "accuracy"):
        t.add_column(col)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["plan"], r["model"], r["network"]), []).append(r)
    for (plan, model, _), rs in groups.items():
        per_tok = [r["per_token_s"] for r in rs if r.get("per_token_s")]
        acc = (f"cosine {min(r['cosine'] for r in rs):.6f}" if "cosine" in rs[0]
               else f"token_match {min(r['token_match'] for r in rs)}")
        nbytes = statistics.median(sum(r["bytes_by_link"].values()) for r in rs)
        t.add_row(plan, model, rs[0]["network"], str(len(rs)), f"{statistics.median(r['wall_s'] for r in rs):.3f}",
                  f"{statistics.median(per_tok):.4f}" if per_tok else "-", f"{nbytes:,.0f}", acc)
    Console().print(t)


def add_cost(records: list[dict[str, Any]], prices: Prices) -> None:
    """Price every plan record that measured its CPU: per embedding, or per generated token."""
    for r in records:
        if "cpu_s" in r:
            r.update(priced(r, r["cpu_s"], prices, int(r.get("new_tokens", 1))))


def print_costs(records: list[dict[str, Any]]) -> None:
    """One line per (plan, network): medians of CPU, bytes sent and USD per output, beside Zama's FHE estimate."""
    from rich.console import Console
    from rich.table import Table

    priced_records = [r for r in records if "usd_per_output" in r]
    if not priced_records:
        return
    first = priced_records[0]
    t = Table(title=f"cost per embedding or generated token at ${first['usd_per_core_hour']}/core-hour, "
                    f"${first['usd_per_gb']}/GB (Zama's estimate for a fully homomorphic LLM: "
                    f"${ZAMA_FHE_PER_TOKEN:,.0f}/token today, ${ZAMA_NEEDED_PER_TOKEN} needed)")
    for col in ("plan", "network", "CPU s", "GB sent", "USD per output"):
        t.add_column(col)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in priced_records:
        groups.setdefault((r["plan"], r["network"]), []).append(r)
    for (plan, network), rs in groups.items():
        t.add_row(plan, network, f"{statistics.median(r['cpu_s'] for r in rs):.1f}",
                  f"{statistics.median(r['sent_bytes'] for r in rs) / 1e9:.3f}",
                  f"{statistics.median(r['usd_per_output'] for r in rs):.6f}")
    Console().print(t)


def main() -> int:
    """Run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--plans", nargs="*", default=PLANS)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--network", nargs="*", default=["loopback"], choices=["loopback", *PROFILES],
                    help="where the parties run: loopback, or a network namespace each under the lan (0.2 ms, "
                         "10 Gbit/s), wan (40 ms, 100 Mbit/s), wan-latency (40 ms, 1 Gbit/s) or wan-bandwidth "
                         "(0 ms, 100 Mbit/s) profile (needs root); several run side by side")
    ap.add_argument("--inputs", type=int, help="only the first N sentences / prompts (all by default)")
    ap.add_argument("--comparisons", nargs="+", default=["policy"],
                    help="how the MPC zones compare: `policy` (as it says), `circuit`, `dcf` or `dcf:N` (DCF keys for "
                         "comparisons of at most N elements), a DCF way with `+pool` (keys dealt at each session's end "
                         "for the next); each way named runs, recorded as plan+way")
    ap.add_argument("--idle-s", type=float, default=0.0,
                    help="seconds the client waits before each measured request (the zones' idle time, in which "
                         "`+pool` ways deal the next keys)")
    ap.add_argument("--usd-core-hour", type=float, default=Prices().core_hour,
                    help="price of a CPU core-hour for the cost per output (default: %(default)s)")
    ap.add_argument("--usd-gb", type=float, default=Prices().gb,
                    help="price of a GB sent between parties (default: %(default)s)")
    ap.add_argument("--json", type=Path, help="write the records to this file")
    args = ap.parse_args()
    prices = Prices(args.usd_core_hour, args.usd_gb)
    # SIGTERM (`timeout`, a job runner) unwinds like Ctrl-C: the zones, namespaces and firewall rule go too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    torch.set_num_threads(2)
    records: list[dict[str, Any]] = []
    for plan in args.plans:
        for network in args.network:
            for how in args.comparisons:
                done = bench_plan(plan, args.new_tokens, network, args.inputs, None if how == "policy" else how,
                                  args.idle_s)
                add_cost(done, prices)
                print_table(done)
                print_costs(done)  # a long run shows each plan as it ends, and keeps it should a later one fail
                records += done
                write_records(args.json, records)
    if len(args.plans) * len(args.network) * len(args.comparisons) > 1:
        print_table(records)
        print_costs(records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
