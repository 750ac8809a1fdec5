from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Entry(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Descriptor(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ...) -> None: ...

class Limit(_message.Message):
    __slots__ = ("requests", "window_seconds")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    requests: int
    window_seconds: int
    def __init__(self, requests: _Optional[int] = ..., window_seconds: _Optional[int] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("domain", "descriptor")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    domain: str
    descriptor: Descriptor
    def __init__(self, domain: _Optional[str] = ..., descriptor: _Optional[_Union[Descriptor, _Mapping]] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("key", "limited", "limit", "used", "remaining", "blocked", "reset_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LIMITED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    RESET_MS_FIELD_NUMBER: _ClassVar[int]
    key: str
    limited: bool
    limit: Limit
    used: int
    remaining: int
    blocked: bool
    reset_ms: int
    def __init__(self, key: _Optional[str] = ..., limited: _Optional[bool] = ..., limit: _Optional[_Union[Limit, _Mapping]] = ..., used: _Optional[int] = ..., remaining: _Optional[int] = ..., blocked: _Optional[bool] = ..., reset_ms: _Optional[int] = ...) -> None: ...

class Block(_message.Message):
    __slots__ = ("key", "limit", "used", "reset_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    RESET_MS_FIELD_NUMBER: _ClassVar[int]
    key: str
    limit: Limit
    used: int
    reset_ms: int
    def __init__(self, key: _Optional[str] = ..., limit: _Optional[_Union[Limit, _Mapping]] = ..., used: _Optional[int] = ..., reset_ms: _Optional[int] = ...) -> None: ...

class ListBlocksRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListBlocksResponse(_message.Message):
    __slots__ = ("blocks",)
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    blocks: _containers.RepeatedCompositeFieldContainer[Block]
    def __init__(self, blocks: _Optional[_Iterable[_Union[Block, _Mapping]]] = ...) -> None: ...

class ClearBlockRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class ClearKeyRequest(_message.Message):
    __slots__ = ("domain", "descriptor")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    domain: str
    descriptor: Descriptor
    def __init__(self, domain: _Optional[str] = ..., descriptor: _Optional[_Union[Descriptor, _Mapping]] = ...) -> None: ...

class ClearResponse(_message.Message):
    __slots__ = ("key", "cleared")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CLEARED_FIELD_NUMBER: _ClassVar[int]
    key: str
    cleared: bool
    def __init__(self, key: _Optional[str] = ..., cleared: _Optional[bool] = ...) -> None: ...
