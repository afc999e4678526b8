// The example, line by line; process lifetime with and without close(); the
// worker-pool example program.
'use strict'

const assert = require('node:assert/strict')
const path = require('node:path')
const { after, before, test } = require('node:test')

const { Client } = require('..')
const { Cluster, REPO, exited, helper, nextLine, stopHelpers, unique, waitUntil } = require('./helpers/cluster')

let cluster
before(async () => {
  cluster = await Cluster.start(3)
})
after(async () => {
  await stopHelpers()
  await cluster?.stop()
})

test('the example works line by line', async () => {
  const [reports, config, x, queueName, key] = ['reports', 'config', 'x', 'jobs', 'user:1'].map(unique)
  const client = await Client.connect(cluster.endpoints, { ca: cluster.ca })

  const seen = []
  const result = await client.withLock(reports, async (lock) => {
    seen.push(lock.token)
    assert.equal(lock.name, reports)
    assert.equal(lock.mode, 'exclusive')
    assert.equal(lock.held, true)
    return 'done'
  })
  assert.equal(result, 'done')
  assert.equal(seen.length, 1)
  assert.ok(seen[0] > 0)
  assert.equal(await client.lockInfo(reports), null, 'withLock released the lock')

  await client.withLock(config, { shared: true, timeoutMs: 5000 }, async (lock) => {
    assert.equal(lock.mode, 'shared')
    const info = await client.lockInfo(config)
    assert.equal(info.holders.length, 1)
    assert.equal(info.holders[0].mode, 'shared')
  })

  const lock = await client.lock(x)
  try {
    assert.equal((await client.lockInfo(x)).holders[0].token, lock.token)
  } finally {
    await lock.release()
  }
  assert.equal(lock.released, true)
  assert.equal(lock.held, false)
  assert.equal(await client.lockInfo(x), null)

  const jobs = client.queue(queueName)
  const id = await jobs.put(Buffer.from('payload'), { dedupId: 'order-42' })
  assert.equal(await jobs.put(Buffer.from('payload'), { dedupId: 'order-42' }), id, 'a retried put is a no-op')
  const msg = await jobs.get({ waitMs: 1000 })
  assert.ok(msg)
  assert.deepEqual(msg.body, Buffer.from('payload'))
  assert.equal(msg.id, id)
  assert.equal(msg.attempt, 1)
  await msg.ack()
  assert.equal(await jobs.get({ waitMs: 100 }), null, 'null when nothing arrived')

  await jobs.put(Buffer.from('first'))
  await jobs.put(new Uint8Array([115, 101, 99, 111, 110, 100]))
  const consumed = []
  for await (const m of jobs.consume()) {
    consumed.push(m.body.toString())
    await m.ack()
    if (consumed.length === 2) break
  }
  assert.deepEqual(consumed, ['first', 'second'])

  await client.cache.set(key, Buffer.from('…'), { ttlSeconds: 60 })
  assert.deepEqual(await client.cache.get(key), Buffer.from('…'))
  assert.equal(await client.cache.get(unique('never-set')), null)

  await client.close()
  assert.equal(client.closed, true)
})

test('a process exits once close() is called, and one that forgets is not kept alive', async () => {
  const name = unique('forgotten')
  const child = helper('forgetful.js', [name], cluster.env())
  assert.match(await nextLine(child), /^holding \d+$/)
  // Not closed: nothing but the client is left, and the process ends by itself.
  assert.equal(await exited(child), 0, child.stderrText)

  const client = await Client.connect(cluster.endpoints, { ca: cluster.ca })
  try {
    // Its session expires at its TTL (2 s), and the lock with it.
    await waitUntil(async () => (await client.lockInfo(name)) === null, 30_000, 'the forgotten lock to be freed')
    await client.withLock(name, { timeoutMs: 5000 }, async (lock) => assert.ok(lock.held))
  } finally {
    await client.close()
  }
})

test('close() ends a process that still waits: its lock request is withdrawn', async () => {
  const name = unique('contended')
  const client = await Client.connect(cluster.endpoints, { ca: cluster.ca })
  const other = await Client.connect(cluster.endpoints, { ca: cluster.ca })
  try {
    const held = await other.lock(name)
    const waiting = client.lock(name)
    await waitUntil(async () => (await other.lockInfo(name))?.waiters.length === 1, 10_000, 'the request to queue')
    const refused = assert.rejects(waiting, { code: 'CLIENT_CLOSED', name: 'ClientClosedError' })
    await client.close()
    await refused
    await waitUntil(async () => (await other.lockInfo(name))?.waiters.length === 0, 10_000, 'the request to be withdrawn')
    await assert.rejects(client.lock(name), { code: 'CLIENT_CLOSED' })
    await held.release()
    assert.equal(await other.lockInfo(name), null, 'the withdrawn waiter was not granted')
  } finally {
    await client.close()
    await other.close()
  }
})

test('the worker-pool example does every job exactly once', async () => {
  const script = path.join(REPO, 'examples', 'node', 'worker_pool.js')
  const child = helper(path.relative(__dirname + '/helpers', script), ['--jobs', '30', '--workers', '3'], cluster.env())
  let output = ''
  child.stdout.on('data', (data) => {
    output += data
  })
  const code = await exited(child)
  assert.equal(code, 0, `${output}\n${child.stderrText}`)
  assert.match(output, /all 30 jobs in the ledger exactly once/)
  assert.equal(output.match(/^worker-\d+ did \d+ jobs$/gm).length, 3)
})
