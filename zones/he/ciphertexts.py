"""Ciphertext tensors at the HE zone's boundary: checked as they arrive, kept deserialised after they leave."""

from __future__ import annotations

import threading
from collections import OrderedDict

import grpc

from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from zones.common.ckks.tensor import CipherTensor, CiphertextError, from_stored
from zones.he.keys import KeyMaterial
from zones.he.layouts import Layouts

# Ciphertext tensors this zone made are kept deserialised (up to this many serialised bytes, newest first):
# deserialising a ciphertext at N=2^14 takes ~6 ms, serialising 0.4 ms, and each tensor is read back once or
# twice (by the next stage, or masked for an MPC zone).
DECODED_KEPT_BYTES = 64 << 20


class Ciphertexts:
    """Reads stored tensors as ciphertext tensors of this zone's key and layouts, and serialises those it made."""

    def __init__(self, keys: KeyMaterial, layouts: Layouts) -> None:
        self.keys, self.layouts = keys, layouts
        self._decoded: OrderedDict[int, tuple[bytes, CipherTensor]] = OrderedDict()  # id(data) -> (data, tensor)
        self._decoded_bytes = 0
        self._lock = threading.Lock()

    def read(self, name: str, t: StoredTensor) -> CipherTensor:
        """The ciphertext tensor `name` held in `t`: the one kept deserialised if this zone made or admitted `t`,
        else checked against the key, the depth and the layouts and brought into this context."""
        with self._lock:
            kept = self._decoded.get(id(t.data))
        if kept is not None and kept[0] is t.data:  # the very bytes this zone serialised or admitted
            return kept[1]
        try:
            ct = from_stored(t, self.keys.spec.ckks.ring_dim, self.keys.key_tag)
        except CiphertextError as e:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor {name!r}: {e}") from None
        depth = self.keys.spec.ckks.depth
        if not 0 <= ct.level <= depth:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"tensor {name!r} is at level {ct.level}, outside this context's depth {depth}")
        accepted = self.layouts.accepted
        if ct.packing not in accepted:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"tensor {name!r} is packed {ct.packing.meta()['packing']} {ct.packing.width} features "
                            f"wide; this zone takes {', '.join(p.meta()['packing'] for p in accepted)} "
                            f"{self.layouts.batched.width} wide")
        zero = self.keys.zero
        if ct.level == 0 and zero is not None:
            # A deserialised ciphertext multiplies ~5x slower than one this context made (measured: 1.5 ms
            # against 0.3 ms per plaintext multiply at N=2^14); adding it to a zero encrypted here gives the
            # sum this context's bookkeeping, and every later operation its speed.
            cc = self.keys.context()
            ct = CipherTensor([[cc.EvalAdd(zero, c) for c in row] for row in ct.blocks], ct.packing, ct.tokens,
                              ct.features)
        return ct

    def admit(self, name: str, t: StoredTensor) -> None:
        """Check a pushed ciphertext tensor as `read` does (it deserialises, in this context, under this key, in a
        layout this zone takes) and keep it deserialised for the stage that reads it; ZoneError if not."""
        self._remember(t.data, self.read(name, t))

    def store(self, ct: CipherTensor) -> StoredTensor:
        """A tensor this zone computed, serialised to be held or sent, and kept deserialised for reading back."""
        stored = ct.to_stored()
        self._remember(stored.data, ct)
        return stored

    def _remember(self, data: bytes, ct: CipherTensor) -> None:
        with self._lock:
            if id(data) in self._decoded:
                return
            self._decoded[id(data)] = (data, ct)
            self._decoded_bytes += len(data)
            while self._decoded_bytes > DECODED_KEPT_BYTES:
                kept, _ = self._decoded.popitem(last=False)[1]
                self._decoded_bytes -= len(kept)

    def clear(self) -> None:
        """Drop the ciphertexts kept deserialised (bound to the context, and they skip `from_stored`'s checks)."""
        with self._lock:
            self._decoded.clear()
            self._decoded_bytes = 0
