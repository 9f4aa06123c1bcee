"""MPC op benchmark: every MPC kernel on activations captured from the plain zone, 2 parties + dealer.

Per op and size: wall time, communication rounds (frames one party waited for from the other), bytes
between the compute parties (summed), the dealer's bytes apart, CrypTen's own round count, and the max abs
error against the plain executor. `--layers`: a whole forward in MPC (MiniLM on a 32-token sentence;
SmolLM2's prompt, then one decode step), every op's rounds and bytes between the parties and with the dealer
(bench/mpc_layers.py). Then the all-MPC end-to-end plans against plaintext
(`--e2e`). Prints tables; `--json FILE` writes records with the keys op, shape, parties, seconds, rounds,
bytes, max_abs_err (and, per forward, the per-op figures).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.records import write_records  # noqa: E402
from hsi.models.executor import PlainExecutor, SessionState, StepContext  # noqa: E402
from hsi.models.registry import load_graph, load_model  # noqa: E402
from zones.mpc.kernels import MASKED_SCORE  # noqa: E402
from zones.mpc.local import run_ops  # noqa: E402

TEXT = ("Patient is a 67-year-old man with type 2 diabetes, hypertension and stage 3 chronic kidney disease; "
        "started on metformin 500 mg twice daily.")
# (model, op name) pairs: one of each op type, from the first block of each model
OPS = {
    "minilm-l6": ["encoder.layer.0.attention.self.qkv", "encoder.layer.0.attention.self.scores",
                  "encoder.layer.0.attention.self.softmax", "encoder.layer.0.attention.self.context",
                  "encoder.layer.0.attention.output.residual", "encoder.layer.0.attention.output.LayerNorm",
                  "encoder.layer.0.intermediate.dense", "encoder.layer.0.intermediate.intermediate_act_fn",
                  "encoder.layer.0.output.dense", "pool"],
    "smollm2-135m": ["model.layers.1.input_layernorm", "model.layers.1.self_attn.qkv_proj",
                     "model.layers.1.self_attn.rope_q", "model.layers.1.self_attn.scores",
                     "model.layers.1.self_attn.softmax", "model.layers.1.mlp.act_fn", "model.layers.1.mlp.down_proj",
                     "lm_head", "sample"],
}

def bench_op(model: str, op_name: str, repeats: int = 2, comparisons: str = "circuit") -> dict[str, Any]:
    """One op of a model on real activations: time, rounds, bytes and error against the plain executor."""
    m = load_model(model)
    text = TEXT
    if m.graph.arch == "llama":
        text = m.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                               add_generation_prompt=True)
    ids = torch.tensor(m.tokenizer(text)["input_ids"])
    op = m.graph.op(op_name)
    env = PlainExecutor(m.graph.ops, m.weights()).run({"input_ids": ids}, StepContext(0), SessionState(),
                                                       list(op.inputs) + [op_name])
    # causal-masked logits: the MPC scores kernel writes MASKED_SCORE where the plain one writes the lowest float
    inputs = {n: env[n].clamp(min=MASKED_SCORE) if op.type.value == "softmax" else env[n] for n in op.inputs}
    (got, figures), = run_ops(model, [([op_name], inputs, 0)], repeats=repeats, comparisons=comparisons)
    err = float((got.double() - env[op_name].double()).abs().max())
    return {"op": op.type.value, "name": op_name, "model": model, "comparisons": comparisons,
            "shape": [list(env[t].shape) for t in op.inputs],
            "parties": 2, "seconds": round(figures["seconds"], 4), "rounds": int(figures["party_rounds"]),
            "bytes": int(figures["party_bytes"]), "dealer_bytes": int(figures["dealer_bytes"]),
            "crypten_rounds": int(figures["rounds"]), "max_abs_err": err}


def print_table(records: list[dict[str, Any]]) -> None:
    """One line per op."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title="MPC ops (2 parties + dealer, loopback, 16-bit fixed point): rounds on the critical path, "
                    "bytes between the parties, the dealer's apart")
    for col in ("model", "op", "name", "comparisons", "input shapes", "s", "rounds", "MB", "dealer MB",
                "CrypTen rounds", "max abs err"):
        t.add_column(col)
    for r in records:
        t.add_row(r["model"], r["op"], r["name"].split(".")[-1], r.get("comparisons", "circuit"), str(r["shape"]),
                  f"{r['seconds']:.3f}",
                  str(r["rounds"]), f"{r['bytes'] / 1e6:.2f}", f"{r.get('dealer_bytes', 0) / 1e6:.2f}",
                  str(r.get("crypten_rounds", "")), f"{r['max_abs_err']:.2e}")
    Console(width=160).print(t)


def main() -> int:
    """Run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="*", default=list(OPS))
    ap.add_argument("--ops", nargs="*", help="only these op names")
    ap.add_argument("--layers", action="store_true",
                    help="instead of single ops: one whole forward per model, rounds and bytes by op and layer")
    ap.add_argument("--comparisons", nargs="+", default=["circuit"],
                    help="comparison protocols to measure side by side: circuit, dcf, or dcf:N (DCF keys for "
                         "comparisons of at most N elements)")
    ap.add_argument("--e2e", action="store_true", help="also run the all-mpc plans end to end (bench/e2e.py)")
    ap.add_argument("--json", type=Path, help="write the records to this file")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.layers:
        from bench.mpc_layers import bench_forward, print_forward

        records = [r for model in args.models for how in args.comparisons for r in bench_forward(model, how)]
        for r in records:
            print_forward(r)
    else:
        records = [bench_op(model, op, comparisons=how) for model in args.models for op in args.ops or OPS[model]
                   for how in args.comparisons if op in {o.name for o in load_graph(model).ops}]
        print_table(records)
    if args.e2e:
        from bench.e2e import bench_plan
        from bench.e2e import print_table as print_e2e

        e2e = [r for model in args.models
               for r in bench_plan("all-mpc-minilm" if model == "minilm-l6" else "all-mpc-smollm2", 8, "loopback")]
        print_e2e(e2e)
        records += [{"op": "e2e", **r} for r in e2e]
    write_records(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
