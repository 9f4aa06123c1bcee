"""The MPC zone's engines: a compute party and the dealer, each driving one CrypTen worker per session.

All parties of a zone run the same stage in lockstep: the runtime calls RunStage on every compute party
and the dealer at once; the first call of a session starts a worker that joins the others through the
rendezvous at rank 0. A session ends with Release, or when a peer dies or stalls past the stage deadline;
either way the worker goes and the zone serves the next session with a fresh one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np

from hsi.calibration import CalibrationError, load_calibration
from hsi.engine import RunContext, StageTraffic, ZoneEngine
from hsi.ir import Graph, ZoneKind
from hsi.kinds import register_engine
from hsi.masking import TO_HE
from hsi.plan import Stage
from hsi.policy import MpcZone, Policy
from hsi.transport.certs import certs_dir, load_credentials
from hsi.transport.shares import ring_of, share_index, share_meta
from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from protos import tensor_pb2 as pb
from zones.mpc.hub import Hub
from zones.mpc.key_pool import KeyPool
from zones.mpc.links import MeshSpec, contexts
from zones.mpc.process import WorkerProcess
from zones.mpc.weight_masks import SessionMasks, WeightMasks, merge
from zones.mpc.worker import DEALER, PARTY, Preload, WorkerSpec

log = logging.getLogger("hsi.mpc")
_STARTER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mpc-spare")


class _Base(ZoneEngine):
    """What a compute party and the dealer share: one session at a time, a warm spare worker."""

    role = PARTY

    def __init__(self, policy: Policy, zone: str, party: str) -> None:
        z = policy.zones[zone]
        if not isinstance(z, MpcZone):
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION, f"zone {zone!r} is not an MPC zone")
        self.policy, self.zone, self.party, self.cfg = policy, zone, party, z
        names = list(z.parties)
        self.rank = len(names) if self.role == DEALER else names.index(party)
        self.hub = (policy.parties[names[0]].address, z.rendezvous_port)  # rank 0 listens there for the others
        # a dealer inside the enclave (`dealer: enclave`) presents the enclave's certificate
        self.principals = (*(policy.principal(n, zone) for n in names), policy.dealer_principal(zone))
        own = self.principals[self.rank]
        self.credentials = load_credentials(certs_dir(policy), own)
        self.timeout = policy.transport.deadlines.stage_s
        # Parties wait for each other only within a stage; the dealer idles between stages (while other
        # zones compute), so only its waits may last as long as a stage.
        self.peer_timeout = self.timeout if self.role == DEALER else min(z.peer_timeout_s, self.timeout)
        self.owner_rank = names.index(policy.model.owner) if policy.model.owner in names else None
        self._lock = threading.Lock()
        self._sessions: dict[str, WorkerProcess] = {}
        # a compute party's workers load the model's graph (the owner's also its weights) while they wait
        self._preload = (Preload(policy.model.name, weights=self.rank == self.owner_rank) if self.role == PARTY
                         else None)
        # Started in the background: the first fork waits for the fork server's imports, the zone need not.
        self._spare: Future[WorkerProcess] | None = _STARTER.submit(WorkerProcess, self._preload)
        self._traffic: dict[str, StageTraffic] = {}
        self._masks = WeightMasks(z.keep_weight_masks_mb << 20)  # kept between sessions (`weight_masks`)
        self._pool: KeyPool | None = None  # DCF keys the last session dealt for the next (`key_pool`)
        self._ending: set[WorkerProcess] = set()  # released sessions' workers still winding down (dealing keys)
        self._ended_cv = threading.Condition(self._lock)
        self.max_sessions = policy.transport.max_sessions
        # rank 0's zone answers the rendezvous for every session: each session's rank-0 worker has a port of its own
        self._hub = Hub(self.principals, contexts(self.credentials)[0], z.rendezvous_port) \
            if self.role == PARTY and self.rank == 0 else None

    def _calibration(self) -> dict[str, Any]:
        return {}

    def _who(self, session: str) -> str:
        role = "dealer" if self.role == DEALER else f"party {self.rank}"
        return f"MPC zone {self.zone!r} {role} ({self.party}) in session {session[:12]}"

    def _worker(self, session: str) -> WorkerProcess:
        """The session's worker, started and joined on the session's first call; RESOURCE_EXHAUSTED when the zone
        already runs `transport.max_sessions` sessions."""
        end = time.monotonic() + self.peer_timeout
        with self._lock:  # a new session gets what the sessions that ended leave (masks, keys): wait for them
            if session not in self._sessions:
                self._ended_cv.wait_for(lambda: not self._ending, timeout=self.timeout)
        while True:
            with self._lock:
                w = self._sessions.get(session)
                if w is not None:
                    if not w.process.is_alive():
                        raise ZoneError(grpc.StatusCode.ABORTED, f"{self._who(session)}: the session's worker is "
                                        f"gone (exit code {w.process.exitcode}); start a new session")
                    return w
                self._reap_idle()
                if len(self._sessions) < self.max_sessions:
                    w = self._spare.result() if self._spare is not None else WorkerProcess(self._preload)
                    if not w.process.is_alive():
                        w = WorkerProcess(self._preload)
                    self._spare = _STARTER.submit(WorkerProcess, self._preload)
                    self._sessions[session] = w
                    break
            # Full: a session ending (or one that failed winding down) frees a place; wait for it a little.
            if time.monotonic() > end:
                raise ZoneError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"MPC zone {self.zone!r} at {self.party} runs {self.max_sessions} sessions, its limit "
                                "(transport.max_sessions); retry when one is released")
            time.sleep(0.2)
        mesh = MeshSpec(session, self.rank, self.principals, self.hub, self.credentials, self.peer_timeout,
                        dealer=True)
        spec = WorkerSpec(session, self.role, self.rank, len(self.cfg.parties), mesh,  # type: ignore[arg-type]
                          self.cfg.fixed_point_bits, self.peer_timeout, self.policy.model.name,
                          self.owner_rank, self._calibration(), self.cfg.dcf_limit(), self.cfg.dcf_pool_elements)
        with self._lock:  # the pool goes to one session only: a key never serves twice
            pool, self._pool = self._pool, None
        hub = self._hub
        announce = (lambda port: hub.announce(session, port)) if hub is not None else None
        try:
            w.request(("start", spec, self._masks, pool), self.timeout, f"{self._who(session)} joining its peers",
                      announce)
        except ZoneError as e:
            with self._lock:
                self._sessions.pop(session, None)
            refused = hub.refusals(session, self.timeout) if hub is not None else []
            if refused:  # who tried to join at the rendezvous and was turned away
                raise ZoneError(e.code, f"{e}; refused at the rendezvous: {'; '.join(refused)}") from None
            raise
        finally:
            if hub is not None:
                hub.forget(session)
        return w

    def _reap_idle(self) -> None:
        # A session whose runtime vanished without Release must not block the zone forever.
        now = time.monotonic()
        for sid, w in list(self._sessions.items()):
            if not w.process.is_alive() or now - w.last_used > self.timeout:
                log.warning("%s: reclaiming an idle or dead session", self._who(sid))
                w.kill()
                del self._sessions[sid]

    def _ended(self, reply: tuple[Any, ...] | None) -> None:
        """Keep what a session that ended cleanly left (its worker's last word: ("done", SessionMasks, KeyPool)):
        the masks it drew, the keys it dealt for the next session."""
        if not reply or reply[0] != "done":
            return
        with self._lock:
            if len(reply) > 1 and isinstance(reply[1], SessionMasks):
                self._masks = merge(self._masks, reply[1])
            if len(reply) > 2 and isinstance(reply[2], KeyPool):
                self._pool = reply[2]

    def _wind_down(self, w: WorkerProcess, end: Callable[[WorkerProcess], tuple[Any, ...] | None]) -> None:
        """End a released session's worker in the background (it may deal the next session's keys first): the
        caller's Release returns at once, the zone's next session waits for what it leaves."""
        with self._lock:
            self._ending.add(w)

        def run() -> None:
            try:
                self._ended(end(w))
            finally:
                with self._lock:
                    self._ending.discard(w)
                    self._ended_cv.notify_all()

        threading.Thread(target=run, name="mpc-wind-down", daemon=True).start()

    def load_stage(self, stage: Stage, graph: Graph) -> None:
        """Nothing to prepare ahead: weights are shared per session, inside the worker."""

    def release(self, session: str) -> None:
        """End the session's worker."""
        with self._lock:
            w = self._sessions.pop(session, None)
            self._traffic.pop(session, None)
        if w is not None:
            self._wind_down(w, lambda w: w.close(timeout=self.timeout))

    def close(self) -> None:
        """Stop the rendezvous hub and every worker (zone shutdown)."""
        if self._hub is not None:
            self._hub.close()
        with self._lock:
            workers = [*self._sessions.values(), *self._ending] + ([self._spare.result()] if self._spare else [])
            self._sessions.clear()
            self._spare = None
        for w in workers:
            w.kill()


