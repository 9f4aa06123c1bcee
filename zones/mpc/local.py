"""Run a function as every party of a local CrypTen computation, each in its own spawned process.

For tests and benchmarks of MPC kernels. Spawned, not forked: a process that already ran
PyTorch's OpenMP pool deadlocks in a forked child.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import tempfile
from collections.abc import Callable
from typing import Any


def _party(func: Callable[..., Any], rank: int, parties: int, rendezvous: str, results: Any,
           args: tuple[Any, ...], ttp: bool) -> None:
    from zones.mpc.compat import import_crypten

    # CrypTen's convention: WORLD_SIZE counts the compute parties; the dealer is rank WORLD_SIZE.
    os.environ.update(WORLD_SIZE=str(parties), RANK=str(rank), RENDEZVOUS=f"file://{rendezvous}",
                      DISTRIBUTED_BACKEND="gloo")
    crypten = import_crypten()
    if ttp:
        crypten.cfg.mpc.provider = "TTP"
    crypten.init()
    try:
        if rank == parties:
            from zones.mpc.fixed_weights import serve_dealer

            serve_dealer()
            return
        results.put((rank, "ok", func(*args)))
    except Exception as e:  # reported to the parent, which raises it
        results.put((rank, "error", f"{type(e).__name__}: {e}"))
    finally:
        crypten.uninit()


def run_parties(func: Callable[..., Any], args: tuple[Any, ...] = (), parties: int = 2, ttp: bool = False,
                timeout: float = 300.0) -> list[Any]:
    """Run `func(*args)` at every compute party (plus a dealer with `ttp`); their results in rank order.

    `func` must be importable (module level) and return something small and picklable.
    """
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    processes = parties + (1 if ttp else 0)
    with tempfile.TemporaryDirectory() as tmp:
        rendezvous = os.path.join(tmp, "rendezvous")
        procs = [ctx.Process(target=_party, args=(func, r, parties, rendezvous, results, args, ttp))
                 for r in range(processes)]
        for p in procs:
            p.start()
        out: dict[int, Any] = {}
        try:
            while len(out) < parties:
                try:
                    rank, status, value = results.get(timeout=timeout)
                except queue_module.Empty:
                    raise TimeoutError(f"MPC parties gave no result within {timeout:.0f} s") from None
                if status == "error":
                    raise RuntimeError(f"MPC party {rank} failed: {value}")
                out[rank] = value
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
    return [out[r] for r in range(parties)]
