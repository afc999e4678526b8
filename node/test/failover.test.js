// Leader changes are invisible to the caller: a leader SIGKILLed during withLock, and queue and
// cache calls across a leader kill.
'use strict'

const assert = require('node:assert/strict')
const { afterEach, beforeEach, test } = require('node:test')

const { Client } = require('..')
const { Cluster, unique } = require('./helpers/cluster')

let cluster
beforeEach(async () => {
  cluster = await Cluster.start(3)
})
afterEach(async () => {
  await cluster?.stop()
})

test('the leader SIGKILLed during withLock: the callback completes and the lock is released', async () => {
  const name = unique('failover')
  const client = await Client.connect(cluster.endpoints, { ca: cluster.ca })
  const other = await Client.connect(cluster.endpoints, { ca: cluster.ca })
  try {
    const leader = await cluster.waitForLeader()
    const steps = []
    const token = await client.withLock(name, async (lock) => {
      steps.push('granted')
      await cluster.kill(leader)
      const survivors = cluster.ids.filter((id) => id !== leader)
      const next = await cluster.waitForLeader(survivors)
      assert.notEqual(next, leader)
      // The client keeps its session across the change: the lock is still ours.
      assert.equal((await client.lockInfo(name)).holders[0].token, lock.token)
      steps.push('finished')
      return lock.token
    })
    assert.deepEqual(steps, ['granted', 'finished'])
    // Released for real: the session lives on, so only a release frees the lock this soon.
    assert.equal(await other.lockInfo(name), null)
    await other.withLock(name, { timeoutMs: 5000 }, async (lock) => {
      assert.ok(lock.token > token, `token ${lock.token} after ${token}`)
    })
  } finally {
    await client.close()
    await other.close()
  }
})

test('queue and cache calls carry on across a leader kill', async () => {
  const client = await Client.connect(cluster.endpoints, { ca: cluster.ca })
  try {
    const jobs = client.queue(unique('jobs'))
    const key = unique('key')
    for (let n = 0; n < 5; n++) await jobs.put(`before-${n}`)
    await client.cache.set(key, 'before')
    await cluster.kill(await cluster.waitForLeader())
    // No wait for the new leader: the client finds it.
    for (let n = 0; n < 5; n++) await jobs.put(`after-${n}`)
    await client.cache.set(key, 'after')
    assert.deepEqual(await client.cache.get(key), Buffer.from('after'))
    const bodies = []
    for (const message of await jobs.getBatch(20, { waitMs: 1000 })) {
      bodies.push(message.body.toString())
      await message.ack()
    }
    assert.deepEqual(bodies, [0, 1, 2, 3, 4].map((n) => `before-${n}`).concat([0, 1, 2, 3, 4].map((n) => `after-${n}`)))
  } finally {
    await client.close()
  }
})
