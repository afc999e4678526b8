// Queues: redelivery and stale deliveries, typed errors, consumers, and no loss across a
// consumer process SIGKILLed mid-stream.
'use strict'

const assert = require('node:assert/strict')
const { after, before, test } = require('node:test')

const { Client, NoSuchQueueError, StaleDeliveryError, TooLargeError } = require('..')
const { Cluster, helper, nextLine, stopHelpers, unique, waitUntil } = require('./helpers/cluster')

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

test('a nacked message is delivered again, and its old delivery is stale', async () => {
  const queue = client.queue(unique('retry'))
  await queue.put('work')
  const first = await queue.get({ waitMs: 1000 })
  assert.equal(first.attempt, 1)
  await first.nack()
  const second = await queue.get({ waitMs: 1000 })
  assert.equal(second.id, first.id)
  assert.equal(second.attempt, 2)
  assert.notEqual(second.tag, first.tag)
  const error = await first.ack().catch((e) => e)
  assert.ok(error instanceof StaleDeliveryError)
  assert.equal(error.code, 'STALE_DELIVERY')
  assert.equal(error.queue, queue.name)
  assert.equal(error.tag, first.tag)
  await second.ack()
  const stats = await queue.stats()
  assert.equal(stats.depth, 0)
  assert.equal(stats.inFlight, 0)
  assert.equal(stats.ackedTotal, 1)
})

test('a message past maxAttempts moves to the dead-letter queue', async () => {
  const queue = client.queue(unique('poison'))
  assert.equal(await queue.create({ maxAttempts: 2 }), true)
  assert.equal(await queue.create({ maxAttempts: 2 }), false)
  await queue.put('poison')
  for (let attempt = 1; attempt <= 2; attempt++) {
    const message = await queue.get({ waitMs: 1000 })
    assert.equal(message.attempt, attempt)
    await message.nack()
  }
  assert.equal(await queue.get(), null)
  const dead = await client.queue(`${queue.name}.dlq`).get({ waitMs: 1000 })
  assert.deepEqual(dead.body, Buffer.from('poison'))
  await dead.ack()
  assert.equal((await queue.stats()).deadLettered, 1)
})

test('batches keep FIFO order; extend moves the visibility deadline', async () => {
  const queue = client.queue(unique('batch'))
  const ids = await queue.putBatch(['a', Buffer.from('b'), new Uint8Array([99])])
  assert.equal(ids.length, 3)
  assert.ok(ids[0] < ids[1] && ids[1] < ids[2])
  const messages = await queue.getBatch(10, { waitMs: 1000 })
  assert.deepEqual(messages.map((m) => m.body.toString()), ['a', 'b', 'c'])
  const before = messages[0].visibleAtMs
  await messages[0].extend(120_000)
  assert.ok(messages[0].visibleAtMs > before)
  for (const message of messages) await message.ack()
})

test('typed errors: unknown queue, oversized body, bad names and options', async () => {
  const missing = client.queue(unique('missing'))
  const error = await missing.stats().catch((e) => e)
  assert.ok(error instanceof NoSuchQueueError)
  assert.equal(error.code, 'NO_SUCH_QUEUE')
  assert.equal(error.queue, missing.name)
  await assert.rejects(missing.delete(), { code: 'NO_SUCH_QUEUE' })

  const queue = client.queue(unique('limits'))
  await assert.rejects(queue.put(Buffer.alloc(300 * 1024)), { code: 'INVALID_ARGUMENT' })
  await assert.rejects(client.queue('').put('x'), { code: 'INVALID_ARGUMENT' })
  await assert.rejects(queue.get({ waitMs: -5 }), { code: 'INVALID_ARGUMENT', message: /waitMs/ })
  await assert.rejects(queue.getBatch(0), { code: 'INVALID_ARGUMENT' })
  await assert.rejects(queue.getBatch(1.5), { code: 'INVALID_ARGUMENT' })
  assert.throws(() => queue.consume({ prefetch: 0 }), { code: 'INVALID_ARGUMENT', name: 'InvalidArgumentError' })
  assert.throws(() => client.queue('q', { visibilityMs: Number.NaN }), { code: 'INVALID_ARGUMENT' })

  // One write is at most 4 MiB: a batch of five 1 MiB messages is too large, nothing enqueued.
  const large = client.queue(unique('large'))
  await large.create({ maxMessageBytes: 1024 * 1024 })
  const tooLarge = await large.putBatch(Array(5).fill(Buffer.alloc(1024 * 1024))).catch((e) => e)
  assert.ok(tooLarge instanceof TooLargeError, String(tooLarge))
  assert.equal(tooLarge.code, 'TOO_LARGE')
  assert.equal(tooLarge.what, 'write')
  assert.equal(tooLarge.limit, 4 * 1024 * 1024)
  assert.ok(tooLarge.bytes > 5 * 1024 * 1024)
  assert.equal((await large.stats()).depth, 0)
})

