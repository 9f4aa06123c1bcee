"""Pushing tensors to zones and enclaves as a chosen principal, the way a zone or the runtime would."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from hsi.transport.certs import load_credentials
from hsi.transport.server import secure_channel
from hsi.transport.stream import frames
from hsi.transport.tensor import StoredTensor
from protos import tensor_pb2 as pb

CHUNK = 1 << 20


@contextmanager
def channel_as(principal: str, target: str) -> Iterator[grpc.Channel]:
    """An mTLS channel to `target` presenting `principal`'s test certificate."""
    ch = secure_channel(load_credentials(Path(os.environ["HSI_CERTS_DIR"]), principal), target)
    try:
        yield ch
    finally:
        ch.close()


def tensor_frames(t: StoredTensor, session: str, name: str, source_party: str,
                  meta: dict[str, str] | None = None, chunk: int = CHUNK) -> Iterator[pb.TensorFrame]:
    """The stream frames of a stored tensor (its meta, updated by `meta`)."""
    header = pb.TensorHeader(session=session, name=name, encoding=t.encoding,  # type: ignore[arg-type]
                             source_party=source_party, dtype=t.dtype, shape=list(t.shape), meta=t.meta | (meta or {}))
    return frames(header, t.data, chunk)


def push(stub: Any, t: StoredTensor, session: str, name: str, source_party: str, timeout: float = 60,
         meta: dict[str, str] | None = None) -> Any:
    """Push a stored tensor through a Zone stub's PushTensor; its reply (grpc.RpcError when refused)."""
    return stub.PushTensor(tensor_frames(t, session, name, source_party, meta), timeout=timeout)
