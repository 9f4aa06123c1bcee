from protos import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class KeyInfo(_message.Message):
    __slots__ = ("key", "version", "params_json", "public_key_sha256", "created", "destroyed")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    DESTROYED_FIELD_NUMBER: _ClassVar[int]
    key: str
    version: int
    params_json: str
    public_key_sha256: str
    created: float
    destroyed: bool
    def __init__(self, key: _Optional[str] = ..., version: _Optional[int] = ..., params_json: _Optional[str] = ..., public_key_sha256: _Optional[str] = ..., created: _Optional[float] = ..., destroyed: _Optional[bool] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListKeysReply(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[KeyInfo]
    def __init__(self, keys: _Optional[_Iterable[_Union[KeyInfo, _Mapping]]] = ...) -> None: ...

class AttestRequest(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    def __init__(self, nonce: _Optional[bytes] = ...) -> None: ...

class AttestReply(_message.Message):
    __slots__ = ("measurement", "enclave_public_key", "nonce", "unix_time", "signature", "simulated", "platform_public_key")
    MEASUREMENT_FIELD_NUMBER: _ClassVar[int]
    ENCLAVE_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    UNIX_TIME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    measurement: bytes
    enclave_public_key: bytes
    nonce: bytes
    unix_time: int
    signature: bytes
    simulated: bool
    platform_public_key: bytes
    def __init__(self, measurement: _Optional[bytes] = ..., enclave_public_key: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., unix_time: _Optional[int] = ..., signature: _Optional[bytes] = ..., simulated: _Optional[bool] = ..., platform_public_key: _Optional[bytes] = ...) -> None: ...

class SignReceiptRequest(_message.Message):
    __slots__ = ("session", "digest")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    session: str
    digest: bytes
    def __init__(self, session: _Optional[str] = ..., digest: _Optional[bytes] = ...) -> None: ...

class SignReceiptReply(_message.Message):
    __slots__ = ("measurement", "unix_time", "signature", "simulated")
    MEASUREMENT_FIELD_NUMBER: _ClassVar[int]
    UNIX_TIME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    measurement: bytes
    unix_time: int
    signature: bytes
    simulated: bool
    def __init__(self, measurement: _Optional[bytes] = ..., unix_time: _Optional[int] = ..., signature: _Optional[bytes] = ..., simulated: _Optional[bool] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("key", "ring_dim", "scale_bits", "first_mod_bits", "depth", "security")
    KEY_FIELD_NUMBER: _ClassVar[int]
    RING_DIM_FIELD_NUMBER: _ClassVar[int]
    SCALE_BITS_FIELD_NUMBER: _ClassVar[int]
    FIRST_MOD_BITS_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    SECURITY_FIELD_NUMBER: _ClassVar[int]
    key: str
    ring_dim: int
    scale_bits: int
    first_mod_bits: int
    depth: int
    security: int
    def __init__(self, key: _Optional[str] = ..., ring_dim: _Optional[int] = ..., scale_bits: _Optional[int] = ..., first_mod_bits: _Optional[int] = ..., depth: _Optional[int] = ..., security: _Optional[int] = ...) -> None: ...

class CreateKeyReply(_message.Message):
    __slots__ = ("key", "public_key_sha256")
    KEY_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_SHA256_FIELD_NUMBER: _ClassVar[int]
    key: str
    public_key_sha256: bytes
    def __init__(self, key: _Optional[str] = ..., public_key_sha256: _Optional[bytes] = ...) -> None: ...

class PublicMaterialRequest(_message.Message):
    __slots__ = ("key", "rotations", "relinearization")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ROTATIONS_FIELD_NUMBER: _ClassVar[int]
    RELINEARIZATION_FIELD_NUMBER: _ClassVar[int]
    key: str
    rotations: _containers.RepeatedScalarFieldContainer[int]
    relinearization: bool
    def __init__(self, key: _Optional[str] = ..., rotations: _Optional[_Iterable[int]] = ..., relinearization: _Optional[bool] = ...) -> None: ...

class ConversionReply(_message.Message):
    __slots__ = ("to_principal", "bytes", "seconds")
    TO_PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    to_principal: str
    bytes: int
    seconds: float
    def __init__(self, to_principal: _Optional[str] = ..., bytes: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class AuditRequest(_message.Message):
    __slots__ = ("from_index", "limit")
    FROM_INDEX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    from_index: int
    limit: int
    def __init__(self, from_index: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("index", "time", "principal", "operation", "key", "session", "decision", "reason", "prev_hash", "hash")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    index: int
    time: float
    principal: str
    operation: str
    key: str
    session: str
    decision: str
    reason: str
    prev_hash: bytes
    hash: bytes
    def __init__(self, index: _Optional[int] = ..., time: _Optional[float] = ..., principal: _Optional[str] = ..., operation: _Optional[str] = ..., key: _Optional[str] = ..., session: _Optional[str] = ..., decision: _Optional[str] = ..., reason: _Optional[str] = ..., prev_hash: _Optional[bytes] = ..., hash: _Optional[bytes] = ...) -> None: ...

class AuditReply(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ...) -> None: ...
