"""One party's CrypTen process for one session: joins the parties' group, runs stages on shares, exits.

A zone process runs its MPC computation in a worker process rather than in itself: a collective op blocked
on a dead or stalled peer cannot be cancelled, only killed, and the zone must keep serving new sessions.
The worker talks to its own zone process over a pipe (same party, same trust domain); between parties
only CrypTen's protocol messages travel.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from zones.mpc.links import MeshSpec

if TYPE_CHECKING:
    from hsi.batch import Batch
    from zones.mpc.key_pool import KeyPool
    from zones.mpc.weight_masks import WeightMasks

DEALER = "dealer"
PARTY = "party"


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to join a session: its rank, where the rendezvous is, and the model's facts."""

    session: str
    role: Literal["party", "dealer"]
    rank: int                 # compute parties 0..parties-1; the dealer is rank `parties`
    parties: int
    mesh: MeshSpec            # whom this worker links to, over mutual TLS
    precision_bits: int
    timeout_s: float
    model: str
    owner_rank: int | None    # the compute party holding the model's weights
    calibration: dict[str, Any]
    dcf_max_elements: int = 0  # comparisons up to this size from DCF keys (MpcZone.comparisons); 0: none
    dcf_pool_elements: int = 0  # DCF keys dealt at the session's end for the zone's next (MpcZone); 0: none


def _join(spec: WorkerSpec, conn: Any) -> Any:
    from zones.mpc.compat import fast_crypten, import_crypten

    crypten = import_crypten()
    from zones.mpc import tls_comm  # after CrypTen's import, which it needs

    # rank 0 tells its zone process where it listens; the zone's rendezvous hub sends the other ranks there
    tls_comm.prepare(spec.mesh, lambda port: conn.send(("listening", port)))
    crypten.cfg.mpc.provider = "TTP"
    crypten.cfg.encoder.precision_bits = spec.precision_bits
    crypten.cfg.communicator.verbose = True  # count rounds and bytes
    crypten.init()
    fast_crypten(spec.dcf_max_elements)
    return crypten


@dataclass(frozen=True)
class Preload:
    """What a compute party's worker loads before its session: the model's graph (measured: 10 s at a session's
    start when left to it, under the load of the other zones' new spare workers), and the weights at the owner."""

    model: str
    weights: bool


