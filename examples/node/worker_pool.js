#!/usr/bin/env node
// A worker pool sharing a job queue and a lock.
//
// A producer enqueues jobs (each with a dedup id, so a retried put cannot enqueue it twice);
// worker processes take them from the queue, and each job appends one line to a ledger file
// under the distributed lock "ledger", passing the lock's fencing token along. The ledger
// refuses a token lower than the last one it accepted, which is what stops a worker that lost
// the lock (a long pause, a partition) from writing late. Every job is acked after it is
// written, so a worker that crashes mid-job leaves it to be delivered again.
//
// Run it against the README's local cluster (`distsync dev`), after `npm install ./node`:
//
//     node examples/node/worker_pool.js --jobs 50 --workers 4
//
// It prints what each worker did and checks that every job reached the ledger exactly once.
'use strict'

const { fork } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { parseArgs } = require('node:util')

const { Client } = loadDistsync()

const DEV_ENDPOINTS = '127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103'
const DEV_CA = '.distsync-dev/tls/ca.pem'

/** The package as installed by `npm install ./node`, or straight from this repository. */
function loadDistsync() {
  try {
    return require('distsync')
  } catch (error) {
    if (error.code !== 'MODULE_NOT_FOUND') throw error
    return require('../../node')
  }
}

function connect(args) {
  return Client.connect(args.endpoints.split(','), { ca: args.ca })
}

/** The protected resource: refuses writes fenced with an older token. */
function appendToLedger(file, token, line) {
  const lines = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : []
  const lastToken = lines.length > 0 ? Number(lines[lines.length - 1].split(' ')[0]) : 0
  if (token <= lastToken) {
    throw new Error(`stale fencing token ${token} (the ledger has seen ${lastToken})`)
  }
  fs.appendFileSync(file, `${token} ${line}\n`)
}

/** Takes jobs until the queue stays empty for a second; returns how many it did. */
async function worker(args, number) {
  const client = await connect(args) // one client per process
  let done = 0
  try {
    const jobs = client.queue(args.queue)
    let job
    while ((job = await jobs.get({ waitMs: 1000 })) !== null) {
      await client.withLock('ledger', { timeoutMs: 30_000 }, async (lock) => {
        appendToLedger(args.ledger, lock.token, `worker-${number} ${job.body.toString()}`)
      })
      await job.ack()
      done++
    }
  } finally {
    await client.close()
  }
  return done
}

function runWorker(args, number) {
  const argv = ['--endpoints', args.endpoints, '--ca', args.ca, '--queue', args.queue, '--ledger', args.ledger]
  return new Promise((resolve, reject) => {
    const child = fork(__filename, [...argv, '--worker', String(number)])
    let done = null
    child.on('message', (message) => {
      done = message.done
    })
    child.on('error', reject)
    child.on('exit', (code) => (code === 0 && done !== null ? resolve(done) : reject(new Error(`worker-${number} exited with ${code}`))))
  })
}

async function main() {
  const { values: args } = parseArgs({
    options: {
      endpoints: { type: 'string', default: process.env.DISTSYNC_ENDPOINTS || DEV_ENDPOINTS },
      ca: { type: 'string', default: process.env.DISTSYNC_CA || DEV_CA },
      jobs: { type: 'string', default: '50' },
      workers: { type: 'string', default: '4' },
      queue: { type: 'string', default: `jobs-${crypto.randomBytes(4).toString('hex')}` },
      ledger: { type: 'string', default: path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ledger-')), 'ledger') },
      worker: { type: 'string' },
    },
  })
  if (args.worker !== undefined) {
    process.send({ done: await worker(args, Number(args.worker)) })
    return 0
  }

  const jobCount = Number(args.jobs)
  const client = await connect(args)
  try {
    const jobs = client.queue(args.queue)
    for (let n = 0; n < jobCount; n++) {
      await jobs.put(Buffer.from(`job-${n}`), { dedupId: `${args.queue}/job-${n}` })
    }

    const counts = await Promise.all(Array.from({ length: Number(args.workers) }, (_, n) => runWorker(args, n)))
    counts.forEach((count, n) => console.log(`worker-${n} did ${count} jobs`))

    const written = fs.readFileSync(args.ledger, 'utf8').split('\n').filter(Boolean).map((line) => line.split(' ')[2])
    const expected = Array.from({ length: jobCount }, (_, n) => `job-${n}`)
    if (JSON.stringify(written.sort()) !== JSON.stringify(expected.sort())) {
      console.error(`ledger mismatch: ${written.length} lines for ${jobCount} jobs`)
      return 1
    }
    console.log(`all ${jobCount} jobs in the ledger exactly once (${args.ledger})`)
    await jobs.delete()
    return 0
  } finally {
    await client.close()
  }
}

main().then(
  (code) => {
    process.exitCode = code
  },
  (error) => {
    console.error(error)
    process.exitCode = 1
  },
)
