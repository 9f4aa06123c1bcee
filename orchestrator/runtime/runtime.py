"""The runtime at the client: embed and generate through a plan; tensors move zone to zone, never through it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import torch

from hsi.batch import pad
from hsi.models.registry import load_graph, load_tokenizer
from hsi.plan import make_plan
from hsi.policy import Policy
from hsi.transport.certs import Credentials, certs_dir, load_credentials
from orchestrator.runtime.client import ZoneClient
from orchestrator.runtime.errors import RunError
from orchestrator.runtime.lockstep import run_stage
from orchestrator.runtime.metrics import Metrics, RunResult, merge_passes, observed_mismatches
from orchestrator.runtime.receipt import ReceiptSigner
from orchestrator.schedule import step_program
from protos import tensor_pb2 as pb
from protos import zone_pb2

Progress = Callable[[str, int, int], None]  # (what, done, total)


Cancelled = Callable[[], bool]  # whether the caller has gone (checked between stages)
Prompt = str | Sequence[Mapping[str, str]]  # a text, or chat messages {"role": ..., "content": ...}


def _never() -> bool:
    return False


class Runtime:
    """Runs embed/generate requests of one policy against running zones."""

    def __init__(self, policy: Policy, progress: Progress | None = None, certs: Credentials | None = None) -> None:
        self.policy = policy
        self.graph = load_graph(policy.model.name)
        self.plan = make_plan(self.graph, policy)
        self._program = step_program(self.plan, self.graph.outputs)
        self.creds = certs or load_credentials(certs_dir(policy), policy.runtime_principal)
        self.progress = progress or (lambda what, done, total: None)
        self.deadline = policy.transport.deadlines
        self.zones = ZoneClient(policy, self.creds)
        self.signer = ReceiptSigner(policy, self.plan)
        self._loaded = False
        self._tokenizer: Any = None

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (loaded on first use)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.policy.model.name)
        return self._tokenizer

    def _channel(self, target: str) -> grpc.Channel:
        """The runtime's channel to the zone process at `target` (tests call zones through it)."""
        return self.zones.channel(target)

    def close(self) -> None:
        """Close every channel."""
        self.zones.close()
        self.signer.close()

    def reconnect(self) -> None:
        """New channels, and forget what the zones loaded and which enclaves were attested, so the next run
        reconnects, attests and loads its stages again (after a zone process restarted)."""
        old = (self.zones, self.signer)
        self.zones = ZoneClient(self.policy, self.creds)
        self.signer = ReceiptSigner(self.policy, self.plan)
        self._loaded = False
        # Other runs may still be under way on the old channels (the services run several at once): closed once
        # any of their stages would have ended.
        closer = threading.Timer(self.deadline.stage_s, lambda: [c.close() for c in old])
        closer.daemon = True
        closer.start()

    def wait_ready(self, timeout: float) -> None:
        """Block until every zone answers its health check; RunError naming the zones that do not."""
        self.zones.wait_ready(timeout)

    def load(self) -> None:
        """Ask every zone to load its stages (once per runtime)."""
        if self._loaded:
            return
        for s in self.plan.stages:
            self.progress(f"load stage {s.index} in {s.zone}", s.index, len(self.plan.stages))
            request = zone_pb2.LoadStageRequest(plan_digest=self.plan.digest, stage=s.index)
            for party in s.parties:
                self.zones.load_stage(s.zone, party, request)
            if self.policy.has_dealer(s.zone):
                self.zones.load_stage_at_dealer(s.zone, request)
        self._loaded = True

    # -- one step through the plan, and a session's end ----------------------------------------------------------

    def _step(self, session: str, inputs: dict[str, torch.Tensor], offset: int, m: Metrics,
              cancelled: Cancelled, lengths: Sequence[int] = ()) -> dict[str, torch.Tensor]:
        for push in self._program.pushes:
            self.zones.push(session, push.stage, push.tensor, inputs[push.tensor], m)
        total = len(self.plan.stages)
        for run in self._program.runs:
            s = run.stage
            if cancelled():  # the caller has gone: run no further stage; the session is released
                raise RunError(f"the run was cancelled before stage {s.index}", grpc.StatusCode.CANCELLED)
            self.progress(f"stage {s.index} ({s.kind}) in {s.zone}", s.index, total)
            run_stage(self.zones, self.plan.digest, session, run, offset, m, cancelled, lengths)
        self.progress("done", total, total)
        return {t: self.zones.pull(session, self._program.producer[t], t, m) for t in self.graph.outputs}

    def _receipts(self, session: str) -> list[dict[str, Any]]:
        out = []
        for zone in self.policy.zones:
            for party in self.policy.zone_parties(zone):
                for r in self.zones.records(zone, party, session).receipts:
                    out.append({"zone": r.zone, "party": r.party, "name": r.name,
                                "encoding": pb.Encoding.Name(r.encoding).lower(), "source_party": r.source_party,
                                "source_principal": r.source_principal, "bytes": r.bytes})
        return out

    def _release(self, session: str) -> None:
        # Dealers last: an MPC dealer's session ends when the parties leave it.
        for proc in sorted(self.policy.processes(), key=lambda p: p.dealer):
            try:
                self.zones.stub_at(proc.address).Release(zone_pb2.ReleaseRequest(session=session),
                                                         timeout=self.deadline.rpc_s)
            except grpc.RpcError:
                pass  # a dead zone holds nothing worth freeing; the run's own error names it

    def _privacy(self, receipts: list[dict[str, Any]]) -> dict[str, Any]:
        return {"report": {p: vars(v) for p, v in self.plan.privacy.items()}, "observed": receipts,
                "mismatches": observed_mismatches(self.plan, receipts, self.policy)}

    def _check_length(self, n: int, what: str = "the input") -> None:
        if n == 0:
            raise RunError(f"{what} has no tokens", grpc.StatusCode.INVALID_ARGUMENT)
        if n > self.policy.model.max_tokens:
            raise RunError(f"{what} has {n} tokens; the policy allows at most {self.policy.model.max_tokens} "
                           "(model.max_tokens)", grpc.StatusCode.INVALID_ARGUMENT)

    # -- public operations ---------------------------------------------------------------------------------------

    def embed(self, text: str, cancelled: Cancelled = _never) -> RunResult:
        """The sentence embedding of `text`, computed through the plan; stops between stages once `cancelled()`."""
        return self._embed([text], cancelled, single=True)

    def embed_batch(self, texts: Sequence[str], cancelled: Cancelled = _never) -> RunResult:
        """The sentence embeddings of `texts`, `model.max_batch` of them per pass through the plan: in a pass the
        texts' tokens share every ciphertext, share tensor and stage (each text padded to the longest and
        attending only to itself). One receipt per pass."""
        if not texts:
            raise RunError("no texts to embed", grpc.StatusCode.INVALID_ARGUMENT)
        size = self.policy.model.max_batch
        passes = []
        for start in range(0, len(texts), size):
            if cancelled():
                raise RunError(f"the run was cancelled before text {start}", grpc.StatusCode.CANCELLED)
            passes.append(self._embed(texts[start:start + size], cancelled, single=False))
        return merge_passes(passes)

    def _embed(self, texts: Sequence[str], cancelled: Cancelled, single: bool) -> RunResult:
        if self.graph.arch != "bert":
            raise RunError(f"model {self.graph.model} is a {self.graph.arch} decoder; use generate",
                           grpc.StatusCode.FAILED_PRECONDITION)
        seqs = [self.tokenizer(t)["input_ids"] for t in texts]
        for i, seq in enumerate(seqs):
            self._check_length(len(seq), f"text {i}" if len(seqs) > 1 else "the input")
        ids, batch = pad(seqs, int(self.tokenizer.pad_token_id or 0))
        self.load()
        session, m, start = uuid.uuid4().hex, Metrics(), time.perf_counter()
        try:
            out = self._step(session, {"input_ids": ids}, 0, m, cancelled, batch.lengths if batch else ())
            receipts = self._receipts(session)
        finally:
            self._release(session)
        emb = out[self.graph.outputs[0]].reshape(len(seqs), -1)
        output: dict[str, Any] = {"embeddings": [[float(x) for x in row] for row in emb],
                                  "tokens": [len(s) for s in seqs]}
        if single:
            output = {"embedding": output["embeddings"][0], "tokens": output["tokens"][0]}
        privacy = self._privacy(receipts)
        return RunResult(output, m.to_dict(time.perf_counter() - start), privacy,
                         self.signer.sign(session, privacy, output))

    def prompt_ids(self, prompt: Prompt, chat: bool = True) -> torch.Tensor:
        """Token ids of a prompt (a text, or chat messages `{"role", "content"}`), through the model's chat
        template when it has one (a text is one user message)."""
        tok = self.tokenizer
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if chat and getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        elif isinstance(prompt, str):
            text = prompt
        else:
            raise RunError(f"model {self.policy.model.name} has no chat template for chat messages",
                           grpc.StatusCode.INVALID_ARGUMENT)
        return torch.tensor(tok(text)["input_ids"], dtype=torch.int64)

    def generate(self, prompt: Prompt, max_new_tokens: int = 16, chat: bool = True,
                 on_token: Callable[[int], None] | None = None, cancelled: Cancelled = _never) -> RunResult:
        """Greedy generation through the plan with the zones' KV caches; stops at EOS or max_new_tokens, and
        between stages once `cancelled()`. `prompt` is a text or chat messages (see `prompt_ids`)."""
        if self.graph.arch != "llama":
            raise RunError(f"model {self.graph.model} is an encoder; use embed", grpc.StatusCode.FAILED_PRECONDITION)
        if max_new_tokens < 1:
            raise RunError(f"max_new_tokens must be at least 1, got {max_new_tokens}", grpc.StatusCode.INVALID_ARGUMENT)
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
                tok = int(self._step(session, {"input_ids": cur}, offset, m, cancelled)[self.graph.outputs[0]][0])
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
        output = {"token_ids": tokens, "text": text, "prompt_tokens": len(ids)}
        privacy = self._privacy(receipts)
        return RunResult(output, metrics, privacy, self.signer.sign(session, privacy, output))
