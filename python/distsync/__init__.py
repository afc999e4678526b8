"""distsync: fenced distributed locks, durable queues and a coherent cache on Raft.

Connect with :class:`Client` (blocking, thread-safe) or :class:`AsyncClient` (asyncio)::

    import distsync

    client = distsync.Client(["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"], ca="tls/ca.pem")

    with client.lock("reports") as lock:      # exclusive; lock.token is the fencing token
        ...

    jobs = client.queue("jobs")
    jobs.put(b"payload", dedup_id="order-42")
    msg = jobs.get(wait=1.0)                  # None when nothing arrived
    if msg:
        handle(msg.body)
        msg.ack()

    client.cache.set("user:1", b"...", ttl=60)
    client.cache.get("user:1")

Every failure is a subclass of :class:`Error`; ``str(error)`` says what happened and what to do.
The client presents the certificate naming its identity: ``cert=`` and ``key=`` (from
``distsync certs client``), else ``$DISTSYNC_CERT`` and ``$DISTSYNC_KEY``, else ``client.pem``
beside the CA file; what an identity may not do raises :class:`PermissionDenied`.
Leader changes are handled inside the client: calls retry across failovers until their
``request_timeout``.
"""

from ._native import (
    AlreadyHeld,
    AsyncCache,
    AsyncClient,
    AsyncConsumer,
    AsyncLock,
    AsyncMessage,
    AsyncQueue,
    Cache,
    Client,
    Consumer,
    DeadlockError,
    Error,
    ForkError,
    InvalidArgument,
    LimitReached,
    Lock,
    LockHolder,
    LockInfo,
    LockTimeout,
    LockWaiter,
    Message,
    NoSuchQueue,
    NotHeld,
    Owner,
    PermissionDenied,
    Queue,
    QueueStats,
    SessionExpired,
    StaleDelivery,
    Unauthenticated,
    TooLarge,
    Unavailable,
    __version__,
)

__all__ = [
    "AlreadyHeld",
    "AsyncCache",
    "AsyncClient",
    "AsyncConsumer",
    "AsyncLock",
    "AsyncMessage",
    "AsyncQueue",
    "Cache",
    "Client",
    "Consumer",
    "DeadlockError",
    "Error",
    "ForkError",
    "InvalidArgument",
    "LimitReached",
    "Lock",
    "LockHolder",
    "LockInfo",
    "LockTimeout",
    "LockWaiter",
    "Message",
    "NoSuchQueue",
    "NotHeld",
    "Owner",
    "PermissionDenied",
    "Queue",
    "QueueStats",
    "SessionExpired",
    "StaleDelivery",
    "Unauthenticated",
    "TooLarge",
    "Unavailable",
    "__version__",
]
