"""`hsi embed` and `hsi generate`: run a model under a policy, with progress, metrics and what each zone received."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from hsi.errors import HsiError
from orchestrator.cli.console import err, out

if TYPE_CHECKING:
    from rich.progress import Progress


def _progress() -> Progress:
    from rich.progress import Progress

    return Progress(console=err, transient=True, disable=not err.is_terminal)


def _metrics_table(result: dict[str, Any]) -> None:
    m = result["metrics"]
    t = Table(title=f"wall {m['wall_s']:.3f} s")
    t.add_column("zone")
    t.add_column("seconds", justify="right")
    for zone, s in m["time_by_zone"].items():
        t.add_row(zone, f"{s:.3f}")
    out.print(t)
    b = Table()
    b.add_column("link")
    b.add_column("bytes", justify="right")
    for link, n in m["bytes_by_link"].items():
        b.add_row(link, f"{n:,}")
    out.print(b)
    received: dict[tuple[str, str], dict[str, int]] = {}
    for r in result["privacy"]["observed"]:
        counts = received.setdefault((f"{r['party']}/{r['zone']}", r["source_principal"]), {})
        counts[r["encoding"]] = counts.get(r["encoding"], 0) + 1
    seen = Table(title="what each zone received (tensors by encoding)")
    seen.add_column("zone")
    seen.add_column("from")
    seen.add_column("received", justify="right")
    for (zone, source), counts in sorted(received.items()):
        seen.add_row(zone, source, ", ".join(f"{n} {enc}" for enc, n in sorted(counts.items())))
    out.print(seen)
    mism = result["privacy"]["mismatches"]
    out.print("data plane matches the privacy report" if not mism else
              "[bold red]data plane differs from the privacy report:[/]\n  " + "\n  ".join(mism))


def _run(args: argparse.Namespace, op: str) -> int:
    from orchestrator import api

    with _progress() as progress:
        task = progress.add_task(op, total=None)

        def report(what: str, done: int, total: int) -> None:
            progress.update(task, description=what, completed=done, total=total)

        if op == "embed":
            result = api.embed(args.policy, _texts(args), check=args.check, progress=report)
        else:
            result = api.generate(args.policy, args.prompt, args.max_new_tokens, chat=not args.no_chat,
                                  check=args.check, progress=report)
    ok = not args.check or api.check_passed(result, getattr(args, "min_cosine", 0.99))
    if args.json:
        print(json.dumps(result))
    else:
        o = result["output"]
        if op == "embed":
            many = "embeddings" in o
            for emb, n in zip(o["embeddings"], o["tokens"], strict=True) if many else [(o["embedding"], o["tokens"])]:
                head = ", ".join(f"{x:.4f}" for x in emb[:6])
                out.print(f"embedding ({len(emb)} dims, {n} tokens): [{head}, ...]")
            if many:
                out.print(f"{len(o['embeddings'])} texts in {o['passes']} batched pass(es)")
        else:
            out.print(f"[bold]{o['text']}[/]\n({len(o['token_ids'])} tokens, ids {o['token_ids']})")
        _metrics_table(result)
        if "reference" in result:
            out.print("reference: " + ", ".join(f"{k} {v}" for k, v in result["reference"].items()))
    if not ok:
        err.print("[bold red]check failed[/]: the run differs from the plaintext reference or the privacy report")
    return 0 if ok else 3


def _texts(args: argparse.Namespace) -> str | list[str]:
    """The text to embed, or the texts (several arguments, or `--file` with one text per line) for batched
    passes."""
    texts = list(args.text)
    if args.file:
        try:
            lines = Path(args.file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise HsiError(f"--file {args.file}: cannot read it ({e})") from None
        texts += [line for line in lines if line.strip()]
        if not texts:
            raise HsiError(f"--file {args.file} has no text (one text per line)")
    if not texts:
        raise HsiError("nothing to embed: give a text, several texts, or --file")
    return texts[0] if len(texts) == 1 and not args.file else texts


def cmd_embed(args: argparse.Namespace) -> int:
    """Sentence embedding of a text under a policy."""
    return _run(args, "embed")


def cmd_generate(args: argparse.Namespace) -> int:
    """Greedy generation under a policy."""
    return _run(args, "generate")


def add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hsi embed` and `hsi generate`."""
    for name, fn, arg in (("embed", cmd_embed, "text"), ("generate", cmd_generate, "prompt")):
        s = sub.add_parser(name, help=f"run {name} under a policy (starts the zones if they are not up)")
        s.add_argument("--policy", required=True)
        if name == "embed":
            s.add_argument(arg, nargs="*", help="text(s) to embed; several are embedded in batched passes")
            s.add_argument("--file", help="embed each non-empty line of this file (with any texts given)")
        else:
            s.add_argument(arg)
        s.add_argument("--json", action="store_true", help="print one JSON object")
        s.add_argument("--check", action="store_true", help="compare with the plaintext HF model and the privacy "
                                                            "report; exit 3 on a difference")
        if name == "embed":
            s.add_argument("--min-cosine", type=float, default=0.99, help="cosine --check requires")
        else:
            s.add_argument("--max-new-tokens", type=int, default=16)
            s.add_argument("--no-chat", action="store_true", help="do not apply the chat template")
        s.set_defaults(func=fn)
