"""Type stubs of the native module `distsync._native` (re-exported by `distsync`)."""

import os
from collections.abc import Awaitable, Iterator, AsyncIterator, Sequence
from types import TracebackType
from typing import Optional, Union, final

from typing_extensions import Self

__version__: str

BytesLike = Union[bytes, bytearray, memoryview, str]
"""Keys, values and message bodies: bytes as given, or `str` encoded as UTF-8."""

Endpoints = Union[str, Sequence[str]]
"""Node addresses: a list of "host:port", or one comma-separated string."""

# ---------------------------------------------------------------------------------- exceptions

class Error(Exception):
    """Base class of every distsync failure. `str(error)` says what happened and what to do."""

class LockTimeout(Error):
    """The lock was not granted within the timeout; nothing is held."""
    name: str

class DeadlockError(Error):
    """Waiting would have closed a cycle of owners waiting for each other; nothing changed."""
    name: str
    cycle: list[tuple[int, int, str]]
    """(session, actor, lock): each owner waits for the next through `lock`, the last for the first."""

class AlreadyHeld(Error):
    """This owner already holds or awaits the lock."""
    name: str

class NotHeld(Error):
    """The lock is not held by this owner (never acquired, released, or lost with the session)."""
    name: str

class SessionExpired(Error):
    """The session expired: its locks were released and its deliveries returned."""
    session: int

class Unavailable(Error):
    """No node could serve the request before the deadline; safe to retry."""

class InvalidArgument(Error):
    """The request or configuration is invalid; retrying will not help."""

class NoSuchQueue(Error):
    """The queue does not exist."""
    queue: str

class StaleDelivery(Error):
    """The delivery is no longer current; the message was or will be delivered again."""
    queue: str
    tag: int

class LimitReached(Error):
    """The cluster is at one of its limits; nothing was changed."""
    what: str
    """The limit's name as docs/limits.md lists it: `QUEUED_BYTES_MAX`, `SESSIONS_PER_IDENTITY_MAX`."""
    limit: int
    """The limit's value, in bytes or a count."""
    queue: Optional[str]
    """The full queue, when a queue's limit was reached."""

class TooLarge(InvalidArgument):
    """The request exceeds a size limit (one write is at most 4 MiB); split it. Nothing changed."""
    what: str
    """What was too large: `write` or `frame`."""
    bytes: int
    """Its size in bytes."""
    limit: int
    """The limit in bytes."""

class ForkError(Error):
    """The client was made in the parent of a fork(); make a new one in this process."""

class PermissionDenied(Error):
    """This client's identity may not do this (no grant, disabled, another's session); nothing changed."""
    identity: str
    """The identity that asked (empty when the node did not say)."""
    resource: str
    """What it asked about: `lock:team-b/x`, `admin`, `session:7`, `identity:alice`."""
    needed: str
    """The permission it would need: `read`, `write`, `admin`, `owner` or `enabled`."""

class Unauthenticated(Error):
    """The TLS handshake was refused over certificates; pass `cert=`/`key=` (or the right `ca=`)."""

# ---------------------------------------------------------------------------------- clients

@final
class Owner:
    """A lock owner shared by several threads or tasks; made by `Client.owner()`."""
    @property
    def actor(self) -> int: ...

@final
class Client:
    """A connection to a distsync cluster, for blocking code; thread-safe."""
    def __init__(
        self,
        endpoints: Optional[Endpoints] = None,
        *,
        ca: Optional[Union[str, os.PathLike[str]]] = None,
        cert: Optional[Union[str, os.PathLike[str]]] = None,
        key: Optional[Union[str, os.PathLike[str]]] = None,
        session_ttl: float = 10.0,
        request_timeout: float = 10.0,
        home: Optional[str] = None,
    ) -> None: ...
    def lock(
        self, name: str, *, shared: bool = False, timeout: Optional[float] = None, owner: Optional[Owner] = None
    ) -> Lock: ...
    def owner(self) -> Owner: ...
    def queue(self, name: str, *, visibility: Optional[float] = None) -> Queue: ...
    @property
    def cache(self) -> Cache: ...
    @property
    def session_id(self) -> Optional[int]: ...
    def lock_info(self, name: str) -> Optional[LockInfo]: ...
    def queues(self) -> list[QueueStats]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self, kind: Optional[type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]
    ) -> bool: ...

