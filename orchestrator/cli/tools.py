"""`hsi calibrate`, `bench` and `serve`: measure a model's MPC constants, benchmark, run the orchestrator service
(gRPC, and the OpenAI-compatible HTTP API)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from hsi.policy import load_policy
from orchestrator.cli.console import out


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Measure a model's MPC calibration constants on the public corpus and write them (the model owner runs it)."""
    from hsi.calibration import calibrate, packaged_path

    data = calibrate(args.model)
    path = Path(args.out) if args.out else packaged_path(args.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    iters = [e["inv_sqrt_iters"] for e in data["ops"].values() if "inv_sqrt_iters" in e]
    out.print(f"wrote {path}: {len(data['ops'])} ops, inverse square roots need {min(iters)}-{max(iters)} "
              "Newton iterations")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the end-to-end benchmark (bench/e2e.py) with the given arguments."""
    script = Path(__file__).resolve().parents[2] / "bench" / "e2e.py"
    if not script.is_file():
        raise SystemExit("bench/e2e.py is not in this installation; run from a source checkout")
    return subprocess.call([sys.executable, str(script), *args.bench_args])


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the Orchestrator gRPC service at the client, and with --http-port the OpenAI-compatible HTTP API."""
    from orchestrator.http import HttpSettings
    from orchestrator.service import serve_orchestrator

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    http = None
    if args.http_port is not None:
        http = HttpSettings(port=args.http_port, host=args.http_host, max_waiting=args.queue,
                            deadline_s=args.deadline_s, default_max_tokens=args.default_max_tokens,
                            max_inputs=args.max_inputs, api_key=os.environ.get("HSI_API_KEY") or None)
    for sig in (signal.SIGTERM, signal.SIGINT):  # either stops both services gracefully (open streams get 5 s),
        signal.signal(sig, signal.default_int_handler)  # even where a background start left SIGINT ignored
    serve_orchestrator(load_policy(args.policy), args.port, http=http)
    return 0


def add_calibrate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hsi calibrate`."""
    s = sub.add_parser("calibrate", help="measure a model's MPC calibration constants (model owner)")
    s.add_argument("--model", required=True)
    s.add_argument("--out", help="output file (default: the file shipped for a packaged model)")
    s.set_defaults(func=cmd_calibrate)


def add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hsi bench`."""
    s = sub.add_parser("bench", help="run bench/e2e.py (arguments after -- go to it)")
    s.add_argument("bench_args", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_bench)


def add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hsi serve`."""
    s = sub.add_parser("serve", help="run the Orchestrator gRPC service (and the OpenAI-compatible HTTP API) at "
                                     "the client")
    s.add_argument("--policy", required=True)
    s.add_argument("--port", type=int, default=50100, help="the gRPC service's port")
    http = s.add_argument_group("HTTP API (docs/http-api.md); with HSI_API_KEY set, /v1/* requires it as bearer token")
    http.add_argument("--http-port", type=int, help="serve the OpenAI-compatible HTTP API on this port")
    http.add_argument("--http-host", default="127.0.0.1", help="the address it listens on (default: loopback)")
    http.add_argument("--queue", type=int, default=8, help="requests that may wait for the runtime; more get 429")
    http.add_argument("--deadline-s", type=float, default=600.0, help="a request's deadline, queue included (504)")
    http.add_argument("--default-max-tokens", type=int, default=64,
                      help="new tokens of a chat completion that names no max_tokens")
    http.add_argument("--max-inputs", type=int, default=64, help="texts one embeddings request may hold (more: 400)")
    s.set_defaults(func=cmd_serve)
