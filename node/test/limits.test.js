// A limit the cluster enforces rejects with LimitReachedError naming the limit (`what`, as
// docs/limits.md lists it) and its value (`limit`), with `queue` when a queue is full; nothing
// is changed.
'use strict'

const assert = require('node:assert/strict')
const { after, before, test } = require('node:test')

const { Client, LimitReachedError } = require('..')
const { Cluster } = require('./helpers/cluster')

let cluster
let client
before(async () => {
  cluster = await Cluster.start(3, { nodeArgs: ['--max-queues', '1', '--max-cache-keys', '1'] })
  client = await Client.connect(cluster.endpoints, { ca: cluster.ca })
})
after(async () => {
  await client?.close()
  await cluster?.stop()
})

/** Asserts that `promise` rejects with LIMIT_REACHED and these fields. */
async function limited(promise, fields) {
  const error = await promise.then(() => assert.fail('expected LIMIT_REACHED'), (e) => e)
  assert.ok(error instanceof LimitReachedError, String(error))
  assert.equal(error.code, 'LIMIT_REACHED')
  assert.deepEqual({ what: error.what, limit: error.limit, queue: error.queue }, fields)
  assert.match(error.message, new RegExp(fields.what))
}

test('a full queue table names the limit and the queue', async () => {
  await client.queue('first').create()
  await limited(client.queue('second').put('body'), { what: 'QUEUES_MAX', limit: 1, queue: 'second' })
  const names = (await client.queues()).map((stats) => stats.name)
  assert.deepEqual(names, ['first'], 'the refused queue was not created')
})

test('a full cache directory names the limit without a queue', async () => {
  await client.cache.set('one', 'v')
  await limited(client.cache.set('two', 'v'), { what: 'CACHE_KEYS_MAX', limit: 1, queue: undefined })
  assert.equal(await client.cache.get('two'), null)
})