@final
class AsyncClient:
    """A connection to a distsync cluster for asyncio code."""
    def __init__(
        self,
        endpoints: Optional[Endpoints] = None,
        *,
        ca: Optional[Union[str, os.PathLike[str]]] = None,
        cert: Optional[Union[str, os.PathLike[str]]] = None,
        key: Optional[Union[str, os.PathLike[str]]] = None,
        session_ttl: float = 10.0,
        request_timeout: float = 10.0,
        home: Optional[str] = None,
    ) -> None: ...
    def connect(self) -> Awaitable[Self]: ...
    def lock(
        self, name: str, *, shared: bool = False, timeout: Optional[float] = None, owner: Optional[Owner] = None
    ) -> AsyncLock: ...
    def owner(self) -> Owner: ...
    def queue(self, name: str, *, visibility: Optional[float] = None) -> AsyncQueue: ...
    @property
    def cache(self) -> AsyncCache: ...
    @property
    def session_id(self) -> Optional[int]: ...
    def lock_info(self, name: str) -> Awaitable[Optional[LockInfo]]: ...
    def queues(self) -> Awaitable[list[QueueStats]]: ...
    def close(self) -> Awaitable[None]: ...
    def __aenter__(self) -> Awaitable[Self]: ...
    def __aexit__(
        self, kind: Optional[type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]
    ) -> Awaitable[bool]: ...

# ---------------------------------------------------------------------------------- locks

@final
class Lock:
    """A distributed lock; a context manager. Holds are per thread."""
    def acquire(self, timeout: Optional[float] = None) -> Self: ...
    def try_acquire(self) -> bool: ...
    def release(self) -> None: ...
    def upgrade(self) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def token(self) -> Optional[int]: ...
    @property
    def held(self) -> bool: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self, kind: Optional[type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]
    ) -> bool: ...

@final
class AsyncLock:
    """A distributed lock for asyncio; an async context manager. Holds are per task."""
    def acquire(self, timeout: Optional[float] = None) -> Awaitable[Self]: ...
    def try_acquire(self) -> Awaitable[bool]: ...
    def release(self) -> Awaitable[None]: ...
    def upgrade(self) -> Awaitable[None]: ...
    @property
    def name(self) -> str: ...
    @property
    def token(self) -> Optional[int]: ...
    @property
    def held(self) -> bool: ...
    def __aenter__(self) -> Awaitable[Self]: ...
    def __aexit__(
        self, kind: Optional[type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]
    ) -> Awaitable[bool]: ...

@final
class LockHolder:
    session: int
    actor: int
    mode: str
    token: int
    since_ms: int

@final
class LockWaiter:
    session: int
    actor: int
    mode: str
    upgrade: bool
    deadline_ms: Optional[int]

@final
class LockInfo:
    name: str
    holders: list[LockHolder]
    waiters: list[LockWaiter]

# ---------------------------------------------------------------------------------- queues

@final
class Queue:
    """A durable FIFO queue."""
    @property
    def name(self) -> str: ...
    def put(self, body: BytesLike, *, dedup_id: Optional[str] = None) -> int: ...
    def put_batch(self, bodies: Sequence[BytesLike]) -> list[int]: ...
    def get(self, wait: float = 0.0) -> Optional[Message]: ...
    def get_batch(self, max: int, wait: float = 0.0) -> list[Message]: ...
    def consume(self, *, prefetch: int = 1) -> Consumer: ...
    def stats(self) -> QueueStats: ...
    def create(
        self,
        *,
        max_attempts: Optional[int] = None,
        visibility: Optional[float] = None,
        max_message_bytes: Optional[int] = None,
        dedup_window: Optional[float] = None,
    ) -> bool: ...
    def delete(self) -> int: ...

