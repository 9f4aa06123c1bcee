"""The tensor a party sees: its IR name for (model, tensor, depth), computed by the plain executor, then passed
through the plan's arithmetic (MPC fixed point, CKKS error) and, for the defence, Gaussian noise."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hsi.errors import HsiError
from hsi.ir import Graph
from hsi.models.executor import PlainExecutor, SessionState, StepContext

TENSORS = ("hidden", "pool", "logits")
FIXED_POINT_BITS = 16  # CrypTen's fixed point: what leaves MPC is a multiple of 2^-16
CKKS_SIGMA = 1e-5  # decryption error of a value that crossed CKKS (measured 1.2e-6 per slot; 1e-5 is generous)


class LeakageError(HsiError, ValueError):
    """An audit that cannot be run as asked: a tensor the model does not have, a depth out of range."""


@dataclass(frozen=True)
class Exposure:
    """What is attacked: the model's tensor `kind` after `depth` blocks, the IR tensor that is, and the
    arithmetic it went through before the party received it."""

    graph: Graph
    kind: str
    depth: int
    tensor: str
    fixed_point_bits: int | None = FIXED_POINT_BITS
    ckks_sigma: float = CKKS_SIGMA

    @property
    def key(self) -> str:
        """The key of this exposure in the shipped data: the depth for hidden states, "final" otherwise."""
        return str(self.depth) if self.kind == "hidden" else "final"


def exposure(graph: Graph, kind: str = "hidden", depth: int | None = None) -> Exposure:
    """The exposure `kind` of `graph` (depth: blocks before it; pool and logits come after the last block)."""
    layers = int(graph.config["layers"])
    if kind not in TENSORS:
        raise LeakageError(f"unknown tensor {kind!r}: expected one of {', '.join(TENSORS)}")
    if (kind == "pool" and graph.arch != "bert") or (kind == "logits" and graph.arch != "llama"):
        have = "pool" if graph.arch == "bert" else "logits"
        raise LeakageError(f"model {graph.model} has no {kind!r} tensor (its tensors: hidden, {have})")
    if kind != "hidden":
        if depth not in (None, layers):
            raise LeakageError(f"the {kind} tensor comes after all {layers} blocks; leave --depth out")
        return Exposure(graph, kind, layers, "pool" if kind == "pool" else "lm_head")
    if depth is None or not 0 <= depth <= layers:
        raise LeakageError(f"--depth must be 0..{layers} for {graph.model} (0: the embedding output), not {depth}")
    if graph.arch == "bert":
        name = "embeddings.LayerNorm" if depth == 0 else f"encoder.layer.{depth - 1}.output.LayerNorm"
    else:
        name = "model.embed_tokens" if depth == 0 else f"model.layers.{depth - 1}.mlp.residual"
    graph.op(name)  # the adapter names it so
    return Exposure(graph, kind, depth, name)


def plan_arithmetic(x: torch.Tensor, exp: Exposure, generator: torch.Generator) -> torch.Tensor:
    """x as the party receives it: CKKS decryption error where the tensor crossed CKKS (the last linear before
    any depth >= 1 ran in HE under the private policies), then MPC's fixed-point rounding."""
    if exp.ckks_sigma and (exp.depth >= 1 or exp.kind != "hidden"):
        x = x + exp.ckks_sigma * torch.randn(x.shape, generator=generator)
    if exp.fixed_point_bits is not None:
        scale = float(2 ** exp.fixed_point_bits)
        x = torch.round(x * scale) / scale
    return x


def defence_noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """The measured defence: Gaussian noise of `sigma` times each position's RMS added to the exposed state."""
    if not sigma:
        return x
    rms = x.pow(2).mean(-1, keepdim=True).sqrt()
    return x + sigma * rms * torch.randn(x.shape, generator=generator)


class Observer:
    """Runs the plain executor over the ops up to the exposed tensor: what the party would be sent."""

    def __init__(self, exp: Exposure, weights: dict[str, torch.Tensor]) -> None:
        ops = exp.graph.ops
        last = next(i for i, op in enumerate(ops) if op.name == exp.tensor)
        self.exp = exp
        self.executor = PlainExecutor(ops[:last + 1], weights)

    def observe(self, ids: list[int] | tuple[int, ...], generator: torch.Generator, sigma: float = 0.0) -> torch.Tensor:
        """The exposed tensor for one input (float32 plaintext, then the plan's arithmetic and the defence)."""
        env = self.executor.run({"input_ids": torch.tensor(ids)}, StepContext(0), SessionState(), [self.exp.tensor])
        x = env[self.exp.tensor]
        return plan_arithmetic(defence_noise(x, sigma, generator), self.exp, generator)
