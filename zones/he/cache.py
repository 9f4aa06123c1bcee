"""The HE zone's weight-plaintext cache: encoded linear layers per input layout, within a memory budget."""

from __future__ import annotations

import logging
import os
import threading

import torch

from hsi.ckks.packing import AnyPacking
from hsi.ir import Graph, Op, OpType
from hsi.models.registry import load_model
from hsi.plan import Stage
from hsi.policy import Policy
from zones.he.keys import KeyMaterial
from zones.he.layouts import Layouts
from zones.he.linear import EncryptedLinear, plaintext_bytes

log = logging.getLogger("hsi.he")


class PlaintextCache:
    """Encoded linear layers keyed by (op name, input layout); a layer past the budget is encoded during each
    call instead of kept."""

    def __init__(self, policy: Policy, zone: str, keys: KeyMaterial, layouts: Layouts) -> None:
        spec = keys.spec
        self.policy, self.zone, self.spec, self.keys, self.layouts = policy, zone, spec, keys, layouts
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        self.budget = (spec.plaintext_cache_mb << 20) if spec.plaintext_cache_mb is not None else memory * 3 // 4
        self.used = 0
        self._token_reserve: int | None = None  # cache held back for the single-token layers not yet encoded
        self._layers: dict[tuple[str, AnyPacking], EncryptedLinear] = {}
        self._weights: dict[str, torch.Tensor] | None = None
        self._lock = threading.Lock()

    def prepare(self, graph: Graph) -> None:
        """Hold back (once per key) the cache the single-token layers of the zone's ops in `graph` will take."""
        if self._token_reserve is None:
            self._token_reserve = self._single_token_need(graph)

    def load(self, stage: Stage, op: Op) -> None:
        """Encode the linear op `op` of `stage` once per layout, smallest first: the complex lane layout of one
        token, the lane layout, then the token-batched one, which waits for its first call when past the budget."""
        for packing in (self.layouts.single, self.layouts.lane):
            if packing is not None:
                self.layer(stage, op, packing)
        batched = self.layouts.batched
        shape = tuple(self._model_weights()[op.weights[0]].shape)
        if self._batched_used() and self._fits(self._need(shape, batched), batched):
            self.layer(stage, op, batched)

    def layer(self, stage: Stage, op: Op, packing: AnyPacking) -> EncryptedLinear:
        """The linear op `op` of `stage` for inputs in `packing`, encoded on first use."""
        with self._lock:
            layer = self._layers.get((op.name, packing))
            if layer is None:
                weights = self._model_weights()
                # A prescaled output leaves times 2^-k, so the he->mpc mask hides it (the plan says why).
                factor = 2.0 ** -stage.prescale.get(op.name, 0)
                w = weights[op.weights[0]].detach().double().numpy() * factor
                b = weights[op.weights[1]].detach().double().numpy() * factor if len(op.weights) > 1 else None
                layer = EncryptedLinear(self.keys.context(), packing, w, b,
                                        cached=self._reserve(op.name, w.shape, packing))
                self._layers[(op.name, packing)] = layer
            return layer

    def clear(self) -> None:
        """Drop every encoded layer and start the budget afresh (plaintexts are bound to the context)."""
        with self._lock:
            self._layers.clear()
            self.used = 0
            self._token_reserve = None

    def _batched_used(self) -> bool:
        """Whether any input can arrive token-batched (more tokens than the lane layout takes)."""
        return self.layouts.lane is None or self.spec.lane_max_tokens < self.policy.model.max_tokens

    def _model_weights(self) -> dict[str, torch.Tensor]:
        """The model's weights, loaded on first need (and kept: layers of a layout may be built on first use)."""
        if self._weights is None:
            self._weights = load_model(self.policy.model.name).weights()
        return self._weights

    def _need(self, shape: tuple[int, ...], packing: AnyPacking) -> int:
        """Bytes the plaintexts of a layer of weight shape `shape` take in `packing`."""
        _, n_out = packing.grid(1, shape[0])
        _, n_in = packing.grid(1, shape[1])
        per_block = packing.diagonals * packing.terms
        return n_out * n_in * per_block * plaintext_bytes(self.spec.ckks.ring_dim, self.spec.ckks.depth)

    def _single_token_need(self, graph: Graph) -> int:
        """Cache the single-token layout of every linear op placed in this zone takes: generation runs every
        one of them at each token, so the other layouts leave room for them."""
        from hsi.plan import place

        single = self.layouts.single
        if single is None:
            return 0
        weights = self._model_weights()
        placed = place(graph, self.policy)[0]
        return sum(self._need(tuple(weights[op.weights[0]].shape), single) for op in graph.ops
                   if op.type == OpType.LINEAR and placed.get(op.name) == self.zone)

    def _fits(self, need: int, packing: AnyPacking) -> bool:
        """Whether a layer needing `need` bytes in `packing` fits what is left of the plaintext cache (less what
        the single-token layers still to come need, for other layouts)."""
        held_back = 0 if packing == self.layouts.single else self._token_reserve or 0
        return self.used + need + held_back <= self.budget

    def _reserve(self, name: str, shape: tuple[int, ...], packing: AnyPacking) -> bool:
        """Whether layer `name` in `packing` fits the plaintext cache (and, if so, count it in)."""
        need = self._need(shape, packing)
        fits = self._fits(need, packing)
        if packing == self.layouts.single and self._token_reserve:
            self._token_reserve = max(0, self._token_reserve - need)
        if not fits:
            log.warning("zone %s: layer %s (%s) does not fit the %d MB plaintext cache; it is encoded during each "
                        "call", self.zone, name, packing.meta()["packing"], self.budget >> 20)
            return False
        self.used += need
        return True
