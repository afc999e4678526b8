// The coherent cache: reads see writes at once from every node, versions, TTLs, typed errors.
'use strict'

const assert = require('node:assert/strict')
const { after, before, test } = require('node:test')

const { Client, InvalidArgumentError } = require('..')
const { Cluster, unique, waitUntil } = require('./helpers/cluster')

let cluster
let client
before(async () => {
  cluster = await Cluster.start(3)
  client = await Client.connect(cluster.endpoints, { ca: cluster.ca })
})
after(async () => {
  await client?.close()
  await cluster?.stop()
})

test('set, get and delete, with versions', async () => {
  const key = unique('user')
  assert.equal(await client.cache.get(key), null)
  assert.equal(await client.cache.getVersioned(key), null)
  const first = await client.cache.set(key, Buffer.from([0, 1, 2, 255]))
  assert.deepEqual(await client.cache.get(key), Buffer.from([0, 1, 2, 255]))
  const second = await client.cache.set(key, 'text')
  assert.ok(second > first)
  const versioned = await client.cache.getVersioned(key)
  assert.deepEqual(versioned, { value: Buffer.from('text'), version: second })
  assert.equal(await client.cache.delete(key), true)
  assert.equal(await client.cache.delete(key), false)
  assert.equal(await client.cache.get(key), null)
})

test('a write is seen at once by clients homed on every node', async () => {
  const key = unique('coherent')
  const readers = await Promise.all(
    cluster.endpoints.map((home) => Client.connect(cluster.endpoints, { ca: cluster.ca, home })),
  )
  try {
    for (let round = 0; round < 5; round++) {
      const value = `value-${round}`
      await client.cache.set(key, value)
      // Linearizable reads: no reader may miss a write acknowledged before the read began.
      const values = await Promise.all(readers.map((reader) => reader.cache.get(key)))
      assert.deepEqual(values.map(String), readers.map(() => value))
      // Local reads follow once the node has applied the write.
      for (const reader of readers) {
        await waitUntil(async () => String(await reader.cache.get(key, { local: true })) === value, 10_000, 'a local read')
      }
    }
  } finally {
    await Promise.all(readers.map((reader) => reader.close()))
  }
})

test('getMany answers in order, null for missing keys', async () => {
  const keys = [unique('a'), unique('b'), unique('c')]
  await client.cache.set(keys[0], 'A')
  await client.cache.set(keys[2], 'C')
  const values = await client.cache.getMany(keys)
  assert.deepEqual(values, [Buffer.from('A'), null, Buffer.from('C')])
  assert.deepEqual(await client.cache.getMany([]), [])
})

test('a value with a TTL expires', async () => {
  const key = unique('session')
  await client.cache.set(key, 'short-lived', { ttlSeconds: 1 })
  assert.deepEqual(await client.cache.get(key), Buffer.from('short-lived'))
  await waitUntil(async () => (await client.cache.get(key)) === null, 30_000, 'the value to expire')
})

test('invalid keys, values and TTLs are refused with INVALID_ARGUMENT', async () => {
  const key = unique('bad')
  const error = await client.cache.get('').catch((e) => e)
  assert.ok(error instanceof InvalidArgumentError, String(error))
  assert.equal(error.code, 'INVALID_ARGUMENT')
  await assert.rejects(client.cache.set('', 'x'), { code: 'INVALID_ARGUMENT' })
  await assert.rejects(client.cache.set(key, 'x', { ttlSeconds: -1 }), { code: 'INVALID_ARGUMENT', message: /ttlSeconds/ })
  await assert.rejects(client.cache.set(key, 'x', { ttlSeconds: 366 * 86_400 }), { code: 'INVALID_ARGUMENT' })
  await assert.rejects(client.cache.set(key, Buffer.alloc(64 << 20)), { code: 'INVALID_ARGUMENT' })
  assert.equal(await client.cache.get(key), null)
})
