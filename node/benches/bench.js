#!/usr/bin/env node
// Throughput of the Node SDK against a running cluster, to compare with `distsync bench` and
// python/benches/bench.py:
//
//     node node/benches/bench.js --concurrency 1 --duration 5
//     node node/benches/bench.js --concurrency 16 --duration 5
//
// Endpoints and CA come from DISTSYNC_ENDPOINTS / DISTSYNC_CA (default: the `distsync dev`
// cluster). Prints one JSON line per operation: operations per second and latency percentiles,
// measured in closed loops by `--concurrency` async tasks sharing one client (one event loop).
'use strict'

const crypto = require('node:crypto')
const { parseArgs } = require('node:util')

const { Client } = require('..')

async function measure(name, concurrency, durationMs, operation) {
  const latencies = []
  const stop = performance.now() + durationMs
  const loop = async (index) => {
    while (performance.now() < stop) {
      const started = performance.now()
      await operation(index)
      latencies.push(performance.now() - started)
    }
  }
  const began = performance.now()
  await Promise.all(Array.from({ length: concurrency }, (_, index) => loop(index)))
  const elapsed = (performance.now() - began) / 1000
  latencies.sort((a, b) => a - b)
  const pick = (q) => Number(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))].toFixed(3))
  return {
    op: name,
    concurrency,
    ops: latencies.length,
    ops_per_s: Math.round(latencies.length / elapsed),
    p50_ms: pick(0.5),
    p99_ms: pick(0.99),
  }
}

async function main() {
  const { values } = parseArgs({
    options: { concurrency: { type: 'string', default: '1' }, duration: { type: 'string', default: '5' } },
  })
  const concurrency = Number(values.concurrency)
  const durationMs = Number(values.duration) * 1000
  const endpoints = process.env.DISTSYNC_ENDPOINTS || '127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103'
  const client = await Client.connect(endpoints, { ca: process.env.DISTSYNC_CA || '.distsync-dev/tls/ca.pem' })
  const run = crypto.randomBytes(4).toString('hex')
  const keys = Array.from({ length: concurrency }, (_, i) => `bench-${run}-${i}`)
  for (const key of keys) await client.cache.set(key, Buffer.alloc(100, 'x'))
  const queue = client.queue(`bench-${run}`)
  const value = Buffer.alloc(100, 'y')
  const body = Buffer.alloc(100, 'z')
  const results = [
    await measure('cache.get', concurrency, durationMs, (i) => client.cache.get(keys[i])),
    await measure('cache.get(local)', concurrency, durationMs, (i) => client.cache.get(keys[i], { local: true })),
    await measure('cache.set', concurrency, durationMs, (i) => client.cache.set(keys[i], value)),
    await measure('queue.put', concurrency, durationMs, () => queue.put(body)),
    await measure('lock acquire+release', concurrency, durationMs, async (i) => {
      const lock = await client.lock(`bench-${run}-${i}`)
      await lock.release()
    }),
  ]
  await queue.delete()
  await client.close()
  for (const result of results) console.log(JSON.stringify(result))
}

main().catch((error) => {
  console.error(error)
  process.exitCode = 1
})
