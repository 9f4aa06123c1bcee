"""Rounds and bytes of a whole MPC forward, by op and by layer: where a private plan's WAN time goes.

MiniLM runs the issue's 32-token sentence from its first LayerNorm to the pooled embedding; SmolLM2 runs
its chat prompt (prefill), then one decode step from the KV cache. Every op after the embedding runs in MPC,
as under the all-mpc plans, each weight shared at its first use (as in a session). Counted per op: rounds
(frames one party waited for from the other, on the critical path), bytes between the compute parties, and
the dealer's traffic, apart; CrypTen's own round count (which also counts dealer messages) beside them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import torch

from bench.e2e import PROMPTS, SENTENCES
from hsi.models.executor import PlainExecutor, SessionState, StepContext
from hsi.models.registry import load_model
from zones.mpc.local import run_ops

MINILM_TEXT = SENTENCES[0]  # the end-to-end benchmark's 32-token sentence
SMOLLM2_PROMPT = PROMPTS[0]
KEYS = ("rounds", "party_rounds", "party_bytes", "dealer_bytes", "seconds")


def _layer(op_name: str) -> str:
    m = re.search(r"layers?\.(\d+)\.", op_name)
    return m.group(1) if m else "-"


def _summary(ops: list[dict[str, Any]]) -> dict[str, Any]:
    by_type: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_layer: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for o in ops:
        for key in KEYS:
            by_type[o["type"]][key] += o[key]
            by_layer[_layer(o["op"])][key] += o[key]
        by_type[o["type"]]["count"] += 1
    total = {key: sum(o[key] for o in ops) for key in KEYS}
    return {"by_type": {k: dict(v) for k, v in by_type.items()}, "by_layer": {k: dict(v) for k, v in by_layer.items()},
            "total": total}


def bench_forward(model: str, comparisons: str = "circuit") -> list[dict[str, Any]]:
    """Records of one MPC forward of `model` (MiniLM) or a prompt and one decode step (SmolLM2), comparisons
    by `comparisons` (MpcZone.comparisons)."""
    m = load_model(model)
    graph = m.graph
    first = graph.ops[0].name  # the embedding, computed by the client under every plan
    ops = [o.name for o in graph.ops[1:]]
    if graph.arch == "llama":
        text = m.tokenizer.apply_chat_template([{"role": "user", "content": SMOLLM2_PROMPT}], tokenize=False,
                                               add_generation_prompt=True)
    else:
        text = MINILM_TEXT
    ids = torch.tensor(m.tokenizer(text)["input_ids"])
    executor = PlainExecutor(graph.ops, m.weights())
    state = SessionState()
    env = executor.run({"input_ids": ids}, StepContext(0), state, [first, ops[-1]])
    jobs: list[tuple[list[str], dict[str, Any], int]] = [(ops, {first: env[first]}, 0)]
    want = [env[ops[-1]]]
    phases = ["forward" if graph.arch != "llama" else "prefill"]
    if graph.arch == "llama":
        nxt = env[ops[-1]].reshape(1).long()
        step = executor.run({"input_ids": nxt}, StepContext(len(ids)), state, [first, ops[-1]])
        jobs.append((ops, {first: step[first]}, len(ids)))
        want.append(step[ops[-1]])
        phases.append("decode step")
    records = []
    results = run_ops(model, jobs, comparisons=comparisons)
    for phase, (got, figures), expected, (_, _, offset) in zip(phases, results, want, jobs, strict=True):
        err = float((got.double() - expected.double()).abs().max())
        records.append({"op": "forward", "model": model, "comparisons": comparisons, "phase": phase,
                        "tokens": len(ids) if offset == 0 else 1, "position": offset, "parties": 2,
                        "max_abs_err": err, **_summary(figures["ops"]),
                        "ops": figures["ops"]})
    return records


def print_forward(record: dict[str, Any]) -> None:
    """Two tables of one forward: by op type, and by layer."""
    from rich.console import Console
    from rich.table import Table

    total = record["total"]
    title = (f"{record['model']} {record['phase']} ({record['tokens']} tokens, {record['comparisons']} comparisons): "
             f"{total['party_rounds']:.0f} rounds, "
             f"{total['party_bytes'] / 1e6:.1f} MB between parties, {total['dealer_bytes'] / 1e6:.1f} MB with the "
             f"dealer; CrypTen counts {total['rounds']:.0f} rounds; max abs err {record['max_abs_err']:.2e}")
    for key, label in (("by_type", "op type"), ("by_layer", "layer")):
        t = Table(title=title if key == "by_type" else None)
        for col in (label, "ops", "rounds", "% rounds", "MB", "% MB", "dealer MB", "CrypTen rounds", "s"):
            t.add_column(col)
        for name, f in sorted(record[key].items(), key=lambda kv: -kv[1]["party_rounds"]):
            t.add_row(name, f"{f['count']:.0f}" if "count" in f else "", f"{f['party_rounds']:.0f}",
                      f"{100 * f['party_rounds'] / max(total['party_rounds'], 1):.1f}",
                      f"{f['party_bytes'] / 1e6:.1f}", f"{100 * f['party_bytes'] / max(total['party_bytes'], 1):.1f}",
                      f"{f['dealer_bytes'] / 1e6:.1f}", f"{f['rounds']:.0f}", f"{f['seconds']:.2f}")
        Console(width=160).print(t)
