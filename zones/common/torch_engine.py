"""Running stages in PyTorch on tensors the zone may see: the plain zone's engine and the enclave's."""

from __future__ import annotations

import threading

import grpc
import torch

from hsi.engine import RunContext, ZoneEngine
from hsi.ir import Graph, OpType
from hsi.models.executor import PlainExecutor, SessionState, StepContext
from hsi.models.registry import load_model
from hsi.plan import Stage
from hsi.policy import Policy
from hsi.transport.codec import CodecError, decode_tensor, encode_tensor
from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from protos import tensor_pb2 as pb


class TorchEngine(ZoneEngine):
    """Stages run by the reference executor on plaintext tensors (decoded and encoded by `_decode`/`_encode`,
    which an enclave overrides to unseal and seal)."""

    def __init__(self, policy: Policy, zone: str, party: str) -> None:
        self.policy = policy
        self.zone = zone
        self._executors: dict[int, PlainExecutor] = {}
        self._graph: Graph | None = None
        self._sessions: dict[str, SessionState] = {}
        self._lock = threading.Lock()

    def load_stage(self, stage: Stage, graph: Graph) -> None:
        """Take the stage's weights from the model."""
        if stage.index in self._executors:
            return
        weights = load_model(self.policy.model.name).weights()
        self._executors[stage.index] = PlainExecutor([graph.op(n) for n in stage.ops], weights)
        self._graph = graph

    def _decode(self, name: str, t: StoredTensor, ctx: RunContext) -> torch.Tensor:
        """An input as the tensor the executor computes on."""
        if t.encoding != pb.PLAIN:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"plain zone {self.zone!r} got tensor {name!r} encoded as {t.encoding_name}")
        try:
            return decode_tensor(t.dtype, list(t.shape), t.data)
        except CodecError as e:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor {name!r}: {e}") from None

    def _encode(self, name: str, t: torch.Tensor, ctx: RunContext) -> StoredTensor:
        """An output as the zone keeps it."""
        dtype, shape, data = encode_tensor(t)
        return StoredTensor(pb.PLAIN, dtype, tuple(shape), data)

    def _check_embed_inputs(self, stage: Stage, tensors: dict[str, torch.Tensor]) -> None:
        assert self._graph is not None
        for name in stage.ops:
            op = self._graph.op(name)
            if op.type != OpType.EMBED:
                continue
            ids = tensors[op.inputs[0]]
            if ids.dtype != torch.int64 or ids.dim() != 1:
                raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{op.inputs[0]!r} must be a 1-D int64 tensor of token ids, got {ids.dtype} "
                                f"{list(ids.shape)}")
            vocab = self._executors[stage.index]._weights[op.weights[0]].shape[0]
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
                raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{op.inputs[0]!r} holds token ids outside the vocabulary [0, {vocab})")

    def run_stage(self, stage: Stage, inputs: dict[str, StoredTensor], ctx: RunContext) -> dict[str, StoredTensor]:
        """Decode the inputs, run the ops, encode the outputs the plan needs."""
        executor = self._executors.get(stage.index)
        if executor is None:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION, f"stage {stage.index} is not loaded")
        tensors = {n: self._decode(n, t, ctx) for n, t in inputs.items()}
        self._check_embed_inputs(stage, tensors)
        with self._lock:
            state = self._sessions.setdefault(ctx.session, SessionState())
        try:
            out = executor.run(tensors, StepContext(ctx.position_offset, ctx.batch), state, stage.outputs)
        except (RuntimeError, IndexError) as e:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"stage {stage.index} failed on its inputs: {e}") from None
        return {name: self._encode(name, t, ctx) for name, t in out.items()}

    def release(self, session: str) -> None:
        """Drop the session's KV caches."""
        with self._lock:
            self._sessions.pop(session, None)
