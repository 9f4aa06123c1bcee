"""The HE zone's engine: linear layers and residual additions on CKKS ciphertexts, with public keys only."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np
import openfhe as fhe
import torch

from orchestrator.ir import Graph, OpType, ZoneKind
from orchestrator.models.registry import load_model
from orchestrator.planner import Stage
from orchestrator.policy import HeZone, Policy
from protos import tensor_pb2 as pb
from zones.common.ckks.crypto import SlotMask, add_plaintexts, draw_slot_mask, encode_matrix, mask_slots
from zones.common.ckks.material import deserialize_public
from zones.common.ckks.packing import AnyPacking, Packing, complex_lane_packing, input_packing, lane_packing
from zones.common.ckks.params import HeParamsError, make_context
from zones.common.ckks.tensor import CipherTensor, CiphertextError, from_stored
from zones.common.engine import RunContext, StoredTensor, ZoneError, register_engine
from zones.common.masking import BOUNDED, bounded_values
from zones.common.material import MaterialError, unbundle
from zones.common.precompute import Precomputed
from zones.he.linear import EncryptedLinear, OpCounts, plaintext_bytes, rotation_indices

SUPPORTED = {OpType.LINEAR, OpType.ADD}
# Ciphertext tensors this zone made are kept deserialised (up to this many serialised bytes, newest first):
# deserialising a ciphertext at N=2^14 takes ~6 ms, serialising 0.4 ms, and each tensor is read back once or
# twice (by the next stage, or masked for an MPC zone).
DECODED_KEPT_BYTES = 64 << 20
# Fresh he->mpc masks kept encoded ahead, per ciphertext level: a selective-smollm2 decode step masks 12
# ciphertexts, and encoding one takes 4.6 ms at N=2^14 (~0.3 MB each).
MASKS_AHEAD = 32
log = logging.getLogger("hsi.he")


@dataclass(frozen=True)
class EncodedMask:
    """The co-located party's bounded share s of an mpc->he conversion, encoded (at level 0, in the layout the
    enclave encrypts that many tokens in) before the ciphertext it completes arrives."""

    share: StoredTensor
    packing: AnyPacking
    plaintexts: list[list[fhe.Plaintext]]


@register_engine(ZoneKind.HE)
class HeEngine:
    """CKKS evaluation with the policy's parameters; holds public and evaluation keys, never a secret key."""

    def __init__(self, policy: Policy, zone: str, party: str) -> None:
        z = policy.zones[zone]
        assert isinstance(z, HeZone)
        self.policy, self.zone, self.party, self.spec = policy, zone, party, z
        try:
            # Validates the parameters (security level) before any key material arrives.
            make_context(z.ckks)
        except HeParamsError as e:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION, f"zone {zone!r}: {e}") from None
        self.packing = Packing(z.ckks.ring_dim // 2, z.pack_width)
        self.lane = lane_packing(z)
        self.single = complex_lane_packing(z)  # one token (each generated one)
        self.packings: list[AnyPacking] = [self.packing] + [q for p in (self.lane, self.single) if p
                                                            for q in (p, p.output)]
        self._cc: fhe.CryptoContext | None = None
        self._key_tag = ""
        self._zero: fhe.Ciphertext | None = None  # a fresh encryption of 0 (see _tensor)
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        self._cache_budget = (z.plaintext_cache_mb << 20) if z.plaintext_cache_mb is not None else memory * 3 // 4
        self._cache_used = 0
        self._token_reserve: int | None = None  # cache held back for the single-token layers not yet encoded
        self._layers: dict[tuple[str, AnyPacking], EncryptedLinear] = {}
        self._graph: Graph | None = None
        self._weights: dict[str, torch.Tensor] | None = None
        self._lock = threading.Lock()
        self.counts = OpCounts()
        self._decoded: OrderedDict[int, tuple[bytes, CipherTensor]] = OrderedDict()  # id(data) -> (data, tensor)
        self._decoded_bytes = 0
        self._masks: dict[tuple[int, int], Precomputed[SlotMask]] = {}  # (level, bits) -> masks made ahead

    def rotations(self) -> list[int]:
        """Slot rotations the linear ops of this zone need (one set for every shape under each input layout)."""
        return sorted({r for p in self.packings if p.linear_input for r in rotation_indices(p)})

    def key_requirements(self) -> tuple[str, list[int], str]:
        """(key handle, rotations, CKKS parameters as JSON) the zone needs installed."""
        return self.spec.key, self.rotations(), json.dumps(self.spec.ckks.model_dump())

    def install(self, data: bytes, meta: dict[str, str]) -> tuple[str, int]:
        """Install a public-material bundle; (key tag, rotation keys) on success."""
        try:
            parts = unbundle(data, meta)
            cc, public = deserialize_public(parts)
        except (MaterialError, RuntimeError) as e:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"public material does not deserialise: {e}") from None
        p = self.spec.ckks
        if cc.GetRingDimension() != p.ring_dim:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"public material is for ring dimension {cc.GetRingDimension()}, the policy says "
                            f"{p.ring_dim}")
        if cc.GetCyclotomicOrder() != 2 * p.ring_dim or cc.GetMultiplicativeDepth() != p.depth:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"public material has depth {cc.GetMultiplicativeDepth()}, the policy says {p.depth}")
        # OpenFHE keeps evaluation keys in process-global maps: one key per zone process, so the
        # previous key's material goes before the new arrives (a re-install after a key rotation).
        fhe.ClearEvalMultKeys()
        cc.ClearEvalAutomorphismKeys()
        try:
            fhe.DeserializeEvalMultKeyString(parts["mult_keys"], fhe.BINARY)
            if parts["rotation_keys"]:
                fhe.DeserializeEvalAutomorphismKeyString(parts["rotation_keys"], fhe.BINARY)
        except RuntimeError as e:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"evaluation keys do not deserialise: {e}") from None
        with self._lock:
            self._cc, self._key_tag = cc, public.GetKeyTag()
            self._zero = cc.Encrypt(public, cc.MakeCKKSPackedPlaintext([0.0]))
            self._layers.clear()  # plaintexts are bound to the context
            self._forget_decoded()  # so are the ciphertexts kept deserialised, which skip from_stored's checks
            self._drop_masks()
            self._cache_used = 0
            self._token_reserve = None
        return self._key_tag, len(self.rotations())

    def fetch_material(self) -> None:
        """Take the public material from the policy's TEE key service, after verifying its attestation."""
        from orchestrator.keyclient import KeyServiceError, fetch_public_material
        from zones.common.attestation import AttestationError

        if not any(z.kind == "tee" for z in self.policy.zones.values()):
            return
        try:
            data, meta, _ = fetch_public_material(self.policy, self.policy.principal(self.party, self.zone),
                                                  self.spec.key, self.rotations())
        except (KeyServiceError, AttestationError) as e:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"zone {self.zone!r} could not get public material for key {self.spec.key!r} from "
                            f"{e}") from None
        self.install(data, meta)

    def _context(self) -> fhe.CryptoContext:
        if self._cc is None:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"zone {self.zone!r} has no public material for key {self.spec.key!r}; the key holder "
                            "must install it first (InstallPublicMaterial)")
        return self._cc

    def load_stage(self, stage: Stage, graph: Graph) -> None:
        """Encode the weight plaintexts of the stage's linear ops (once per layout, smallest first: the complex
        lane layout of one token, the lane layout, then the token-batched one, which waits for its first call
        when past the cache budget); fetch public material first if needed."""
        if self._cc is None:
            self.fetch_material()
        self._context()
        self._graph = graph
        if self._token_reserve is None:
            self._token_reserve = self._single_token_need(graph)
        for name in stage.ops:
            op = graph.op(name)
            if op.type not in SUPPORTED:
                raise ZoneError(grpc.StatusCode.UNIMPLEMENTED, f"HE zone cannot run {op.type.value} op {name!r}")
            if op.type == OpType.LINEAR:
                for packing in (self.single, self.lane):
                    if packing is not None:
                        self._layer(stage, name, packing)
                shape = tuple(self._model_weights()[op.weights[0]].shape)
                if self._batched_used() and self._fits(self._need(shape, self.packing), self.packing):
                    self._layer(stage, name, self.packing)

    def _batched_used(self) -> bool:
        """Whether any input can arrive token-batched (more tokens than the lane layout takes)."""
        return self.lane is None or self.spec.lane_max_tokens < self.policy.model.max_tokens

    def _model_weights(self) -> dict[str, torch.Tensor]:
        """The model's weights, loaded on first need (and kept: layers of a layout may be built on first use)."""
        if self._weights is None:
            self._weights = load_model(self.policy.model.name).weights()
        return self._weights

    def _layer(self, stage: Stage, name: str, packing: AnyPacking) -> EncryptedLinear:
        """The linear op `name` of `stage` for inputs in `packing`, encoded on first use."""
        with self._lock:
            layer = self._layers.get((name, packing))
            if layer is None:
                assert self._graph is not None
                op, weights = self._graph.op(name), self._model_weights()
                # A prescaled output leaves times 2^-k, so the he->mpc mask hides it (the plan says why).
                factor = 2.0 ** -stage.prescale.get(name, 0)
                w = weights[op.weights[0]].detach().double().numpy() * factor
                b = weights[op.weights[1]].detach().double().numpy() * factor if len(op.weights) > 1 else None
                layer = EncryptedLinear(self._context(), packing, w, b, cached=self._reserve(name, w.shape, packing))
                self._layers[(name, packing)] = layer
            return layer

    def _need(self, shape: tuple[int, ...], packing: AnyPacking) -> int:
        _, n_out = packing.grid(1, shape[0])
        _, n_in = packing.grid(1, shape[1])
        per_block = packing.diagonals * packing.terms
        return n_out * n_in * per_block * plaintext_bytes(self.spec.ckks.ring_dim, self.spec.ckks.depth)

    def _single_token_need(self, graph: Graph) -> int:
        """Cache the single-token layout of every linear op placed in this zone takes: generation runs every
        one of them at each token, so the other layouts leave room for them."""
        from orchestrator.planner import place

        if self.single is None:
            return 0
        weights = self._model_weights()
        placed = place(graph, self.policy)[0]
        return sum(self._need(tuple(weights[op.weights[0]].shape), self.single) for op in graph.ops
                   if op.type == OpType.LINEAR and placed.get(op.name) == self.zone)

    def _fits(self, need: int, packing: AnyPacking) -> bool:
        """Whether a layer needing `need` bytes in `packing` fits what is left of the plaintext cache (less what
        the single-token layers still to come need, for other layouts)."""
        held_back = 0 if packing == self.single else self._token_reserve or 0
        return self._cache_used + need + held_back <= self._cache_budget

    def _reserve(self, name: str, shape: tuple[int, ...], packing: AnyPacking) -> bool:
        """Whether layer `name` in `packing` fits the plaintext cache (and, if so, count it in)."""
        need = self._need(shape, packing)
        fits = self._fits(need, packing)
        if packing == self.single and self._token_reserve:
            self._token_reserve = max(0, self._token_reserve - need)
        if not fits:
            log.warning("zone %s: layer %s (%s) does not fit the %d MB plaintext cache; it is encoded during each "
                        "call", self.zone, name, packing.meta()["packing"], self._cache_budget >> 20)
            return False
        self._cache_used += need
        return True

    def _stored(self, ct: CipherTensor) -> StoredTensor:
        """A tensor this zone computed, serialised to be held or sent, and kept deserialised for reading back."""
        stored = ct.to_stored()
        with self._lock:
            self._decoded[id(stored.data)] = (stored.data, ct)
            self._decoded_bytes += len(stored.data)
            while self._decoded_bytes > DECODED_KEPT_BYTES:
                data, _ = self._decoded.popitem(last=False)[1]
                self._decoded_bytes -= len(data)
        return stored

    def _forget_decoded(self) -> None:
        """Drop the ciphertexts kept deserialised (the caller holds the lock)."""
        self._decoded.clear()
        self._decoded_bytes = 0

    def _drop_masks(self) -> None:
        """Stop making masks ahead and drop those made (the caller holds the lock)."""
        for pool in self._masks.values():
            pool.close()
        self._masks.clear()

    def _draw_mask(self, bits: int) -> Callable[[int], SlotMask]:
        """A fresh mask of `bits` bits for a ciphertext of the level it is asked for, made ahead if one is ready."""
        def draw(level: int) -> SlotMask:
            with self._lock:
                pool = self._masks.get((level, bits))
                if pool is None:
                    cc = self._context()
                    pool = Precomputed(lambda: draw_slot_mask(cc, bits, level), MASKS_AHEAD,
                                       f"he-mask-level{level}")
                    self._masks[(level, bits)] = pool
            return pool.take()
        return draw

    def _tensor(self, name: str, t: StoredTensor) -> CipherTensor:
        with self._lock:
            kept = self._decoded.get(id(t.data))
        if kept is not None and kept[0] is t.data:  # the very bytes this zone serialised
            return kept[1]
        try:
            ct = from_stored(t, self.spec.ckks.ring_dim, self._key_tag)
        except CiphertextError as e:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor {name!r}: {e}") from None
        if ct.packing not in self.packings:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"tensor {name!r} is packed {ct.packing.meta()['packing']} {ct.packing.width} features "
                            f"wide; this zone takes {', '.join(p.meta()['packing'] for p in self.packings)} "
                            f"{self.packing.width} wide")
        if ct.level == 0 and self._zero is not None:
            # A deserialised ciphertext multiplies ~5x slower than one this context made (measured: 1.5 ms
            # against 0.3 ms per plaintext multiply at N=2^14); adding it to a zero encrypted here gives the
            # sum this context's bookkeeping, and every later operation its speed.
            cc = self._context()
            ct = CipherTensor([[cc.EvalAdd(self._zero, c) for c in row] for row in ct.blocks], ct.packing, ct.tokens,
                              ct.features)
        return ct

    def linear(self, stage: Stage, name: str, x: CipherTensor, counts: OpCounts) -> CipherTensor:
        """Apply the linear op `name` of `stage` in the layout its input arrives in."""
        if not x.packing.linear_input:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"op {name!r} cannot take its input packed {x.packing.meta()['packing']} (a linear "
                            "layer's output layout); it takes the token-batched or the staggered lane layout")
        layer = self._layer(stage, name, x.packing)
        if x.features != layer.d_in:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"op {name!r} takes {layer.d_in} features, tensor has {x.features}")
        if x.level >= self.spec.ckks.depth:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"op {name!r} needs one multiplicative level; the input is at level {x.level} of "
                            f"depth {self.spec.ckks.depth} (refresh it through MPC or the enclave first)")
        return CipherTensor(layer.forward(x.blocks, counts), x.packing.output, x.tokens, layer.d_out)

    def add(self, a: CipherTensor, b: CipherTensor) -> CipherTensor:
        """Elementwise sum of two ciphertext tensors (levels aligned)."""
        cc = self._context()
        if (a.tokens, a.features) != (b.tokens, b.features):
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"cannot add tensors of shapes {[a.tokens, a.features]} and {[b.tokens, b.features]}")
        if a.packing != b.packing:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"cannot add tensors packed {a.packing.meta()['packing']} and "
                            f"{b.packing.meta()['packing']}")
        blocks = [[_aligned_add(cc, x, y) for x, y in zip(ra, rb, strict=True)]
                  for ra, rb in zip(a.blocks, b.blocks, strict=True)]
        return CipherTensor(blocks, a.packing, a.tokens, a.features)

    def mul_const(self, a: CipherTensor, c: float) -> CipherTensor:
        """Multiply by a public plaintext constant (uses one level)."""
        cc = self._context()
        if a.level >= self.spec.ckks.depth:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"multiplying by a constant needs one level; the input is at level {a.level}")
        return CipherTensor([[cc.Rescale(cc.EvalMult(ct, float(c))) for ct in row] for row in a.blocks],
                            a.packing, a.tokens, a.features)

    def mask(self, name: str, t: StoredTensor, bits: int) -> tuple[np.ndarray, StoredTensor]:
        """(r, ct(x - m)) for the he->mpc conversion: a fresh mask uniform in +-2^bits in every slot, and the
        values r it unpacks to (see crypto.mask_slots)."""
        ct = self._tensor(name, t)
        r, blocks = mask_slots(self._context(), ct.packing, ct.blocks, ct.tokens, ct.features, self._draw_mask(bits))
        return r, CipherTensor(blocks, ct.packing, ct.tokens, ct.features).to_stored()

    def piece(self, name: str, t: StoredTensor) -> StoredTensor | EncodedMask:
        """One piece of an mpc->he conversion as it is kept until the other arrives: the co-located party's
        bounded share encoded already (the enclave's ciphertext usually comes later), a ciphertext as it is."""
        if t.encoding != pb.SHARE:
            return t
        if t.meta.get(BOUNDED) != "1" or len(t.shape) != 2:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"the mask of {name!r} is not a bounded (tokens, features) share")
        packing = input_packing(self.spec, t.shape[0])
        return EncodedMask(t, packing, encode_matrix(self._context(), packing, bounded_values(t), 0))

    def unmask(self, name: str, parts: list[StoredTensor | EncodedMask]) -> StoredTensor:
        """ct(y - s) + s = ct(y): the mpc->he conversion's two pieces (the enclave's ciphertext, the co-located
        party's bounded share s, see `piece`) made one ciphertext tensor."""
        cts = [p for p in parts if isinstance(p, StoredTensor) and p.encoding == pb.CKKS]
        masks = [p for p in parts if isinstance(p, EncodedMask)]
        if len(cts) != 1 or len(masks) != 1:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"tensor {name!r} must arrive as one ciphertext and one bounded share, got "
                            f"{[(p.share if isinstance(p, EncodedMask) else p).encoding_name for p in parts]}")
        ct, mask = self._tensor(name, cts[0]), masks[0]
        if tuple(mask.share.shape) != (ct.tokens, ct.features):
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"the mask of {name!r} is not a bounded share of shape {[ct.tokens, ct.features]}")
        cc = self._context()
        plaintexts = mask.plaintexts
        if mask.packing != ct.packing or ct.level != 0:  # not the layout the enclave encrypts in: encode again
            plaintexts = encode_matrix(cc, ct.packing, bounded_values(mask.share), ct.level)
        return self._stored(CipherTensor(add_plaintexts(cc, ct.blocks, plaintexts), ct.packing, ct.tokens,
                                         ct.features))

    def run_stage(self, stage: Stage, inputs: dict[str, StoredTensor], ctx: RunContext) -> dict[str, StoredTensor]:
        """Run the stage's linear and add ops on ciphertexts."""
        assert self._graph is not None
        self._context()
        env = {n: self._tensor(n, t) for n, t in inputs.items()}
        counts = OpCounts()
        for name in stage.ops:
            op = self._graph.op(name)
            if op.type == OpType.LINEAR:
                env[name] = self.linear(stage, name, env[op.inputs[0]], counts)
            else:
                env[name] = self.add(env[op.inputs[0]], env[op.inputs[1]])
        with self._lock:
            self.counts.add(counts)
        return {n: self._stored(env[n]) for n in stage.outputs}

    def release(self, session: str) -> None:
        """The HE zone keeps no per-session state beyond the tensors the service holds."""

    def close(self) -> None:
        """Drop the cached plaintexts and OpenFHE's global contexts and keys (zone shutdown)."""
        with self._lock:
            self._layers.clear()
            self._forget_decoded()
            self._drop_masks()
            self._cc = None
        fhe.ReleaseAllContexts()


def _aligned_add(cc: fhe.CryptoContext, x: fhe.Ciphertext, y: fhe.Ciphertext) -> fhe.Ciphertext:
    # FIXEDMANUAL needs equal levels: bring the fresher operand down first.
    if x.GetLevel() < y.GetLevel():
        x = cc.LevelReduce(x, None, y.GetLevel() - x.GetLevel())
    elif y.GetLevel() < x.GetLevel():
        y = cc.LevelReduce(y, None, x.GetLevel() - y.GetLevel())
    return cc.EvalAdd(x, y)

