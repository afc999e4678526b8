// Locks: exclusion within a process and across processes (checked with fencing tokens), the
// error codes, owners, shared holds and upgrades.
'use strict'

const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { after, before, test } = require('node:test')

const {
  AlreadyHeldError,
  Client,
  DeadlockError,
  DistsyncError,
  InvalidArgumentError,
  LockTimeoutError,
  NotHeldError,
} = require('..')
const { Cluster, exited, helper, sleep, stopHelpers, unique, waitUntil } = require('./helpers/cluster')

let cluster
let client
before(async () => {
  cluster = await Cluster.start(3)
  client = await Client.connect(cluster.endpoints, { ca: cluster.ca })
})
after(async () => {
  await stopHelpers()
  await client?.close()
  await cluster?.stop()
})

test('concurrent withLock calls in one process exclude each other', async () => {
  const name = unique('counter')
  let inside = 0
  let counter = 0
  let lastToken = 0
  const task = async () => {
    for (let round = 0; round < 8; round++) {
      await client.withLock(name, async (lock) => {
        inside++
        assert.equal(inside, 1, 'two holders at once')
        assert.ok(lock.token > lastToken, `token ${lock.token} after ${lastToken}`)
        lastToken = lock.token
        const read = counter
        await sleep(1)
        counter = read + 1
        inside--
      })
    }
  }
  await Promise.all([task(), task(), task(), task()])
  assert.equal(counter, 32)
})

test('several Node processes exclude each other, checked with fencing tokens', async () => {
  const name = unique('shared-file')
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'distsync-fenced-'))
  const file = path.join(directory, 'counter')
  fs.writeFileSync(file, '0 0\n')
  try {
    const workers = [0, 1, 2].map((n) => helper('fenced-worker.js', [name, file, '12', String(n)], cluster.env()))
    const codes = await Promise.all(workers.map(exited))
    assert.deepEqual(codes, [0, 0, 0], workers.map((w) => w.stderrText).join('\n'))
    const [, count] = fs.readFileSync(file, 'utf8').trim().split(' ').map(Number)
    assert.equal(count, 36, 'an increment was lost: two holders overlapped')
    const log = fs.readFileSync(`${file}.log`, 'utf8').trim().split('\n').map((line) => line.split(' '))
    const tokens = log.map(([token]) => Number(token))
    assert.equal(tokens.length, 36)
    tokens.slice(1).forEach((token, i) => assert.ok(token > tokens[i], `token ${token} after ${tokens[i]}`))
    assert.deepEqual(new Set(log.map(([, worker]) => worker)), new Set(['0', '1', '2']))
  } finally {
    fs.rmSync(directory, { recursive: true, force: true })
  }
})

test('a lock not granted within timeoutMs rejects with LOCK_TIMEOUT and leaves no waiter', async () => {
  const name = unique('busy')
  const held = await client.lock(name)
  try {
    const error = await client.withLock(name, { timeoutMs: 300 }, () => assert.fail('granted')).catch((e) => e)
    assert.ok(error instanceof LockTimeoutError)
    assert.ok(error instanceof DistsyncError)
    assert.equal(error.code, 'LOCK_TIMEOUT')
    assert.equal(error.lock, name)
    assert.match(error.message, /not granted within the timeout/)
    const info = await client.lockInfo(name)
    assert.equal(info.waiters.length, 0)
    assert.equal(info.holders.length, 1)
  } finally {
    await held.release()
  }
})

test('a deadlock rejects with DEADLOCK and the cycle, and the other waiter is then granted', async () => {
  const [a, b] = [unique('a'), unique('b')]
  const first = client.owner()
  const second = client.owner()
  const holdA = await client.lock(a, { owner: first })
  const holdB = await client.lock(b, { owner: second })
  const firstWaits = client.lock(b, { owner: first })
  await waitUntil(async () => (await client.lockInfo(b)).waiters.length === 1, 10_000, 'the first owner to wait')

  const error = await client.lock(a, { owner: second }).catch((e) => e)
  assert.ok(error instanceof DeadlockError, String(error))
  assert.equal(error.code, 'DEADLOCK')
  assert.equal(error.lock, a)
  assert.deepEqual(new Set(error.cycle.map((link) => link.lock)), new Set([a, b]))
  assert.deepEqual(new Set(error.cycle.map((link) => link.actor)), new Set([first.actor, second.actor]))
  assert.ok(error.cycle.every((link) => link.session === client.sessionId))

  await holdB.release()
  const granted = await firstWaits
  assert.equal(granted.name, b)
  assert.ok(granted.token > holdB.token)
  await granted.release()
  await holdA.release()
})

test('one owner taking a lock it holds gets ALREADY_HELD; its nested locks are granted', async () => {
  const [outer, inner] = [unique('outer'), unique('inner')]
  const me = client.owner()
  await client.withLock(outer, { owner: me }, async (lock) => {
    assert.equal(lock.owner.actor, me.actor)
    const error = await client.lock(outer, { owner: me }).catch((e) => e)
    assert.ok(error instanceof AlreadyHeldError)
    assert.equal(error.code, 'ALREADY_HELD')
    assert.equal(error.lock, outer)
    await client.withLock(inner, { owner: lock.owner }, async (nested) => {
      assert.equal(nested.owner.actor, me.actor)
      const info = await client.lockInfo(inner)
      assert.equal(info.holders[0].actor, me.actor)
    })
  })
})

test('shared holds coexist, exclude a writer, and upgrade to a higher token', async () => {
  const name = unique('config')
  const reader = await client.lock(name, { shared: true, timeoutMs: 5000 })
  const another = await client.lock(name, { shared: true })
  assert.equal(await client.tryLock(name), null, 'an exclusive hold beside shared ones')
  assert.equal((await client.lockInfo(name)).holders.length, 2)
  await another.release()
  const before = reader.token
  await reader.upgrade()
  assert.equal(reader.mode, 'exclusive')
  assert.ok(reader.token > before)
  assert.equal((await client.lockInfo(name)).holders[0].mode, 'exclusive')
  await reader.release()
  const free = await client.tryLock(name)
  assert.ok(free && free.token > reader.token)
  await free.release()
})

test('a failing callback is rethrown after the lock is released', async () => {
  const name = unique('failing')
  const failure = new Error('the work failed')
  await assert.rejects(
    client.withLock(name, async () => {
      throw failure
    }),
    (error) => error === failure,
  )
  assert.equal(await client.lockInfo(name), null)
})

test('release twice, bad arguments', async () => {
  const name = unique('twice')
  const lock = await client.lock(name)
  await lock.release()
  const error = await lock.release().catch((e) => e)
  assert.ok(error instanceof NotHeldError)
  assert.equal(error.code, 'NOT_HELD')
  assert.equal(error.lock, name)

  await assert.rejects(client.lock(''), (e) => e instanceof InvalidArgumentError && e.code === 'INVALID_ARGUMENT')
  await assert.rejects(client.lock('x'.repeat(1025)), { code: 'INVALID_ARGUMENT' })
  await assert.rejects(client.lock(name, { timeoutMs: -1 }), { code: 'INVALID_ARGUMENT', message: /timeoutMs/ })
  await assert.rejects(client.withLock(name), { code: 'INVALID_ARGUMENT', message: /callback/ })
  await assert.rejects(lock.upgrade(), { code: 'NOT_HELD' })
})
