"""The runtime at the client: drives the zones through a plan. Tensors move zone to zone, never through it."""

from __future__ import annotations

import queue
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import torch

from orchestrator.keyclient import KeyServiceError, attest_enclave
from orchestrator.models.registry import load_graph, load_tokenizer
from orchestrator.planner import Plan, Stage, make_plan
from orchestrator.policy import MpcZone, Policy, TeeZone
from orchestrator.schedule import Move, Run, step_program
from protos import tensor_pb2 as pb
from protos import zone_pb2, zone_pb2_grpc
from zones.common.attestation import AttestationError
from zones.common.certs import Credentials, load_credentials
from zones.common.codec import decode_tensor, encode_tensor
from zones.common.engine import StoredTensor, ZoneError
from zones.common.server import secure_channel
from zones.common.shares import combine, split
from zones.common.stream import StreamError, frames, receive
from zones.serve import certs_dir

Progress = Callable[[str, int, int], None]  # (what, done, total)
SUPPORTED_CONVERSIONS = frozenset({"plain->plain", "plain->mpc", "mpc->plain", "plain->he", "he->mpc", "mpc->he",
                                   "he->tee", "tee->he", "plain->tee", "tee->plain"})


class _NotAnswering(Exception):
    """Marks a process of a lockstep stage that failed its health probe while its peers had failed."""


class RunError(RuntimeError):
    """A run that failed; the message names the zone, the call and the cause. The session was released."""


@dataclass
class Metrics:
    """Time per zone (seconds of stage compute) and bytes per link of one run."""

    time_by_zone: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    bytes_by_link: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    mpc_rounds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    mpc_bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    time_by_conversion: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    peak_held_bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def held(self, zone: str, n: int) -> None:
        """Note the bytes of session tensors a zone held after a stage (the run keeps the peak)."""
        self.peak_held_bytes[zone] = max(self.peak_held_bytes[zone], n)

    def to_dict(self, wall_s: float) -> dict[str, Any]:
        """The `metrics` block of a run's JSON result."""
        out: dict[str, Any] = {"wall_s": round(wall_s, 4),
                               "time_by_zone": {k: round(v, 4) for k, v in sorted(self.time_by_zone.items())},
                               "bytes_by_link": dict(sorted(self.bytes_by_link.items()))}
        if self.time_by_conversion:  # seconds the senders spent moving tensors, by conversion kind
            out["time_by_conversion"] = {k: round(v, 4) for k, v in sorted(self.time_by_conversion.items())}
        if self.peak_held_bytes:  # the most bytes of the session's tensors a zone held after any stage
            out["peak_held_bytes"] = dict(sorted(self.peak_held_bytes.items()))
        if self.mpc_rounds:
            out["mpc"] = {z: {"rounds": self.mpc_rounds[z], "bytes": self.mpc_bytes[z]}
                          for z in sorted(self.mpc_rounds)}
        return out


@dataclass
class RunResult:
    """The output of a run, its metrics and what every zone received."""

    output: dict[str, Any]
    metrics: dict[str, Any]
    privacy: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object `hsi embed/generate --json` prints (without `reference`)."""
        return {"output": self.output, "metrics": self.metrics, "privacy": self.privacy}


def observed_mismatches(plan: Plan, receipts: list[dict[str, Any]], policy: Policy) -> list[str]:
    """Receipts that the plan's privacy report does not account for (a party got more than planned)."""
    out = []
    for r in receipts:
        zone = policy.zones[r["zone"]]
        viewer = f"{r['party']} (enclave {r['zone']})" if zone.kind == "tee" else r["party"]
        view = plan.privacy.get(viewer)
        field_name = {"plain": "activations", "ckks": "ciphertexts", "share": "shares", "sealed": "activations"}
        kind = field_name[r["encoding"]]
        if kind == "shares" and zone.kind == "plain":
            kind = "activations"  # a plain zone combines the shares it receives
        listed = getattr(view, kind) if view else []
        if r["name"] not in listed:
            out.append(f"{viewer} received {r['name']!r} as {r['encoding']}, which the privacy report does not list")
    return out


