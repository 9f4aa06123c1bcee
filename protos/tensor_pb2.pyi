from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_UNSPECIFIED: _ClassVar[Encoding]
    PLAIN: _ClassVar[Encoding]
    CKKS: _ClassVar[Encoding]
    SHARE: _ClassVar[Encoding]
    SEALED: _ClassVar[Encoding]
ENCODING_UNSPECIFIED: Encoding
PLAIN: Encoding
CKKS: Encoding
SHARE: Encoding
SEALED: Encoding

class TensorHeader(_message.Message):
    __slots__ = ("session", "name", "encoding", "source_party", "dtype", "shape", "total_bytes", "chunk_bytes", "meta")
    class MetaEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PARTY_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    session: str
    name: str
    encoding: Encoding
    source_party: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    total_bytes: int
    chunk_bytes: int
    meta: _containers.ScalarMap[str, str]
    def __init__(self, session: _Optional[str] = ..., name: _Optional[str] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., source_party: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., total_bytes: _Optional[int] = ..., chunk_bytes: _Optional[int] = ..., meta: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TensorChunk(_message.Message):
    __slots__ = ("index", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    data: bytes
    def __init__(self, index: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class TensorTrailer(_message.Message):
    __slots__ = ("sha256", "chunk_count")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    sha256: bytes
    chunk_count: int
    def __init__(self, sha256: _Optional[bytes] = ..., chunk_count: _Optional[int] = ...) -> None: ...

class TensorFrame(_message.Message):
    __slots__ = ("header", "chunk", "trailer")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    header: TensorHeader
    chunk: TensorChunk
    trailer: TensorTrailer
    def __init__(self, header: _Optional[_Union[TensorHeader, _Mapping]] = ..., chunk: _Optional[_Union[TensorChunk, _Mapping]] = ..., trailer: _Optional[_Union[TensorTrailer, _Mapping]] = ...) -> None: ...
