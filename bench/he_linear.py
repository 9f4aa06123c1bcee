"""HE linear benchmark: encrypted X.W^T + b for every matrix shape of the two models.

For each ring dimension, slot layout (token-batched, lanes or complex lanes, see
packing.py), shape and token count (the complex lane layout takes one token at a time):
seconds per op (median of --reps runs), rotations and plaintext multiplies, bytes of the
input and output ciphertexts, and the max abs error against numpy. Prints a table;
`--json FILE` writes one record per row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import openfhe as fhe

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.records import write_records  # noqa: E402
from hsi.ckks.packing import AnyPacking, ComplexLanePacking, LanePacking, Packing  # noqa: E402
from hsi.policy import CkksParams  # noqa: E402
from zones.common.ckks.crypto import decrypt_matrix, encrypt_matrix, generate_keys  # noqa: E402
from zones.common.ckks.params import make_context  # noqa: E402
from zones.he.linear import EncryptedLinear, OpCounts, rotation_indices  # noqa: E402

SHAPES = [(384, 384), (384, 1536), (1536, 384), (576, 576), (576, 192), (576, 1536), (1536, 576)]


def _bytes(blocks: list[list[fhe.Ciphertext]]) -> int:
    return sum(len(fhe.Serialize(ct, fhe.BINARY)) for row in blocks for ct in row)


def bench(ring_dims: list[int], shapes: list[tuple[int, int]], tokens: list[int], reps: int,
          width: int, layouts: list[str]) -> list[dict[str, Any]]:
    """Run the grid; one record per (ring dimension, layout, shape, token count)."""
    rng = np.random.default_rng(0)
    records = []
    for ring_dim in ring_dims:
        ctx = make_context(CkksParams(ring_dim=ring_dim))
        packings: dict[str, AnyPacking] = {"batched": Packing(ctx.slots, width), "lanes": LanePacking(ctx.slots, width),
                                           "complex": ComplexLanePacking(ctx.slots, width)}
        keys = generate_keys(ctx, sorted({r for name in layouts for r in rotation_indices(packings[name])}))
        for (d_in, d_out), layout in ((s, name) for s in shapes for name in layouts):
            packing = packings[layout]
            w = rng.normal(scale=d_in ** -0.5, size=(d_out, d_in))
            b = rng.normal(scale=0.1, size=d_out)
            start = time.perf_counter()
            layer = EncryptedLinear(ctx.cc, packing, w, b)
            encode_s = time.perf_counter() - start
            for n in [1] if layout == "complex" else tokens:
                x = rng.normal(size=(n, d_in))
                cts = encrypt_matrix(ctx, keys.public, packing, x)
                times = []
                for _ in range(reps):
                    counts = OpCounts()
                    t0 = time.perf_counter()
                    out = layer.forward(cts, counts)
                    times.append(time.perf_counter() - t0)
                got = decrypt_matrix(ctx, keys.secret, packing.output, out, n, d_out)
                records.append({
                    "op": "linear", "layout": layout, "d_in": d_in, "d_out": d_out, "tokens": n, "ring_dim": ring_dim,
                    "pack_width": width, "seconds": round(statistics.median(times), 4),
                    "rotations": counts.rotations + counts.hoisted_rotations,
                    "hoisted_rotations": counts.hoisted_rotations, "ptmults": counts.ptmults,
                    "bytes_in": _bytes(cts), "bytes_out": _bytes(out),
                    "max_abs_err": float(np.abs(got - (x @ w.T + b)).max()), "encode_s": round(encode_s, 2),
                })
                print(json.dumps(records[-1]), file=sys.stderr)
            del layer
        ctx.cc.ClearEvalAutomorphismKeys()
        fhe.ReleaseAllContexts()
    return records


def print_table(records: list[dict[str, Any]]) -> None:
    """The records as a table."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title="encrypted linear (OpenFHE CKKS, depth 1, 35-bit scale)")
    for col in ("N", "layout", "d_in->d_out", "tokens", "seconds", "rotations (hoisted)", "ptmults", "MB in", "MB out",
                "max abs err", "encode s"):
        t.add_column(col, justify="right")
    for r in records:
        t.add_row(str(r["ring_dim"]), r["layout"], f"{r['d_in']}->{r['d_out']}", str(r["tokens"]),
                  f"{r['seconds']:.3f}", f"{r['rotations']} ({r['hoisted_rotations']})", str(r["ptmults"]),
                  f"{r['bytes_in'] / 1e6:.1f}",
                  f"{r['bytes_out'] / 1e6:.1f}", f"{r['max_abs_err']:.1e}", f"{r['encode_s']:.1f}")
    Console().print(t)


def main() -> int:
    """Run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ring-dims", type=int, nargs="*", default=[1 << 14, 1 << 15])
    ap.add_argument("--tokens", type=int, nargs="*", default=[16, 32, 64])
    ap.add_argument("--shapes", nargs="*", default=[f"{a}x{b}" for a, b in SHAPES],
                    help="d_in x d_out, e.g. 384x384")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--width", type=int, default=512, help="features per ciphertext block")
    ap.add_argument("--layouts", nargs="*", default=["batched", "lanes"], choices=["batched", "lanes", "complex"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
    records = bench(args.ring_dims, shapes, args.tokens, args.reps, args.width, args.layouts)  # type: ignore[arg-type]
    print_table(records)
    write_records(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
