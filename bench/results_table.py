"""README's tables of figures, generated from bench/results/*.json: the latest end-to-end record per (plan, model,
network), and the latest throughput record per (plan, network, batch)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cost import cross_party_bytes  # noqa: E402

RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
TP_BEGIN, TP_END = "<!-- throughput:begin -->", "<!-- throughput:end -->"
THROUGHPUT = "throughput"  # the `bench` of bench/throughput.py's records
NETWORKS = ("loopback", "lan", "wan", "wan-latency", "wan-bandwidth")
SPLIT_NETWORKS = ("wan-latency", "wan-bandwidth")  # the wan's delay alone and its rate alone
PLANS = ("hf-direct", "plain", "all-mpc", "selective", "private", "enclave")  # row order within a model
HEADER = ("plan", "model", "network", "wall s", "s/token", "prefill s", "bytes between parties", "accuracy",
          "commit", "date")
Record = dict[str, Any]
Key = tuple[str, str, str]


def load_records(results: Path = RESULTS) -> list[Record]:
    """Every record of every `*.json` list in `results`, files in name order, records in file order."""
    records: list[Record] = []
    for path in sorted(results.glob("*.json")):
        data = json.loads(path.read_text())
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(f"{path}: not a JSON list of records")
        records += data
    return records


def _when(record: Record) -> datetime:
    when = datetime.fromisoformat(str(record["date"]).replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def latest(records: list[Record]) -> dict[Key, Record]:
    """The latest record per (plan, model, network) by `date`; of equal dates, the one read last. Records of
    single ops (no `plan`) and throughput records are not end-to-end runs and are left out; so are a shipped
    plan's variants (`plan+how`, e.g. other comparisons: docs/zones.md has them) and HF's own runs under the
    split WAN profiles (the network does not touch them)."""
    best: dict[Key, Record] = {}
    for r in records:
        if "plan" not in r or "wall_s" not in r or r.get("bench") == THROUGHPUT or "+" in r["plan"]:
            continue
        if r["plan"] == "hf-direct" and r["network"] in SPLIT_NETWORKS:
            continue
        key = (r["plan"], r["model"], r["network"])
        if key not in best or _when(r) >= _when(best[key]):
            best[key] = r
    return best


def _seconds(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:,.0f}"


def _size(n: float) -> str:
    return f"{n / 1e3:.0f} KB" if n < 1e6 else f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def between_parties(record: Record) -> str:
    """Bytes on zone links between parties, plus those the parties of each MPC zone sent one another and
    exchanged with their dealer (`cost.cross_party_bytes`)."""
    links, mpc, dealer = cross_party_bytes(record)
    if not links and not mpc:
        return "–"
    return _size(links) + (f" + {_size(mpc)} MPC" if mpc else "") + (f" + {_size(dealer)} dealer" if dealer else "")


def accuracy(record: Record) -> str:
    """Cosine to the Hugging Face model for an embedding, matching greedy tokens for generation."""
    if record["plan"] == "hf-direct":
        return "reference"
    if "cosine" in record:
        return f"cosine {record['cosine']:.6f}"
    if "token_match" in record:
        of = f" of {record['new_tokens']}" if "new_tokens" in record else ""
        return f"{record['token_match']}{of} tokens"
    return "–"


def _order(key: Key) -> tuple[str, int, str, int]:
    plan, model, network = key
    rank = next((i for i, p in enumerate(PLANS) if plan.startswith(p)), len(PLANS))
    return model, rank, plan, NETWORKS.index(network) if network in NETWORKS else len(NETWORKS)


def table(results: Path = RESULTS) -> str:
    """The Markdown table: one row per (plan, model, network), from its latest record."""
    best = latest(load_records(results))
    rows = [HEADER, tuple("---" for _ in HEADER)]
    for key in sorted(best, key=_order):
        r = best[key]
        rows.append((r["plan"], r["model"], r["network"], _seconds(r["wall_s"]), _seconds(r.get("per_token_s")),
                     _seconds(r.get("prefill_s")), between_parties(r), accuracy(r), str(r.get("commit", "?")),
                     str(r.get("date", "?"))[:10]))
    return "".join("| " + " | ".join(row) + " |\n" for row in rows)


def throughput_table(results: Path = RESULTS) -> str:
    """The Markdown table of batched passes: one row per (plan, network, batch), from its latest record."""
    best: dict[tuple[str, int, int], Record] = {}
    for r in load_records(results):
        if r.get("bench") == THROUGHPUT:
            net = NETWORKS.index(r["network"]) if r["network"] in NETWORKS else len(NETWORKS)
            key = (r["plan"], net, int(r["batch"]))
            if key not in best or _when(r) >= _when(best[key]):
                best[key] = r
    header = ("plan", "network", "texts per pass", "tokens", "wall s", "embeddings/min", "MPC rounds", "MPC bytes",
              "min cosine", "commit", "date")
    rows = [header, tuple("---" for _ in header)]
    for key in sorted(best):
        r = best[key]
        rows.append((r["plan"], r["network"], str(r["batch"]), str(r["tokens"]), _seconds(r["wall_s"]),
                     f"{r['embeddings_per_min']:.2f}", f"{r['mpc_rounds']:,}", _size(r["mpc_bytes"]),
                     f"{r['min_cosine']:.6f}", str(r.get("commit", "?")), str(r.get("date", "?"))[:10]))
    return "".join("| " + " | ".join(row) + " |\n" for row in rows)


BLOCKS = ((BEGIN, END, table), (TP_BEGIN, TP_END, throughput_table))


def _split(text: str, readme: Path, begin: str, end_marker: str) -> tuple[str, str, str]:
    """README's text before a block (markers included), the block, and the text after it."""
    start, end = text.find(begin), text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"{readme}: no {begin} ... {end_marker} block")
    start += len(begin)
    return text[:start], text[start:end], text[end:]


def write_readme(readme: Path = README, results: Path = RESULTS) -> None:
    """Rewrite the blocks between the markers in `readme`."""
    text = readme.read_text()
    for begin, end, make in BLOCKS:
        head, _, tail = _split(text, readme, begin, end)
        text = head + "\n" + make(results) + tail
    readme.write_text(text)


def readme_is_current(readme: Path = README, results: Path = RESULTS) -> bool:
    """Whether `readme`'s blocks are what `write_readme` would write."""
    text = readme.read_text()
    return all(_split(text, readme, b, e)[1] == "\n" + make(results) for b, e, make in BLOCKS)


def main() -> int:
    """Print the table, rewrite README's block, or check that it is current."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", type=Path, default=RESULTS, help="directory of *.json record lists")
    ap.add_argument("--readme", type=Path, default=README)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write-readme", action="store_true", help="rewrite the block between the markers")
    mode.add_argument("--check", action="store_true", help="exit 1 when README's block is not what it would write")
    args = ap.parse_args()
    if args.write_readme:
        write_readme(args.readme, args.results)
    elif args.check:
        if not readme_is_current(args.readme, args.results):
            print(f"{args.readme}: the results table is stale; run `make results`", file=sys.stderr)
            return 1
    else:
        print(table(args.results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