@register_engine(ZoneKind.MPC)
class MpcEngine(_Base):
    """A compute party: runs stages on its shares in lockstep with the other parties."""

    role = PARTY

    def __init__(self, policy: Policy, zone: str, party: str) -> None:
        super().__init__(policy, zone, party)
        from hsi.models.registry import load_graph

        self._graph = load_graph(policy.model.name)
        try:
            self._cal = load_calibration(policy.model.name, self._graph, self.cfg.calibration)
        except CalibrationError as e:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION, str(e)) from None

    def _calibration(self) -> dict[str, Any]:
        return self._cal

    def stage_traffic(self, session: str) -> StageTraffic:
        """What the session's last stage cost at this party in rounds and bytes."""
        with self._lock:
            return self._traffic.get(session, StageTraffic())

    def _input(self, name: str, t: StoredTensor) -> np.ndarray:
        index, count, precision = share_index(name, t)
        if index != self.rank or count != len(self.cfg.parties) or precision != self.cfg.fixed_point_bits:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"share {name!r} is share {index} of {count} at {precision} bits; party {self.rank} of "
                            f"zone {self.zone!r} takes share {self.rank} of {len(self.cfg.parties)} at "
                            f"{self.cfg.fixed_point_bits} bits")
        return ring_of(t).copy()

    def run_stage(self, stage: Stage, inputs: dict[str, StoredTensor], ctx: RunContext) -> dict[str, StoredTensor]:
        """Run the stage on this party's shares; its outputs are this party's shares."""
        arrays = {n: self._input(n, t) for n, t in inputs.items()}
        w = self._worker(ctx.session)
        try:
            _, out, figures = w.request(("run", stage.ops, arrays, ctx.position_offset, ctx.batch, stage.outputs),
                                        self.timeout, f"{self._who(ctx.session)} stage {stage.index}")
        except ZoneError:
            with self._lock:  # the session is over at this party; the zone is free for the next one
                self._sessions.pop(ctx.session, None)
            raise
        with self._lock:
            self._traffic[ctx.session] = StageTraffic(**{k: int(figures[k]) for k in (
                "rounds", "bytes", "party_rounds", "party_bytes", "dealer_rounds", "dealer_bytes")})
        parties, bits = len(self.cfg.parties), self.cfg.fixed_point_bits
        return {n: StoredTensor(pb.SHARE, "int64", tuple(a.shape), a.astype("<i8").tobytes(),
                                share_meta(self.rank, parties, bits, n in figures["integer"])
                                | ({TO_HE: "1"} if n in stage.reshare else {}))
                for n, a in out.items()}


class MpcDealer(_Base):
    """The dealer: a trusted third party that hands out Beaver triples for a session and sees no shares."""

    role = DEALER
    holds_tensors = False

    def run_stage(self, stage: Stage, inputs: dict[str, StoredTensor], ctx: RunContext) -> dict[str, StoredTensor]:
        """Make sure the session's dealer has joined and is serving; it produces no tensors."""
        self._worker(ctx.session)  # raises when the session's dealer is gone
        return {}

    def release(self, session: str) -> None:
        """The dealer's worker ends when rank 0 leaves; wait for that, then make sure."""
        with self._lock:
            w = self._sessions.pop(session, None)
        if w is not None:
            self._wind_down(w, lambda w: w.finished(timeout=self.timeout))
