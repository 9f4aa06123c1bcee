"""A zone's session store: tensors kept and freed per session, receipts, refusals with their status."""

from __future__ import annotations

import grpc
import pytest

from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from protos import tensor_pb2 as pb
from protos import zone_pb2
from zones.common.sessions import SessionStore


def test_tensors_are_kept_and_freed_per_session() -> None:
    store = SessionStore("z")
    t = StoredTensor(pb.PLAIN, "float32", (2,), b"\0" * 8)
    store.keep("a", {"x": t, "y": t})
    store.keep("b", {"x": t})
    assert store.held("a", "x") is t
    assert store.drop("a", ["x"]) == 8  # y is still held
    with pytest.raises(ZoneError, match="zone 'z' holds no tensor 'x' for session 'a'") as e:
        store.held("a", "x")
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    store.record(zone_pb2.Receipt(session="a", name="y"))
    assert [r.name for r in store.receipts("a")] == ["y"] and store.receipts("c") == []
    gone = store.pop("a")
    assert gone is not None and list(gone.tensors) == ["y"]
    assert store.held("b", "x") is t  # another session is untouched


def test_an_empty_session_id_is_refused() -> None:
    with pytest.raises(ZoneError, match="session id is empty") as e:
        SessionStore("z").session("")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
