"""Chunked tensor streams: header, bounded chunks, trailer with SHA-256; strict validation on receipt."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import grpc

from hsi.transport.status import StatusError
from protos import tensor_pb2 as pb


class StreamError(StatusError):
    """A rejected stream, with the gRPC status code that describes it."""


@dataclass(frozen=True)
class Received:
    """A fully received and verified tensor payload."""

    header: pb.TensorHeader
    data: bytes


def frames(header: pb.TensorHeader, data: bytes, chunk_bytes: int) -> Iterator[pb.TensorFrame]:
    """The frames of one tensor: header (with sizes filled in), chunks, trailer."""
    h = pb.TensorHeader()
    h.CopyFrom(header)
    h.total_bytes = len(data)
    h.chunk_bytes = chunk_bytes
    yield pb.TensorFrame(header=h)
    count = 0
    for count, start in enumerate(range(0, len(data), chunk_bytes), start=1):
        yield pb.TensorFrame(chunk=pb.TensorChunk(index=count - 1, data=data[start:start + chunk_bytes]))
    yield pb.TensorFrame(trailer=pb.TensorTrailer(sha256=hashlib.sha256(data).digest(), chunk_count=count))


def receive(stream: Iterable[pb.TensorFrame], max_tensor_bytes: int, max_chunk_bytes: int) -> Received:
    """Read one tensor stream; StreamError (INVALID_ARGUMENT / DATA_LOSS) for any lie, gap or corruption.

    Nothing is kept on failure: the partial buffer is dropped with the exception.
    """
    it = iter(stream)
    return receive_body(receive_header(it, max_tensor_bytes, max_chunk_bytes), it)


def receive_header(it: Iterator[pb.TensorFrame], max_tensor_bytes: int, max_chunk_bytes: int) -> pb.TensorHeader:
    """Read and check only a stream's header frame (a receiver authorises the call on it before reading on)."""
    try:
        first = next(it)
    except StopIteration:
        raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "empty tensor stream: no header") from None
    if first.WhichOneof("frame") != "header":
        raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "tensor stream must start with a header")
    header = first.header
    if not header.name:
        raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "tensor header has no name")
    if header.total_bytes > max_tensor_bytes:
        raise StreamError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"tensor {header.name!r} declares {header.total_bytes} bytes; this zone accepts at most "
                          f"{max_tensor_bytes}")
    if header.chunk_bytes == 0 or header.chunk_bytes > max_chunk_bytes:
        raise StreamError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"tensor {header.name!r} declares chunks of {header.chunk_bytes} bytes; "
                          f"allowed 1..{max_chunk_bytes}")
    return header


def receive_body(header: pb.TensorHeader, it: Iterator[pb.TensorFrame]) -> Received:
    """Read the chunks and trailer after `header`, checking sizes, order and the SHA-256."""
    buf = bytearray()
    digest = hashlib.sha256()
    expected_index = 0
    for frame in it:
        kind = frame.WhichOneof("frame")
        if kind == "chunk":
            chunk = frame.chunk
            if chunk.index != expected_index:
                raise StreamError(grpc.StatusCode.DATA_LOSS,
                                  f"tensor {header.name!r}: chunk {chunk.index} arrived where {expected_index} "
                                  "was due")
            if len(chunk.data) > header.chunk_bytes:
                raise StreamError(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"tensor {header.name!r}: chunk {chunk.index} has {len(chunk.data)} bytes, more than "
                                  f"the declared {header.chunk_bytes}")
            if len(buf) + len(chunk.data) > header.total_bytes:
                raise StreamError(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"tensor {header.name!r}: stream carries more than the declared "
                                  f"{header.total_bytes} bytes")
            buf += chunk.data
            digest.update(chunk.data)
            expected_index += 1
        elif kind == "trailer":
            if len(buf) != header.total_bytes:
                raise StreamError(grpc.StatusCode.DATA_LOSS,
                                  f"tensor {header.name!r}: trailer after {len(buf)} of {header.total_bytes} bytes")
            if frame.trailer.chunk_count != expected_index:
                raise StreamError(grpc.StatusCode.DATA_LOSS,
                                  f"tensor {header.name!r}: trailer counts {frame.trailer.chunk_count} chunks, "
                                  f"{expected_index} arrived")
            if frame.trailer.sha256 != digest.digest():
                raise StreamError(grpc.StatusCode.DATA_LOSS, f"tensor {header.name!r}: SHA-256 mismatch")
            for _ in it:
                raise StreamError(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"tensor {header.name!r}: frame after the trailer")
            return Received(header, bytes(buf))
        else:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor {header.name!r}: second header in one stream")
    raise StreamError(grpc.StatusCode.DATA_LOSS,
                      f"tensor {header.name!r}: stream ended after {len(buf)} of {header.total_bytes} bytes, "
                      "no trailer")