test('leaving a for-await loop returns the prefetched messages at once', async () => {
  const queue = client.queue(unique('prefetch'))
  await queue.create({ visibilityMs: 600_000 })
  await queue.putBatch(Array.from({ length: 10 }, (_, n) => `m${n}`))
  for await (const message of queue.consume({ prefetch: 10 })) {
    assert.equal(message.body.toString(), 'm0')
    await message.ack()
    break
  }
  // Without the return they would stay in flight for the 10-minute visibility timeout.
  await waitUntil(async () => (await queue.stats()).inFlight === 0, 20_000, 'the prefetched messages to return')
  const rest = await queue.getBatch(20, { waitMs: 1000 })
  assert.deepEqual(rest.map((m) => m.body.toString()), Array.from({ length: 9 }, (_, n) => `m${n + 1}`))
  for (const message of rest) await message.ack()
})

test('closing the client ends a waiting for-await loop', async () => {
  const own = await Client.connect(cluster.endpoints, { ca: cluster.ca })
  const queue = own.queue(unique('idle'))
  const seen = []
  const loop = (async () => {
    for await (const message of queue.consume()) seen.push(message)
    return 'ended'
  })()
  await waitUntil(async () => {
    const stats = await client.queue(queue.name).stats().catch(() => null)
    return stats && stats.waitingConsumers === 1
  }, 10_000, 'the consumer to wait')
  await own.close()
  assert.equal(await loop, 'ended')
  assert.deepEqual(seen, [])
})

test('nothing is lost or processed twice when a consumer process is SIGKILLed mid-stream', async () => {
  const name = unique('crash')
  const total = 100
  const queue = client.queue(name)
  await queue.putBatch(Array.from({ length: total }, (_, n) => `job-${n}`))

  const consumer = helper('consumer.js', [name, '25', '10'], cluster.env())
  const ackedByConsumer = new Set()
  for (;;) {
    const line = await nextLine(consumer)
    if (line === 'ready') break
    ackedByConsumer.add(line.replace(/^acked /, ''))
  }
  assert.equal(ackedByConsumer.size, 25)
  // The 5 it prefetched and did not take are in flight.
  assert.ok((await queue.stats()).inFlight > 0)
  consumer.kill('SIGKILL')

  // The rest, including what the dead consumer had prefetched once its session expires.
  const drained = new Set()
  const drain = queue.consume({ prefetch: 16 })
  while (drained.size + ackedByConsumer.size < total) {
    const { value: message } = await drain.next()
    const body = message.body.toString()
    assert.ok(!ackedByConsumer.has(body), `${body} was acked by the dead consumer and delivered again`)
    assert.ok(!drained.has(body), `${body} delivered twice`)
    drained.add(body)
    await message.ack()
  }
  await drain.return()
  const all = new Set([...ackedByConsumer, ...drained])
  assert.equal(all.size, total)
  const stats = await queue.stats()
  assert.equal(stats.putTotal, total)
  assert.equal(stats.ackedTotal, total)
  assert.equal(stats.depth, 0)
  assert.equal(stats.inFlight, 0)
})
