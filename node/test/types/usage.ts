// Compiled (not run) by api.test.js with `tsc --strict`: the package's declarations accept the
// documented API and refuse misuse (each @ts-expect-error must be an error).
import {
  Client,
  DeadlockError,
  DistsyncError,
  ErrorCode,
  Lock,
  LockTimeoutError,
  Message,
  PermissionDeniedError,
  QueueStats,
} from '../..'

export async function example(): Promise<void> {
  const client: Client = await Client.connect(['127.0.0.1:7101', '127.0.0.1:7102', '127.0.0.1:7103'], { ca: 'tls/ca.pem' })
  const token: number = await client.withLock('reports', async (lock) => lock.token)
  const same: string = await client.withLock('config', { shared: true, timeoutMs: 5000 }, () => 'sync result')
  const lock: Lock = await client.lock('x')
  try {
    const mode: 'exclusive' | 'shared' = lock.mode
    void mode
  } finally {
    await lock.release()
  }
  const maybe: Lock | null = await client.tryLock('x', { owner: client.owner() })
  const actor: bigint = client.owner().actor

  const jobs = client.queue('jobs')
  const id: number = await jobs.put(Buffer.from('payload'), { dedupId: 'order-42' })
  const msg: Message | null = await jobs.get({ waitMs: 1000 })
  if (msg) {
    const body: Buffer = msg.body
    void body
    await msg.ack()
  }
  for await (const m of jobs.consume()) {
    const fromLoop: Message = m
    await fromLoop.ack()
  }
  const stats: QueueStats = await jobs.stats()

  await client.cache.set('user:1', Buffer.from('…'), { ttlSeconds: 60 })
  const cached: Buffer | null = await client.cache.get('user:1')
  await client.close()

  try {
    await client.lock('y')
  } catch (error) {
    if (error instanceof DeadlockError) {
      const locks: string[] = error.cycle.map((link) => link.lock)
      void locks
    }
    if (error instanceof PermissionDeniedError) {
      const denied: [string, string, string] = [error.identity, error.resource, error.needed]
      void denied
    }
    if (error instanceof LockTimeoutError) {
      const name: string = error.lock
      void name
    }
    if (error instanceof DistsyncError) {
      const code: ErrorCode = error.code
      void code
    }
  }
  const billing: Client = await Client.connect('127.0.0.1:7101', {
    ca: 'tls/ca.pem',
    cert: 'tls/billing.pem',
    key: 'tls/billing-key.pem',
  })
  await billing.close()
  void [token, same, maybe, actor, id, stats, cached]

  // @ts-expect-error: a lock name is a string
  await client.lock(42)
  // @ts-expect-error: withLock needs a callback
  await client.withLock('x', { shared: true })
  // @ts-expect-error: the token is read-only data, not a method
  lock.token()
  // @ts-expect-error: a certificate is a path
  await Client.connect('127.0.0.1:7101', { cert: Buffer.from('pem') })
  // @ts-expect-error: cache values are Buffers, not strings
  const wrong: string | null = await client.cache.get('k')
  void wrong
}
