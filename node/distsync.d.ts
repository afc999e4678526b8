// Types of the `distsync` package: the native classes (index.d.ts, generated from src/ by
// @napi-rs/cli) plus what distsync.js adds: the error classes, `Client.withLock`, and `for await`
// over a consumer.

import type { CycleLink, Lock, LockOptions } from './index'

export * from './index'

declare module './index' {
  interface Client {
    /**
     * Runs `callback(lock)` holding lock `name` and releases the lock when the callback's
     * promise settles; resolves to what the callback resolved to. Each call is its own lock
     * owner unless `options.owner` is given.
     *
     * ```js
     * await client.withLock('reports', async (lock) => { await write(report, lock.token) })
     * await client.withLock('config', { shared: true, timeoutMs: 5000 }, async () => { … })
     * ```
     *
     * A failure of the callback is rethrown after the release. A release that fails after the
     * callback succeeded rejects (`NOT_HELD`, `SESSION_EXPIRED`): the lock was lost meanwhile.
     */
    withLock<T>(name: string, callback: (lock: Lock) => T | PromiseLike<T>): Promise<T>
    withLock<T>(
      name: string,
      options: LockOptions | null | undefined,
      callback: (lock: Lock) => T | PromiseLike<T>,
    ): Promise<T>
  }

  interface Consumer {
    /** `for await (const message of queue.consume()) { … }` */
    [Symbol.asyncIterator](): Consumer
  }
}

/** The stable codes of `DistsyncError`. */
export type ErrorCode =
  | 'LOCK_TIMEOUT'
  | 'DEADLOCK'
  | 'ALREADY_HELD'
  | 'NOT_HELD'
  | 'SESSION_EXPIRED'
  | 'UNAVAILABLE'
  | 'INVALID_ARGUMENT'
  | 'NO_SUCH_QUEUE'
  | 'STALE_DELIVERY'
  | 'LIMIT_REACHED'
  | 'PERMISSION_DENIED'
  | 'UNAUTHENTICATED'
  | 'TOO_LARGE'
  | 'CLIENT_CLOSED'
  | 'INTERNAL'

/** Base class of every distsync failure: `code` says which, `message` what to do. */
export declare class DistsyncError extends Error {
  readonly code: ErrorCode
  static readonly code: ErrorCode
}

/** The lock was not granted within `timeoutMs`; nothing is held. */
export declare class LockTimeoutError extends DistsyncError {
  readonly code: 'LOCK_TIMEOUT'
  /** The lock. */
  readonly lock: string
}

/**
 * Waiting for the lock would have closed a cycle of owners waiting for each other; nothing
 * changed. Release a lock of the cycle and retry, or take locks in one order.
 */
export declare class DeadlockError extends DistsyncError {
  readonly code: 'DEADLOCK'
  /** The lock requested. */
  readonly lock: string
  /** Each owner waits for the next through `lock`; the last waits for the first. */
  readonly cycle: CycleLink[]
}

/** This owner already holds or awaits the lock. */
export declare class AlreadyHeldError extends DistsyncError {
  readonly code: 'ALREADY_HELD'
  readonly lock: string
}

/**
 * The lock is not held by this owner: already released, or lost with the session. Whatever it
 * protected may have been changed since.
 */
export declare class NotHeldError extends DistsyncError {
  readonly code: 'NOT_HELD'
  readonly lock: string
}

/**
 * The client's session expired (it was silent past its TTL), so the cluster released its locks
 * and returned its deliveries. Later calls open a new session; redo the work that depended on
 * the old one.
 */
export declare class SessionExpiredError extends DistsyncError {
  readonly code: 'SESSION_EXPIRED'
  readonly session: number
}

/** No node could serve the request in time (no leader, a partition, nodes down). Safe to retry. */
export declare class UnavailableError extends DistsyncError {
  readonly code: 'UNAVAILABLE'
}

/** The request is invalid (a bad name, key, value, option or configuration); fix it. */
export declare class InvalidArgumentError extends DistsyncError {
  readonly code: 'INVALID_ARGUMENT'
}

/** The queue does not exist (ack, nack, stats and delete do not create one). */
export declare class NoSuchQueueError extends DistsyncError {
  readonly code: 'NO_SUCH_QUEUE'
  readonly queue: string
}

/**
 * The delivery is no longer current (acked, nacked, timed out, or its session ended): the
 * message was or will be delivered again. Do not publish its effects.
 */
export declare class StaleDeliveryError extends DistsyncError {
  readonly code: 'STALE_DELIVERY'
  readonly queue: string
  readonly tag: number
}

/** The cluster is at one of its limits; nothing was changed. Consume, delete or wait, then retry. */
export declare class LimitReachedError extends DistsyncError {
  readonly code: 'LIMIT_REACHED'
  /** The limit's name as docs/limits.md lists it: `QUEUED_BYTES_MAX`, `SESSIONS_PER_IDENTITY_MAX`. */
  readonly what: string
  /** The limit's value, in bytes or a count. */
  readonly limit: number
  /** The full queue, when a queue's limit was reached. */
  readonly queue?: string
}

/**
 * This client's identity may not do this: it lacks a grant, it was disabled, or the request
 * named a session that is not its own; nothing was changed. Ask an admin for the grant the
 * message names (`distsync acl grant`), or use another identity.
 */
export declare class PermissionDeniedError extends DistsyncError {
  readonly code: 'PERMISSION_DENIED'
  /** The identity that asked (empty when the node did not say). */
  readonly identity: string
  /** What it asked about: `lock:team-b/x`, `admin`, `session:7`, `identity:alice`. */
  readonly resource: string
  /** The permission it would need: `read`, `write`, `admin`, `owner` or `enabled`. */
  readonly needed: string
}

/**
 * The TLS handshake was refused over certificates: the cluster refused this client's (none
 * given, not signed by its CA, expired, not a client certificate), or the client the nodes'
 * (not signed by the CA in `ca`). Retrying will not help: pass `{ cert, key }` issued by
 * `distsync certs client`, or the right `ca`.
 */
export declare class UnauthenticatedError extends DistsyncError {
  readonly code: 'UNAUTHENTICATED'
}

/**
 * The request exceeds a size limit of the cluster (one write is at most 4 MiB; see
 * docs/limits.md); nothing was changed. Split it into smaller requests.
 */
export declare class TooLargeError extends DistsyncError {
  readonly code: 'TOO_LARGE'
  /** What was too large: `write` or `frame`. */
  readonly what: string
  /** Its size in bytes. */
  readonly bytes: number
  /** The limit in bytes. */
  readonly limit: number
}

/** The client was closed; connect a new one. */
export declare class ClientClosedError extends DistsyncError {
  readonly code: 'CLIENT_CLOSED'
}
