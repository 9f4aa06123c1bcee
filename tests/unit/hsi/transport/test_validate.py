"""What every receiver checks of a tensor before keeping it: encoding, dtype, shape without overflow, payload size."""

from __future__ import annotations

import grpc
import pytest
import torch

from hsi.ckks.packing import Packing
from hsi.transport.codec import CodecError, decode_tensor, element_count, encode_tensor
from hsi.transport.shares import split
from hsi.transport.stream import frames
from hsi.transport.tensor import StoredTensor
from hsi.transport.validate import TensorInvalid, check_header, validate
from protos import tensor_pb2 as pb

CKKS_META = {**Packing(8192, 512).meta(), "grid": "1,2", "lengths": "600,400", "level": "0", "key_tag": "k"}


def _plain(dtype: str = "float32", shape: tuple[int, ...] = (3,), data: bytes = b"\0" * 12) -> StoredTensor:
    return StoredTensor(pb.PLAIN, dtype, shape, data)


def _refused(t: StoredTensor, *words: str) -> str:
    with pytest.raises(TensorInvalid) as e:
        validate("x", t)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    message = str(e.value)
    assert message.startswith("tensor 'x': ") and all(w in message for w in words), message
    assert "Error" not in message
    return message


def test_well_formed_tensors_pass() -> None:
    dtype, shape, data = encode_tensor(torch.arange(12, dtype=torch.float32).reshape(3, 4))
    validate("p", StoredTensor(pb.PLAIN, dtype, tuple(shape), data))
    validate("scalar", _plain(shape=(), data=b"\0" * 4))
    validate("empty", _plain(shape=(0, 5), data=b""))
    for share in split(torch.ones(2, 3), 2, 16):
        validate("s", share)
    validate("c", StoredTensor(pb.CKKS, "ckks", (5, 384), b"\1" * 1000, CKKS_META))
    validate("sealed", StoredTensor(pb.SEALED, "float32", (2,), b"\0" * (8 + 16)))
    validate("bundle", StoredTensor(pb.SEALED, "bytes", (7,), b"\0" * 7))


def test_unknown_encoding_refused() -> None:
    _refused(StoredTensor(99, "float32", (3,), b"\0" * 12), "encoding 99", "plain, ckks, share, sealed")
    _refused(StoredTensor(pb.ENCODING_UNSPECIFIED, "float32", (3,), b"\0" * 12), "encoding 0")


def test_unknown_dtype_refused() -> None:
    _refused(_plain(dtype="float16", data=b"\0" * 6), "dtype 'float16'")
    share = split(torch.ones(3), 2, 16)[0]
    _refused(StoredTensor(pb.SHARE, "float64", share.shape, share.data, share.meta), "dtype 'float64'", "int64")
    _refused(StoredTensor(pb.CKKS, "float32", (5, 384), b"\1" * 1000, CKKS_META), "dtype 'float32'", "ckks")


def test_shapes_that_overflow_or_go_negative_refused() -> None:
    # 2^62 * 2^2 wraps int64 to 0: numpy's product would accept an empty payload for it
    _refused(_plain(dtype="int64", shape=(1 << 62, 4), data=b""), "shape", "2^48")
    _refused(_plain(shape=(1 << 40, 1 << 40, 0), data=b""), "shape", "2^48")
    _refused(_plain(shape=(-1, -3), data=b"\0" * 12), "shape", "negative")
    _refused(_plain(shape=(1,) * 33, data=b"\0" * 4), "33 dimensions")
    assert element_count((1 << 24, 1 << 24)) == 1 << 48 and element_count(()) == 1 and element_count((0, 7)) == 0


def test_payload_must_match_the_shape() -> None:
    _refused(_plain(shape=(3,), data=b"\0" * 8), "shape [3]", "takes 12 bytes", "has 8")
    _refused(StoredTensor(pb.SEALED, "float32", (2,), b"\0" * 8), "takes 24 bytes")
    _refused(StoredTensor(pb.SEALED, "bytes", (8,), b"\0" * 7), "sealed bytes")


def test_ckks_layout_must_account_for_the_payload() -> None:
    def ckks(shape: tuple[int, ...] = (5, 384), data: bytes = b"\1" * 1000, **meta: str) -> StoredTensor:
        return StoredTensor(pb.CKKS, "ckks", shape, data, CKKS_META | meta)

    _refused(ckks(shape=(5,)), "(tokens, features)")
    _refused(ckks(shape=(0, 384)), "(tokens, features)")
    _refused(ckks(grid="1"), "grid")
    _refused(StoredTensor(pb.CKKS, "ckks", (5, 384), b"\1" * 1000, {"packing": "feature-major-complex"}), "grid")
    _refused(ckks(grid="2,2"), "grid 2x2", "2 ciphertext lengths")
    _refused(ckks(lengths="600,401"), "total 1001 bytes", "has 1000")
    _refused(ckks(lengths="1000,0"), "each at least 1")


def test_a_header_is_checked_before_its_body() -> None:
    header = pb.TensorHeader(name="x", encoding=pb.PLAIN, dtype="int64", shape=[1 << 62, 4])
    first = next(frames(header, b"", 1 << 16))
    with pytest.raises(TensorInvalid, match="2\\^48"):
        check_header(first.header)
    header.shape[:] = [2]
    check_header(next(frames(header, b"\0" * 16, 1 << 16)).header)
    with pytest.raises(TensorInvalid, match="takes 16 bytes; the payload has 24"):
        check_header(next(frames(header, b"\0" * 24, 1 << 16)).header)


def test_codec_counts_elements_without_overflow() -> None:
    # numpy's int64 product of this shape wraps to 0, so an empty payload used to pass and fail in reshape
    with pytest.raises(CodecError, match="2\\^48"):
        decode_tensor("int64", [1 << 32, 1 << 32], b"")
    with pytest.raises(CodecError, match="negative"):
        decode_tensor("int64", [-2, -1], b"\0" * 16)
    assert decode_tensor("int64", [2, 0], b"").shape == (2, 0)
