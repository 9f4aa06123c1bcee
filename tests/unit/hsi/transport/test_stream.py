"""Chunked tensor streams: round trip, and every lie, gap and corruption rejected with the right status."""

from __future__ import annotations

import grpc
import pytest
import torch

from hsi.transport.codec import CodecError, decode_tensor, encode_tensor
from hsi.transport.stream import StreamError, frames, receive
from protos import tensor_pb2 as pb

HEADER = pb.TensorHeader(session="s", name="x", encoding=pb.PLAIN, source_party="client", dtype="float32", shape=[4])


def _frames(data: bytes, chunk: int = 3) -> list[pb.TensorFrame]:
    return list(frames(HEADER, data, chunk))


def test_round_trip_many_chunks() -> None:
    data = bytes(range(256)) * 5
    got = receive(_frames(data, 100), 10_000, 100)
    assert got.data == data and got.header.total_bytes == len(data) and got.header.name == "x"


def test_empty_payload() -> None:
    assert receive(_frames(b""), 10, 10).data == b""


def _code(fs: list[pb.TensorFrame], max_bytes: int = 1000, max_chunk: int = 16) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(StreamError) as e:
        receive(fs, max_bytes, max_chunk)
    return e.value.code, str(e.value)


def test_oversized_declared() -> None:
    code, msg = _code(_frames(b"a" * 100), max_bytes=50)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "declares 100 bytes" in msg


def test_stream_lies_about_size() -> None:
    fs = _frames(b"abcdefghi")
    fs[0].header.total_bytes = 4  # claims less than it sends
    code, msg = _code(fs)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "more than the declared 4 bytes" in msg


def test_chunk_larger_than_declared() -> None:
    fs = _frames(b"abcdefghi")
    fs[1].chunk.data = b"abcdefgh"
    code, _ = _code(fs)
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_broken_hash() -> None:
    fs = _frames(b"abcdefghi")
    fs[2].chunk.data = b"XYZ"
    code, msg = _code(fs)
    assert code == grpc.StatusCode.DATA_LOSS and "SHA-256 mismatch" in msg


def test_truncated_stream() -> None:
    fs = _frames(b"abcdefghi")[:-2]
    code, msg = _code(fs)
    assert code == grpc.StatusCode.DATA_LOSS and "stream ended after 6 of 9 bytes" in msg


def test_missing_chunk() -> None:
    fs = _frames(b"abcdefghi")
    del fs[2]
    code, msg = _code(fs)
    assert code == grpc.StatusCode.DATA_LOSS and "chunk 2 arrived where 1 was due" in msg


def test_no_header() -> None:
    code, _ = _code(_frames(b"abc")[1:])
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, msg = _code([])
    assert "no header" in msg


def test_frame_after_trailer() -> None:
    fs = _frames(b"abc")
    fs.append(fs[1])
    assert _code(fs)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_codec_round_trip_and_errors() -> None:
    for t in (torch.randn(3, 5), torch.arange(7), torch.tensor(2.5)):
        dtype, shape, data = encode_tensor(t)
        assert torch.equal(decode_tensor(dtype, shape, data), t)
    with pytest.raises(CodecError, match="do not hold a float32 tensor of shape"):
        decode_tensor("float32", [3], b"\0" * 8)
    with pytest.raises(CodecError, match="unknown dtype"):
        decode_tensor("complex64", [1], b"\0" * 8)
    with pytest.raises(CodecError, match="cannot be sent"):
        encode_tensor(torch.zeros(2, dtype=torch.bool))
