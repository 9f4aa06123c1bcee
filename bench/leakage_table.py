"""README's leakage curve and docs/leakage.md's noise table, generated from the shipped hsi/models/leakage/*.json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "hsi" / "models" / "leakage"
README = ROOT / "README.md"
DOC = ROOT / "docs" / "leakage.md"
CURVE = ("<!-- leakage:begin -->", "<!-- leakage:end -->")
NOISE = ("<!-- leakage-noise:begin -->", "<!-- leakage-noise:end -->")
MODELS = ("smollm2-135m", "minilm-l6")
FINAL = {"smollm2-135m": "logits", "minilm-l6": "pool"}
SHORT = {"smollm2-135m": "SmolLM2", "minilm-l6": "MiniLM"}


def load(data: Path = DATA) -> dict[str, dict[str, Any]]:
    """The shipped leakage data by model (models without a file are left out)."""
    found = {}
    for model in MODELS:
        path = data / f"{model}.json"
        if path.is_file():
            found[model] = json.loads(path.read_text())
    return found


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}" if x in (0.0, 1.0) else f"{x:.1%}"


def _acc(entry: dict[str, Any] | None, attack: str) -> float | None:
    if entry is None or attack not in entry["attacks"]:
        return None
    return float(entry["attacks"][attack]["token_accuracy"])


def curve(data: Path = DATA) -> str:
    """Token recovery against depth: per model the weak (ridge probe) and strong (search) attack; the last row
    is the model's output tensor (bag-of-tokens probe)."""
    found = load(data)
    models = [m for m in MODELS if m in found]
    depths = sorted({int(d) for m in models for d in found[m]["tensors"].get("hidden", {})})
    header = ["blocks"] + [f"{SHORT[m]} {a}" for m in models for a in ("probe", "search")]
    rows = [header, ["---"] * len(header)]
    for d in depths:
        cells = [str(d)]
        for m in models:
            entry = found[m]["tensors"].get("hidden", {}).get(str(d))
            cells += [_pct(_acc(entry, "probe")), _pct(_acc(entry, "search"))]
        rows.append(cells)
    final = ["output"]
    for m in models:
        entry = found[m]["tensors"].get(FINAL[m], {}).get("final")
        final += [f"{FINAL[m]} (bag) {_pct(_acc(entry, 'bag'))}", ""]
    rows.append(final)
    return "".join("| " + " | ".join(r) + " |\n" for r in rows)


def noise_table(data: Path = DATA) -> str:
    """Where the figures come from (per model: tokens attacked, commit), then the Gaussian-noise defence: per
    model and noise scale, token recovery and output fidelity."""
    found = load(data)
    rows = [["model", "depth", "sigma (x RMS)", "token recovery", "probe", "search", "fidelity"], ["---"] * 7]
    for model, d in found.items():
        for n in d.get("noise", []):
            fid = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in n["fidelity"].items())
            rows.append([model, str(n["depth"]), f"{n['sigma']:g}", _pct(n["token_recovery"]),
                         _pct(n["attacks"].get("probe")), _pct(n["attacks"].get("search")), fid])
    source = "".join(f"- {m}: {d.get('eval_tokens', '?')} private-like tokens per full audit, commit "
                     f"{d.get('commit', '?')}, {str(d.get('date', '?'))[:10]}\n" for m, d in found.items())
    return source + "\n" + "".join("| " + " | ".join(r) + " |\n" for r in rows)


def _split(text: str, markers: tuple[str, str], path: Path) -> tuple[str, str, str]:
    begin, end = markers
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"{path}: no {begin} ... {end} block")
    start += len(begin)
    return text[:start], text[start:stop], text[stop:]


def _blocks(readme: Path, doc: Path, data: Path) -> list[tuple[Path, tuple[str, str], str]]:
    return [(readme, CURVE, curve(data)), (doc, NOISE, noise_table(data))]


def write(readme: Path = README, doc: Path = DOC, data: Path = DATA) -> None:
    """Rewrite the blocks between the markers."""
    for path, markers, body in _blocks(readme, doc, data):
        head, _, tail = _split(path.read_text(), markers, path)
        path.write_text(head + "\n" + body + tail)


def stale(readme: Path = README, doc: Path = DOC, data: Path = DATA) -> list[Path]:
    """The files whose block is not what `write` would write."""
    return [p for p, m, body in _blocks(readme, doc, data) if _split(p.read_text(), m, p)[1] != "\n" + body]


def main() -> int:
    """Print the tables, rewrite the blocks, or check that they are current."""
    ap = argparse.ArgumentParser(description=__doc__)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the blocks between the markers")
    mode.add_argument("--check", action="store_true", help="exit 1 when a block is not what it would write")
    args = ap.parse_args()
    if args.write:
        write()
    elif args.check:
        bad = stale()
        for path in bad:
            print(f"{path}: the leakage table is stale; run `make leakage-table`", file=sys.stderr)
        return 1 if bad else 0
    else:
        print(curve() + "\n" + noise_table(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
