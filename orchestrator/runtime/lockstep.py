"""Running one stage at every process of its zone at once (an MPC zone's parties and dealer in lockstep)."""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence

import grpc

from hsi import kinds
from hsi.plan import Stage
from hsi.policy import ZoneProcess
from orchestrator.runtime.client import ZoneClient
from orchestrator.runtime.errors import RunError
from orchestrator.runtime.metrics import MPC_BYTES, MPC_ROUNDS, Metrics
from orchestrator.schedule import Move, Run
from protos import zone_pb2

_CANCEL_POLL_S = 0.2  # how often a lockstep stage looks whether its caller has gone

Send = tuple[Move, str, zone_pb2.TransferRequest]  # (move, receiving party or "" for all, request)


class _NotAnswering(Exception):
    """Marks a process of a lockstep stage that failed its health probe while its peers had failed."""


def transfers(session: str, run: Run) -> list[Send]:
    """The sends of `run`'s zone after its stage: (move, receiving party or "" for all, request) in order. A
    plaintext tensor enters an MPC zone in one send that shares it to every party."""
    out = []
    for move in run.then:
        # a tensor in the clear enters a shared zone in one send that the sender splits into every party's share
        entering = kinds.spec(move.dst.kind).shared and not kinds.spec(move.src.kind).shared
        receivers = [""] if entering else move.dst.parties
        for receiver in receivers:
            out.append((move, receiver, zone_pb2.TransferRequest(
                session=session, name=move.tensor, to_zone=move.dst.zone, to_party=receiver,
                release=move.release and receiver == receivers[-1])))
    return out


def account_transfers(zones: ZoneClient, sends: list[Send], replies: dict[str, zone_pb2.RunStageReply],
                      m: Metrics) -> None:
    """Add the bytes per link and the seconds of each send, from each sending party's RunStage reply (the
    parties of an MPC zone send at once: a conversion's time is its slowest sender's)."""
    policy = zones.policy
    for i, (move, receiver, _) in enumerate(sends):
        seconds = 0.0
        for sender, reply in replies.items():
            got = reply.transfers[i]
            seconds = max(seconds, got.seconds)
            for link, n in got.bytes_by_link.items():  # a conversion through the enclave: every hop
                m.bytes_by_link[link] += n
            if not got.bytes_by_link:
                to = "+".join(policy.principal(p, move.dst.zone)
                              for p in ([receiver] if receiver else move.dst.parties))
                m.bytes_by_link[f"{policy.principal(sender, move.src.zone)}->{to}"] += got.bytes
        m.time_by_conversion[f"{move.src.kind}->{move.dst.kind}"] += seconds


def run_stage(zones: ZoneClient, plan_digest: str, session: str, run: Run, offset: int, m: Metrics,
              cancelled: Callable[[], bool] = lambda: False, lengths: Sequence[int] = ()) -> None:
    """RunStage at every process of the stage's zone at once (an MPC zone's parties and dealer in lockstep):
    each runs the stage, sends its outputs on as `run.then` says, then frees `run.release`. A lockstep stage
    is abandoned (CANCELLED) as soon as `cancelled()`: the caller's Release then stops its workers."""
    s = run.stage
    policy = zones.policy
    sends = transfers(session, run)
    request = zone_pb2.RunStageRequest(session=session, plan_digest=plan_digest, stage=s.index,
                                       position_offset=offset, release=run.release, lengths=list(lengths),
                                       then=[r for _, _, r in sends])
    calls = [ZoneProcess(s.zone, p, policy.zone_endpoints(s.zone)[p]) for p in s.parties]
    if policy.has_dealer(s.zone):
        calls.append(ZoneProcess(s.zone, *policy.dealer_endpoint(s.zone), dealer=True))
    if len(calls) == 1:
        reply = zones.run_stage(s.zone, s.parties[0], request)
        m.time_by_zone[s.zone] += reply.seconds
        m.held(s.zone, reply.held_bytes)
        account_transfers(zones, sends, {s.parties[0]: reply}, m)
        return
    dealer_request = zone_pb2.RunStageRequest()
    dealer_request.CopyFrom(request)
    dealer_request.ClearField("then")  # the dealer holds no tensors to send on
    finished: queue.Queue[grpc.Future] = queue.Queue()
    futures: dict[grpc.Future, ZoneProcess] = {}
    for who in calls:
        f = zones.stub_at(who.address).RunStage.future(dealer_request if who.dealer else request,
                                                        timeout=zones.deadline.stage_s)
        futures[f] = who
        f.add_done_callback(finished.put)
    replies: dict[ZoneProcess, zone_pb2.RunStageReply] = {}
    errors: dict[ZoneProcess, grpc.RpcError | _NotAnswering] = {}
    pending = set(futures)
    while pending:
        try:
            f = finished.get(timeout=_CANCEL_POLL_S)
        except queue.Empty:
            if cancelled():
                for other in pending:
                    other.cancel()
                raise RunError(f"the run was cancelled during stage {s.index}", grpc.StatusCode.CANCELLED) from None
            continue
        pending.discard(f)
        if f.exception() is None:
            replies[futures[f]] = f.result()
            continue
        errors[futures[f]] = f.exception()
        # A peer failed, so the lockstep cannot finish: name who does not answer, stop waiting for the rest.
        for other in pending:
            if not zones.healthy(futures[other].address):
                errors[futures[other]] = _NotAnswering()
            other.cancel()
        pending = set()
    if errors:
        raise RunError(lockstep_failure(zones, s, errors))
    m.time_by_zone[s.zone] += max(r.seconds for r in replies.values())
    if any(r.mpc_rounds for r in replies.values()):
        figures = m.mpc[s.zone]
        for name, key in zip(MPC_ROUNDS, ("mpc_rounds", "party_rounds", "dealer_rounds"), strict=True):
            figures[name] += max(getattr(r, key) for r in replies.values())
        for name, key in zip(MPC_BYTES, ("mpc_bytes", "party_bytes", "dealer_bytes"), strict=True):
            figures[name] += sum(getattr(r, key) for r in replies.values())
    m.held(s.zone, max(r.held_bytes for r in replies.values()))
    account_transfers(zones, sends, {who.party: r for who, r in replies.items() if not who.dealer}, m)


def lockstep_failure(zones: ZoneClient, s: Stage, errors: dict[ZoneProcess, grpc.RpcError | _NotAnswering]) -> str:
    """Name the process that broke a lockstep stage: one that is down or stalled, else every error."""
    def name(who: ZoneProcess) -> str:
        return f"{'dealer' if who.dealer else 'party'} {who.party} ({who.address})"

    culprits = [who for who, e in errors.items() if isinstance(e, _NotAnswering) or not zones.healthy(who.address)]
    detail = "; ".join(f"{name(w)}: {e.code().name}: {e.details()}" for w, e in errors.items()
                       if not isinstance(e, _NotAnswering))
    if culprits:
        return (f"MPC stage {s.index} of zone {s.zone!r} failed: {', '.join(name(w) for w in culprits)} "
                f"did not answer (down or stalled); the other parties freed the session. Errors: {detail}")
    return f"stage {s.index} of zone {s.zone!r} failed: {detail}"
