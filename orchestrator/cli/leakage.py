"""`hsi leakage`: attack the tensor a party would see after K blocks and report how much of the input it recovers."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from orchestrator.cli.console import err, out


def cmd_leakage(args: argparse.Namespace) -> int:
    """Run the audit of one tensor and print each attack's scores (as JSON with --json)."""
    from hsi.models.registry import load_graph
    from orchestrator.leakage.audit import FULL, QUICK, audit
    from orchestrator.leakage.exposure import exposure

    exposure(load_graph(args.model), args.tensor, args.depth)  # a bad model, tensor or depth fails here, fast
    if not args.json:
        err.print(f"attacking the {args.tensor} tensor of {args.model}"
                  f"{f' after {args.depth} blocks' if args.tensor == 'hidden' else ''}"
                  f" ({'quick' if args.quick else 'full'} audit)...")
    result = audit(args.model, args.tensor, args.depth, QUICK if args.quick else FULL)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    t = Table(title=f"leakage of {result['model']} {result['tensor']} at depth {result['depth']} "
                    f"({result['eval_tokens']} private-like tokens)")
    for col in ("attack", "token accuracy", "exact sequences", "word F1", "sensitive spans", "attacker s"):
        t.add_column(col)
    for name, a in result["attacks"].items():
        t.add_row(name, f"{a['token_accuracy']:.1%}", f"{a['exact_sequence_rate']:.0%}", f"{a['word_f1']:.3f}",
                  f"{a['sensitive_recall']:.0%}", f"{a['seconds']:.1f}")
    out.print(t)
    out.print(f"token recovery (the strongest attack): {result['token_recovery']:.1%}")
    return 0


def add_leakage(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hsi leakage`."""
    s = sub.add_parser("leakage", help="measure how much of the input a party recovers from a tensor it sees")
    s.add_argument("--model", required=True, help="a packaged model (minilm-l6, smollm2-135m)")
    s.add_argument("--depth", type=int, help="blocks applied before the hidden state (0: the embeddings)")
    s.add_argument("--tensor", default="hidden", choices=("hidden", "pool", "logits"),
                   help="hidden state, MiniLM's sentence embedding or SmolLM2's last logits (default: hidden)")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.add_argument("--quick", action="store_true", help="a short audit: 300 training sentences, 4 records")
    s.set_defaults(func=cmd_leakage)
