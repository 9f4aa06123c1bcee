"""Run a function as every party of a local CrypTen computation, each in its own spawned process.

For tests and benchmarks of MPC kernels. Spawned, not forked: a process that already ran
PyTorch's OpenMP pool deadlocks in a forked child.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue as queue_module
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zones.mpc.fss import limit
from zones.mpc.links import MeshSpec

if TYPE_CHECKING:
    from hsi.batch import Batch


def _party(func: Callable[..., Any], mesh: MeshSpec, parties: int, results: Any, args: tuple[Any, ...], ttp: bool,
           fast: bool, dcf: int) -> None:
    from zones.mpc.compat import fast_crypten, import_crypten, single_threaded_torch

    single_threaded_torch()  # as the zones' workers run
    rank = mesh.rank  # CrypTen's convention: the compute parties are 0..parties-1, the dealer is rank `parties`
    crypten = import_crypten()
    from zones.mpc import tls_comm  # after CrypTen's import, which it needs

    tls_comm.prepare(mesh)
    if ttp:
        crypten.cfg.mpc.provider = "TTP"
    crypten.cfg.communicator.verbose = True  # count rounds and bytes, as the zones' workers do
    crypten.init()
    if fast:
        fast_crypten(dcf)
    try:
        if rank == parties:
            from zones.mpc.fixed_weights import serve_dealer
            from zones.mpc.weight_masks import MaskTracker, WeightMasks

            serve_dealer(MaskTracker(WeightMasks(0)))  # a local session keeps no masks
            return
        # pickled here: a queue sends tensors as file descriptors, which die with this process if it exits first
        results.put((rank, "ok", pickle.dumps(func(*args))))
    except Exception as e:  # reported to the parent, which raises it
        results.put((rank, "error", f"{type(e).__name__}: {e}"))
    finally:
        crypten.uninit()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_meshes(directory: Path, processes: int, ttp: bool, timeout: float) -> list[MeshSpec]:
    """Mesh specs of a local session on loopback: a throwaway CA in `directory`, one principal per rank."""
    from hsi.transport.certs import init_ca, issue, load_credentials

    init_ca(directory)
    principals = tuple(f"rank{r}/local" for r in range(processes))
    for p in principals:
        issue(directory, p, ["127.0.0.1"])
    hub = ("127.0.0.1", free_port())
    session = f"local-{os.getpid()}-{hub[1]}"
    return [MeshSpec(session, r, principals, hub, load_credentials(directory, principals[r]), timeout, dealer=ttp)
            for r in range(processes)]


def run_parties(func: Callable[..., Any], args: tuple[Any, ...] = (), parties: int = 2, ttp: bool = False,
                fast: bool = True, timeout: float = 300.0, comparisons: str = "circuit") -> list[Any]:
    """Run `func(*args)` at every compute party (plus a dealer with `ttp`); their results in rank order.

    `func` must be importable (module level) and return something small and picklable.
    """
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    processes = parties + (1 if ttp else 0)
    with tempfile.TemporaryDirectory() as tmp:
        meshes = local_meshes(Path(tmp), processes, ttp, timeout)
        procs = [ctx.Process(target=_party, args=(func, meshes[r], parties, results, args, ttp, fast,
                                                      limit(comparisons)))
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
                out[rank] = pickle.loads(value)  # noqa: S301 (bytes from this call's own child process)
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
    return [out[r] for r in range(parties)]


def _run_jobs(model: str, jobs: list[tuple[list[str], list[dict[str, Any]], int]], calibration: dict[str, Any],
              precision: int, repeats: int, batch: Batch | None) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """At each party: run every job (ops, per-rank input shares, position offset) in one session."""
    from zones.mpc.compat import import_crypten
    from zones.mpc.worker import WorkerSpec, _Party

    crypten = import_crypten()
    rank = crypten.communicator.get().get_rank()
    parties = crypten.communicator.get().get_world_size()
    mesh = crypten.communicator.get().mesh.spec
    party = _Party(WorkerSpec("local", "party", rank, parties, mesh, precision, 600, model, 0, calibration), crypten)
    results = []
    for ops, shares, offset in jobs:
        for _ in range(repeats):  # the first run also shares the weights
            if offset == 0:  # a job at a later position continues the KV cache of the job before it
                party.state.kv.clear()
            out, figures = party.run(ops, shares[rank], offset, batch, ops[-1:])
        results.append((out, figures))
    return results


def run_ops(model: str, jobs: list[tuple[list[str], dict[str, Any], int]], parties: int = 2, precision: int = 16,
            repeats: int = 1, batch: Batch | None = None, comparisons: str = "circuit"
            ) -> list[tuple[Any, dict[str, Any]]]:
    """Run each job (ops, plaintext inputs, position offset) of a model in MPC, the owner at rank 0.

    The inputs are secret-shared here, the parties run in spawned processes with a dealer, and each job's
    last op output is reconstructed; `batch` applies to every job; a job with a non-zero offset is a decode
    step that continues the KV cache of the jobs before it. Returns, per job, (output tensor, figures
    merged over the parties, in total and per op under "ops": see merge_party_figures).
    """
    from hsi.calibration import load_calibration
    from hsi.models.registry import load_graph
    from hsi.transport.shares import combine, ring_of, share_meta, split
    from hsi.transport.tensor import StoredTensor

    if repeats > 1 and any(offset for _, _, offset in jobs):
        raise ValueError("a job at a later position continues the one before it and cannot be repeated")
    graph = load_graph(model)
    shared_jobs = []
    for ops, inputs, offset in jobs:
        per_rank: list[dict[str, Any]] = [{} for _ in range(parties)]
        for name, value in inputs.items():
            for rank, s in enumerate(split(value, parties, precision)):
                per_rank[rank][name] = ring_of(s)
        shared_jobs.append((ops, per_rank, offset))
    results = run_parties(_run_jobs, (model, shared_jobs, load_calibration(model, graph), precision, repeats, batch),
                          parties=parties, ttp=True, comparisons=comparisons)
    out = []
    for j, (ops, _, _) in enumerate(jobs):
        name = ops[-1]
        shares = []
        for rank in range(parties):
            arr, figures = results[rank][j][0][name], results[rank][j][1]
            shares.append(StoredTensor(3, "int64", tuple(arr.shape), arr.astype("<i8").tobytes(),
                                       share_meta(rank, parties, precision, name in figures["integer"])))
        figs = [results[r][j][1] for r in range(parties)]
        merged = merge_party_figures(figs)
        merged["ops"] = [merge_party_figures(list(per_party)) for per_party in zip(*(f["ops"] for f in figs),
                                                                                    strict=True)]
        out.append((combine(name, shares), merged))
    return out


def merge_party_figures(figs: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure set from every compute party's: the slowest party's seconds and rounds, bytes summed."""
    merged: dict[str, Any] = {k: figs[0][k] for k in ("op", "type") if k in figs[0]}
    for key in ("seconds", "rounds", "party_rounds", "dealer_rounds"):
        merged[key] = max(f[key] for f in figs)
    for key in ("bytes", "party_bytes", "dealer_bytes"):
        merged[key] = sum(f[key] for f in figs)
    return merged