@final
class Message:
    """A delivered message: process it, then ack it."""
    @property
    def body(self) -> bytes: ...
    @property
    def id(self) -> int: ...
    @property
    def tag(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    @property
    def queue(self) -> str: ...
    @property
    def enqueued_ms(self) -> int: ...
    @property
    def visible_at_ms(self) -> int: ...
    def ack(self) -> None: ...
    def nack(self) -> None: ...
    def extend(self, visibility: float) -> None: ...

@final
class Consumer(Iterator[Message]):
    def __iter__(self) -> Self: ...
    def __next__(self) -> Message: ...

@final
class AsyncQueue:
    """A durable FIFO queue for asyncio."""
    @property
    def name(self) -> str: ...
    def put(self, body: BytesLike, *, dedup_id: Optional[str] = None) -> Awaitable[int]: ...
    def put_batch(self, bodies: Sequence[BytesLike]) -> Awaitable[list[int]]: ...
    def get(self, wait: float = 0.0) -> Awaitable[Optional[AsyncMessage]]: ...
    def get_batch(self, max: int, wait: float = 0.0) -> Awaitable[list[AsyncMessage]]: ...
    def consume(self, *, prefetch: int = 1) -> AsyncConsumer: ...
    def stats(self) -> Awaitable[QueueStats]: ...
    def create(
        self,
        *,
        max_attempts: Optional[int] = None,
        visibility: Optional[float] = None,
        max_message_bytes: Optional[int] = None,
        dedup_window: Optional[float] = None,
    ) -> Awaitable[bool]: ...
    def delete(self) -> Awaitable[int]: ...

@final
class AsyncMessage:
    """A delivered message for asyncio."""
    @property
    def body(self) -> bytes: ...
    @property
    def id(self) -> int: ...
    @property
    def tag(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    @property
    def queue(self) -> str: ...
    @property
    def enqueued_ms(self) -> int: ...
    @property
    def visible_at_ms(self) -> int: ...
    def ack(self) -> Awaitable[None]: ...
    def nack(self) -> Awaitable[None]: ...
    def extend(self, visibility: float) -> Awaitable[None]: ...

@final
class AsyncConsumer(AsyncIterator[AsyncMessage]):
    def __aiter__(self) -> Self: ...
    def __anext__(self) -> Awaitable[AsyncMessage]: ...

@final
class QueueStats:
    name: str
    depth: int
    in_flight: int
    waiting_consumers: int
    dead_lettered: int
    put_total: int
    acked_total: int
    bytes: int
    oldest_age_ms: Optional[int]
    max_attempts: int
    visibility: float
    max_message_bytes: int
    dedup_window: float

# ---------------------------------------------------------------------------------- cache

@final
class Cache:
    """The coherent cache; linearizable reads unless `local=True`."""
    def get(self, key: BytesLike, *, local: bool = False) -> Optional[bytes]: ...
    def get_versioned(self, key: BytesLike, *, local: bool = False) -> Optional[tuple[bytes, int]]: ...
    def get_many(self, keys: Sequence[BytesLike], *, local: bool = False) -> list[Optional[bytes]]: ...
    def set(self, key: BytesLike, value: BytesLike, *, ttl: Optional[float] = None) -> int: ...
    def delete(self, key: BytesLike) -> bool: ...

@final
class AsyncCache:
    """The coherent cache for asyncio."""
    def get(self, key: BytesLike, *, local: bool = False) -> Awaitable[Optional[bytes]]: ...
    def get_versioned(self, key: BytesLike, *, local: bool = False) -> Awaitable[Optional[tuple[bytes, int]]]: ...
    def get_many(self, keys: Sequence[BytesLike], *, local: bool = False) -> Awaitable[list[Optional[bytes]]]: ...
    def set(self, key: BytesLike, value: BytesLike, *, ttl: Optional[float] = None) -> Awaitable[int]: ...
    def delete(self, key: BytesLike) -> Awaitable[bool]: ...