class Runtime:
    """Runs embed/generate requests of one policy against running zones."""

    def __init__(self, policy: Policy, progress: Progress | None = None, certs: Credentials | None = None) -> None:
        self.policy = policy
        self.graph = load_graph(policy.model.name)
        self.plan = make_plan(self.graph, policy)
        self._program = step_program(self.plan, self.graph.outputs)
        pending = sorted({c.kind for c in self.plan.conversions if c.kind not in SUPPORTED_CONVERSIONS})
        if pending:
            raise RunError(f"policy {policy.name!r} needs conversions {pending}, which the runtime cannot perform "
                           f"yet (it performs {', '.join(sorted(SUPPORTED_CONVERSIONS))}); see `hsi plan`")
        self.creds = certs or load_credentials(certs_dir(policy), policy.runtime_principal)
        self.progress = progress or (lambda what, done, total: None)
        self.deadline = policy.transport.deadlines
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, zone_pb2_grpc.ZoneStub] = {}
        self._loaded = False
        self._tokenizer: Any = None
        self._attested: set[str] = set()  # enclaves whose quote this runtime verified

    # -- plumbing ------------------------------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (loaded on first use)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.policy.model.name)
        return self._tokenizer

    def _channel(self, target: str) -> grpc.Channel:
        if target not in self._channels:
            self._channels[target] = secure_channel(self.creds, target, self.policy.transport.max_message_bytes)
        return self._channels[target]

    def _stub(self, zone: str, party: str | None = None, dealer: bool = False) -> zone_pb2_grpc.ZoneStub:
        if dealer:
            target = self.policy.dealer_endpoint(zone)[1]
        else:
            endpoints = self.policy.zone_endpoints(zone)
            target = endpoints[party or next(iter(endpoints))]
        if target not in self._stubs:
            self._stubs[target] = zone_pb2_grpc.ZoneStub(self._channel(target))
        return self._stubs[target]

    def _call(self, zone: str, method: str, request: Any, timeout: float, party: str | None = None) -> Any:
        try:
            return getattr(self._stub(zone, party), method)(request, timeout=timeout)
        except grpc.RpcError as e:
            where = self.policy.zone_endpoints(zone)
            if party:
                where = {party: where[party]}
            raise RunError(f"zone {zone!r} ({', '.join(f'{p} at {a}' for p, a in where.items())}) failed {method}: "
                           f"{e.code().name}: {e.details()}") from None

    def _healthy(self, target: str, timeout: float = 2.0) -> bool:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            health_pb2_grpc.HealthStub(self._channel(target)).Check(health_pb2.HealthCheckRequest(service=""),
                                                                    timeout=timeout)
            return True
        except grpc.RpcError:
            return False

    def close(self) -> None:
        """Close every channel."""
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()
        self._stubs.clear()

    def wait_ready(self, timeout: float) -> None:
        """Block until every zone answers its health check; RunError naming the zones that do not."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        end = time.monotonic() + timeout
        pending = {proc.key: proc.address for proc in self.policy.processes()}
        last: dict[str, str] = {}
        while pending and time.monotonic() < end:
            for key, target in sorted(pending.items()):
                try:
                    health_pb2_grpc.HealthStub(self._channel(target)).Check(
                        health_pb2.HealthCheckRequest(service=""), timeout=2)
                    del pending[key]
                except grpc.RpcError as e:
                    last[key] = f"{e.code().name}: {e.details()}"
            if pending:
                time.sleep(0.3)
        if pending:
            raise RunError(f"zones not healthy within {timeout:.0f} s: " + "; ".join(
                f"{k}: {last.get(k, 'no answer')}" for k in sorted(pending)))

    def load(self) -> None:
        """Ask every zone to load its stages (once per runtime)."""
        if self._loaded:
            return
        for s in self.plan.stages:
            self.progress(f"load stage {s.index} in {s.zone}", s.index, len(self.plan.stages))
            request = zone_pb2.LoadStageRequest(plan_digest=self.plan.digest, stage=s.index)
            for party in s.parties:
                self._call(s.zone, "LoadStage", request, self.deadline.stage_s, party)
            if s.kind == "mpc":
                try:
                    self._stub(s.zone, dealer=True).LoadStage(request, timeout=self.deadline.stage_s)
                except grpc.RpcError as e:
                    raise RunError(f"the dealer of zone {s.zone!r} at {self.policy.dealer_endpoint(s.zone)[1]} failed "
                                   f"LoadStage: {e.code().name}: {e.details()}") from None
        self._loaded = True

    # -- one step through the plan -------------------------------------------------------------------------------

    def _push(self, session: str, stage: Stage, name: str, tensor: torch.Tensor, m: Metrics) -> None:
        """Send a client tensor to a stage's zone: as it is, or secret-shared to the parties of an MPC zone."""
        zone = self.policy.zones[stage.zone]
        if isinstance(zone, MpcZone):
            sent = split(tensor, len(stage.parties), zone.fixed_point_bits)
        else:
            if isinstance(zone, TeeZone):
                self._attest(stage.zone)
            dtype, shape, data = encode_tensor(tensor)
            sent = [StoredTensor(pb.PLAIN, dtype, tuple(shape), data)] * len(stage.parties)
        for party, t in zip(stage.parties, sent, strict=True):
            header = pb.TensorHeader(session=session, name=name, encoding=t.encoding,  # type: ignore[arg-type]
                                     source_party=self.policy.client, dtype=t.dtype, shape=list(t.shape),
                                     meta=t.meta)
            try:
                self._stub(stage.zone, party).PushTensor(frames(header, t.data, self.policy.transport.chunk_bytes),
                                                         timeout=self.deadline.rpc_s)
            except grpc.RpcError as e:
                raise RunError(f"zone {stage.zone!r} refused input {name!r}: {e.code().name}: {e.details()}") from None
            link = f"{self.policy.runtime_principal}->{self.policy.principal(party, stage.zone)}"
            m.bytes_by_link[link] += len(t.data)

    def _attest(self, zone: str) -> None:
        """Verify an enclave's quote against the policy's pins once, before the first plaintext goes to it."""
        if zone in self._attested:
            return
        try:
            attest_enclave(self.policy, zone, self.policy.runtime_principal)
        except (KeyServiceError, AttestationError) as e:
            raise RunError(f"no plaintext goes to enclave {zone!r}: its attestation failed: {e}") from None
        self._attested.add(zone)

    def _pull_one(self, session: str, stage: Stage, party: str, name: str, m: Metrics) -> Any:
        stream = self._stub(stage.zone, party).PullTensor(zone_pb2.PullTensorRequest(session=session, name=name),
                                                           timeout=self.deadline.rpc_s)
        try:
            got = receive(stream, self.policy.transport.max_tensor_bytes, self.policy.transport.chunk_bytes)
        except grpc.RpcError as e:
            raise RunError(f"zone {stage.zone!r} at {party} failed PullTensor of {name!r}: "
                           f"{e.code().name}: {e.details()}") from None
        except StreamError as e:
            raise RunError(f"zone {stage.zone!r} at {party} sent a bad stream for {name!r}: {e}") from None
        m.bytes_by_link[f"{self.policy.principal(party, stage.zone)}->{self.policy.runtime_principal}"] += len(got.data)
        return got

    def _pull(self, session: str, stage: Stage, name: str, m: Metrics) -> torch.Tensor:
        """An output of the plan: plaintext from a zone, or every party's share from an MPC zone, combined."""
        if stage.kind == "mpc":
            shares = []
            for party in stage.parties:
                got = self._pull_one(session, stage, party, name, m)
                h = got.header
                shares.append(StoredTensor(h.encoding, h.dtype, tuple(h.shape), got.data, dict(h.meta)))
            try:
                return combine(name, shares)
            except ZoneError as e:
                raise RunError(f"the shares of output {name!r} from zone {stage.zone!r} do not combine: {e}") from None
        got = self._pull_one(session, stage, stage.parties[0], name, m)
        if got.header.encoding != pb.PLAIN:
            raise RunError(f"output {name!r} arrived as {pb.Encoding.Name(got.header.encoding)}, not plaintext")
        return decode_tensor(got.header.dtype, list(got.header.shape), got.data)

    def _transfers(self, session: str, run: Run) -> list[tuple[Move, str, zone_pb2.TransferRequest]]:
        """The sends of `run`'s zone after its stage: (move, receiving party or "" for all, request) in order. A
        plaintext tensor enters an MPC zone in one send that shares it to every party."""
        out = []
        for move in run.then:
            receivers = [""] if move.dst.kind == "mpc" and move.src.kind != "mpc" else move.dst.parties
            for receiver in receivers:
                out.append((move, receiver, zone_pb2.TransferRequest(
                    session=session, name=move.tensor, to_zone=move.dst.zone, to_party=receiver,
                    release=move.release and receiver == receivers[-1])))
        return out

    def _account_transfers(self, sends: list[tuple[Move, str, zone_pb2.TransferRequest]],
                           replies: dict[str, Any], m: Metrics) -> None:
        """Add the bytes per link and the seconds of each send, from each sending party's RunStage reply (the
        parties of an MPC zone send at once: a conversion's time is its slowest sender's)."""
        for i, (move, receiver, _) in enumerate(sends):
            seconds = 0.0
            for sender, reply in replies.items():
                got = reply.transfers[i]
                seconds = max(seconds, got.seconds)
                for link, n in got.bytes_by_link.items():  # a conversion through the enclave: every hop
                    m.bytes_by_link[link] += n
                if not got.bytes_by_link:
                    to = "+".join(self.policy.principal(p, move.dst.zone)
                                  for p in ([receiver] if receiver else move.dst.parties))
                    m.bytes_by_link[f"{self.policy.principal(sender, move.src.zone)}->{to}"] += got.bytes
            m.time_by_conversion[f"{move.src.kind}->{move.dst.kind}"] += seconds

    def _run_stage(self, session: str, run: Run, offset: int, m: Metrics) -> None:
        """RunStage at every process of the stage's zone at once (an MPC zone's parties and dealer in lockstep):
        each runs the stage, sends its outputs on as `run.then` says, then frees `run.release`."""
        s = run.stage
        sends = self._transfers(session, run)
        request = zone_pb2.RunStageRequest(session=session, plan_digest=self.plan.digest, stage=s.index,
                                           position_offset=offset, release=run.release,
                                           then=[r for _, _, r in sends])
        calls: list[tuple[str, str, bool]] = [(p, self.policy.zone_endpoints(s.zone)[p], False) for p in s.parties]
        if s.kind == "mpc":
            calls.append((*self.policy.dealer_endpoint(s.zone), True))
        if len(calls) == 1:
            reply = self._call(s.zone, "RunStage", request, self.deadline.stage_s, s.parties[0])
            m.time_by_zone[s.zone] += reply.seconds
            m.held(s.zone, reply.held_bytes)
            self._account_transfers(sends, {s.parties[0]: reply}, m)
            return
        dealer_request = zone_pb2.RunStageRequest()
        dealer_request.CopyFrom(request)
        dealer_request.ClearField("then")  # the dealer holds no tensors to send on
        finished: queue.Queue[Any] = queue.Queue()
        futures = {}
        for who in calls:
            f = self._stub(s.zone, who[0], who[2]).RunStage.future(dealer_request if who[2] else request,
                                                                   timeout=self.deadline.stage_s)
            futures[f] = who
            f.add_done_callback(finished.put)
        replies, errors = {}, {}
        pending = set(futures)
        while pending:
            f = finished.get()
            pending.discard(f)
            if f.exception() is None:
                replies[futures[f]] = f.result()
                continue
            errors[futures[f]] = f.exception()
            # A peer failed, so the lockstep cannot finish: name who does not answer, stop waiting for the rest.
            for other in pending:
                if not self._healthy(futures[other][1]):
                    errors[futures[other]] = _NotAnswering()
                other.cancel()
            pending = set()
        if errors:
            raise RunError(self._lockstep_failure(s, errors))
        m.time_by_zone[s.zone] += max(r.seconds for r in replies.values())
        m.mpc_rounds[s.zone] += max(r.mpc_rounds for r in replies.values())
        m.mpc_bytes[s.zone] += sum(r.mpc_bytes for r in replies.values())
        m.held(s.zone, max(r.held_bytes for r in replies.values()))
        self._account_transfers(sends, {who[0]: r for who, r in replies.items() if not who[2]}, m)

    def _lockstep_failure(self, s: Stage, errors: dict[tuple[str, str, bool], Any]) -> str:
        """Name the process that broke a lockstep stage: one that is down or stalled, else every error."""
        def name(who: tuple[str, str, bool]) -> str:
            return f"{'dealer' if who[2] else 'party'} {who[0]} ({who[1]})"

        culprits = [who for who, e in errors.items() if isinstance(e, _NotAnswering) or not self._healthy(who[1])]
        detail = "; ".join(f"{name(w)}: {e.code().name}: {e.details()}" for w, e in errors.items()
                           if not isinstance(e, _NotAnswering))
        if culprits:
            return (f"MPC stage {s.index} of zone {s.zone!r} failed: {', '.join(name(w) for w in culprits)} "
                    f"did not answer (down or stalled); the other parties freed the session. Errors: {detail}")
        return f"stage {s.index} of zone {s.zone!r} failed: {detail}"

    def _step(self, session: str, inputs: dict[str, torch.Tensor], offset: int, m: Metrics) -> dict[str, torch.Tensor]:
        for push in self._program.pushes:
            self._push(session, push.stage, push.tensor, inputs[push.tensor], m)
        total = len(self.plan.stages)
        for run in self._program.runs:
            s = run.stage
            self.progress(f"stage {s.index} ({s.kind}) in {s.zone}", s.index, total)
            self._run_stage(session, run, offset, m)
        self.progress("done", total, total)
        return {t: self._pull(session, self._program.producer[t], t, m) for t in self.graph.outputs}

    def _receipts(self, session: str) -> list[dict[str, Any]]:
        out = []
        for zone in self.policy.zones:
            for party in self.policy.zone_parties(zone):
                reply = self._call(zone, "Records", zone_pb2.RecordsRequest(session=session), self.deadline.rpc_s,
                                   party)
                for r in reply.receipts:
                    out.append({"zone": r.zone, "party": r.party, "name": r.name,
                                "encoding": pb.Encoding.Name(r.encoding).lower(), "source_party": r.source_party,
                                "source_principal": r.source_principal, "bytes": r.bytes})
        return out

    def _release(self, session: str) -> None:
        # Dealers last: an MPC dealer's session ends when the parties leave it.
        for proc in sorted(self.policy.processes(), key=lambda p: p.dealer):
            try:
                zone_pb2_grpc.ZoneStub(self._channel(proc.address)).Release(
                    zone_pb2.ReleaseRequest(session=session), timeout=self.deadline.rpc_s)
            except grpc.RpcError:
                pass  # a dead zone holds nothing worth freeing; the run's own error names it

    def _privacy(self, receipts: list[dict[str, Any]]) -> dict[str, Any]:
        return {"report": {p: vars(v) for p, v in self.plan.privacy.items()}, "observed": receipts,
                "mismatches": observed_mismatches(self.plan, receipts, self.policy)}

    def _check_length(self, n: int) -> None:
        if n == 0:
            raise RunError("the input has no tokens")
        if n > self.policy.model.max_tokens:
            raise RunError(f"the input has {n} tokens; the policy allows at most {self.policy.model.max_tokens} "
                           "(model.max_tokens)")

    # -- public operations ---------------------------------------------------------------------------------------

    def embed(self, text: str) -> RunResult:
        """The sentence embedding of `text`, computed through the plan."""
        if self.graph.arch != "bert":
            raise RunError(f"model {self.graph.model} is a {self.graph.arch} decoder; use generate")
        ids = torch.tensor(self.tokenizer(text)["input_ids"], dtype=torch.int64)
        self._check_length(len(ids))
        self.load()
        session, m, start = uuid.uuid4().hex, Metrics(), time.perf_counter()
        try:
            out = self._step(session, {"input_ids": ids}, 0, m)
            receipts = self._receipts(session)
        finally:
            self._release(session)
        emb = out[self.graph.outputs[0]]
        return RunResult({"embedding": [float(x) for x in emb], "tokens": len(ids)},
                         m.to_dict(time.perf_counter() - start), self._privacy(receipts))

    def prompt_ids(self, prompt: str, chat: bool = True) -> torch.Tensor:
        """Token ids of a prompt, through the model's chat template when it has one."""
        tok = self.tokenizer
        if chat and getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)
        else:
            text = prompt
        return torch.tensor(tok(text)["input_ids"], dtype=torch.int64)

    def generate(self, prompt: str, max_new_tokens: int = 16, chat: bool = True,
                 on_token: Callable[[int], None] | None = None) -> RunResult:
        """Greedy generation through the plan with the zones' KV caches; stops at EOS or max_new_tokens."""
        if self.graph.arch != "llama":
            raise RunError(f"model {self.graph.model} is an encoder; use embed")
        if max_new_tokens < 1:
            raise RunError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        ids = self.prompt_ids(prompt, chat)
        self._check_length(len(ids) + max_new_tokens - 1)
        self.load()
        eos = self.tokenizer.eos_token_id
        session, m, start = uuid.uuid4().hex, Metrics(), time.perf_counter()
        tokens: list[int] = []
        step_s: list[float] = []
        try:
            cur, offset = ids, 0
            while len(tokens) < max_new_tokens:
                t0 = time.perf_counter()
                tok = int(self._step(session, {"input_ids": cur}, offset, m)[self.graph.outputs[0]][0])
                step_s.append(time.perf_counter() - t0)
                tokens.append(tok)
                if on_token:
                    on_token(tok)
                if tok == eos:
                    break
                offset += len(cur)
                cur = torch.tensor([tok], dtype=torch.int64)
            receipts = self._receipts(session)
        finally:
            self._release(session)
        metrics = m.to_dict(time.perf_counter() - start)
        metrics["prefill_s"] = round(step_s[0], 4)
        metrics["per_token_s"] = round(sum(step_s[1:]) / max(1, len(step_s) - 1), 4) if len(step_s) > 1 else None
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return RunResult({"token_ids": tokens, "text": text, "prompt_tokens": len(ids)}, metrics,
                         self._privacy(receipts))