class _Party:
    """The compute party's side of a session: shared weights, KV caches, stage execution."""

    def __init__(self, spec: WorkerSpec, crypten: Any, kept: WeightMasks | None = None) -> None:
        from hsi.models.registry import load_graph
        from zones.mpc.kernels import MpcState
        from zones.mpc.weight_masks import MaskTracker, WeightMasks

        self.spec = spec
        self.crypten = crypten
        self.graph = load_graph(spec.model)
        self.state = MpcState()
        self.masks = MaskTracker(kept if kept is not None else WeightMasks(0))
        self._owner_weights: dict[str, Any] | None = None

    def _weights(self) -> dict[str, Any]:
        if self._owner_weights is None:
            from hsi.models.registry import load_model

            self._owner_weights = load_model(self.spec.model).weights()
        return self._owner_weights

    def _shared_weight(self, op: Any, index: int) -> Any:
        import torch

        from hsi.ir import OpType
        from zones.mpc.fixed_weights import fixed_weight
        from zones.mpc.kernels import prepare_weight, shared_weight_shape

        name = op.weights[index]
        key = f"{op.name}#{index}"  # tied weights are shared once per use: their layouts differ
        if key not in self.state.weights:
            if self.spec.owner_rank is None:
                raise RuntimeError(f"op {op.name!r} needs weights, but the model owner is no party of this zone")
            width_in = self.graph.op(op.inputs[0]).shape[-1] if op.inputs[0] not in self.graph.inputs else 0
            shape = shared_weight_shape(op, index, int(width_in))

            def share() -> Any:
                if self.spec.rank == self.spec.owner_rank:
                    value = prepare_weight(op, index, self._weights()[name])
                    if tuple(value.shape) != shape:
                        raise RuntimeError(f"weight {name!r} has shape {list(value.shape)}, the graph implies {shape}")
                else:
                    value = torch.zeros(shape)
                return self.crypten.cryptensor(value, src=self.spec.owner_rank, precision=self.spec.precision_bits)

            if op.type in (OpType.LINEAR, OpType.LM_HEAD) and index == 0:  # by its mask, kept between sessions
                self.state.weights[key] = fixed_weight(key, share, 1 << self.spec.precision_bits, self.masks,
                                                       self.spec.session)
            else:
                self.state.weights[key] = share()
        return self.state.weights[key]

    def _at_precision(self, name: str, t: Any) -> np.ndarray:
        """The party's share of `t` at the zone's fixed-point precision (comparisons yield precision 0)."""
        scale, want = int(t._tensor.encoder.scale), 1 << self.spec.precision_bits
        share = t.share
        if scale != want:
            if want % scale:
                raise RuntimeError(f"{name!r} came out at scale {scale}, not a divisor of {want}")
            share = share * (want // scale)  # exact in the ring: a share times a public integer
        return share.numpy().astype("<i8")

    def _adopt(self, share: np.ndarray) -> Any:
        """This party's share as a CrypTen tensor, re-randomised by a pseudo-random zero sharing: a bounded
        share from an HE conversion becomes ring-uniform, like every other share."""
        import torch

        from zones.mpc.randomness import zero_sharing

        t = self.crypten.mpc.MPCTensor.from_shares(torch.from_numpy(share), precision=self.spec.precision_bits)
        # each party adds its previous neighbour's pairwise AES-CTR stream and subtracts its next one's
        t._tensor.share += zero_sharing(t._tensor.share.size())
        return t

    def run(self, ops: list[str], inputs: dict[str, np.ndarray], offset: int, batch: Batch | None, keep: list[str]
            ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Run the named ops on shared inputs; this party's shares of the tensors in `keep`, and traffic figures."""
        from hsi.ir import OpType
        from zones.mpc.kernels import MPC_KERNELS, MpcStep

        comm = self.crypten.communicator.get()
        start, began = _traffic(comm), time.perf_counter()
        env = {n: self._adopt(a) for n, a in inputs.items()}
        step = MpcStep(offset, self.spec.calibration, batch)
        integer = set()
        per_op: list[dict[str, Any]] = []
        for name in ops:
            op = self.graph.op(name)
            before, t0 = _traffic(comm), time.perf_counter()
            weights = [self._shared_weight(op, i) for i in range(len(op.weights))]
            env[name] = MPC_KERNELS[op.type](op, [env[t] for t in op.inputs], weights, step, self.state)
            per_op.append({"op": name, "type": op.type.value, "seconds": time.perf_counter() - t0,
                           **_since(before, _traffic(comm))})
            if op.type == OpType.SAMPLE:
                integer.add(name)
        out = {n: self._at_precision(n, env[n]) for n in keep}
        figures = {**_since(start, _traffic(comm)), "seconds": time.perf_counter() - began,
                   "integer": sorted(integer), "ops": per_op}
        return out, figures  # type: ignore[return-value]


def _traffic(comm: Any) -> dict[str, int]:
    """This party's cumulative traffic: CrypTen's own count (`rounds`, `bytes`: every message, the dealer's
    included, bytes as 8 per element) and the mesh's exact split (`party_rounds`, `party_bytes`, `dealer_rounds`,
    `dealer_bytes`: see TlsCommunicator.traffic)."""
    stats = comm.get_communication_stats()
    split = comm.traffic()
    return {"rounds": int(stats["rounds"]), "bytes": int(stats["bytes"]), "party_rounds": split["rounds"],
            "party_bytes": split["bytes"], "dealer_rounds": split["dealer_rounds"],
            "dealer_bytes": split["dealer_bytes"]}


def _since(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    return {k: float(after[k] - before[k]) for k in after}


def worker_main(conn: Any, preload: Preload | None = None) -> None:
    """Entry point of a worker: import CrypTen and load what `preload` names while idle, then serve one
    session."""
    import zones.mpc.preload  # noqa: F401  (already imported in the fork server this worker forks from)

    if preload:
        from hsi.models.registry import load_graph, load_model

        load_graph(preload.model)
        if preload.weights:
            load_model(preload.model).weights()
    try:
        msg = conn.recv()
    except EOFError:
        return
    if msg[0] != "start":
        return
    spec: WorkerSpec
    kept: WeightMasks
    pool: KeyPool | None
    _, spec, kept, pool = msg
    try:
        crypten = _join(spec, conn)
    except Exception as e:  # reported to the zone, which names the session and the cause
        conn.send(("error", f"joining the parties failed: {type(e).__name__}: {e}"))
        return
    conn.send(("joined",))
    try:
        if spec.role == DEALER:
            from zones.mpc.fixed_weights import serve_dealer
            from zones.mpc.weight_masks import MaskTracker

            outcome = serve_dealer(MaskTracker(kept))  # serves until rank 0 says "terminate"
            crypten.uninit()
            conn.send(("done", outcome))
            return
        from zones.mpc import fss
        from zones.mpc.key_pool import PoolState

        party = _Party(spec, crypten, kept)
        keys = PoolState(pool, spec.dcf_pool_elements)
        fss.use_pool(keys)
        while True:
            cmd = conn.recv()
            if cmd[0] == "close":
                break
            _, ops, inputs, offset, batch, keep = cmd
            out, figures = party.run(ops, inputs, offset, batch, keep)
            conn.send(("ok", out, figures))
        # the result has gone out: deal the next session's comparison keys now, in what is idle time to the caller
        n = keys.refill_size()
        after = fss.refill(n, spec.session) if n else None
        crypten.uninit()
        conn.send(("done", party.masks.result(), after))  # what this session leaves for the zone's next ones
    except Exception as e:
        # A failed collective leaves the parties out of step: the session is over for this worker.
        traceback.print_exc()  # into the zone's log; the zone reports the one-line cause
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        try:
            conn.send(("error", detail))
        except OSError:
            pass
