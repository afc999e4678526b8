// The package's surface: exports, the error classes, configuration errors, environment
// fallbacks, and TypeScript declarations that match the API.
'use strict'

const assert = require('node:assert/strict')
const { execFile } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { after, before, test } = require('node:test')
const { promisify } = require('node:util')

const distsync = require('..')
const { Client, DistsyncError } = distsync
const { Cluster } = require('./helpers/cluster')

const PACKAGE = path.resolve(__dirname, '..')

let cluster
before(async () => {
  cluster = await Cluster.start(3)
})
after(async () => {
  await cluster?.stop()
})

test('the package exports the classes and every error class with its code', () => {
  for (const name of ['Client', 'Owner', 'Lock', 'Queue', 'Message', 'Consumer', 'Cache']) {
    assert.equal(typeof distsync[name], 'function', name)
  }
  const codes = {
    LockTimeoutError: 'LOCK_TIMEOUT',
    DeadlockError: 'DEADLOCK',
    AlreadyHeldError: 'ALREADY_HELD',
    NotHeldError: 'NOT_HELD',
    SessionExpiredError: 'SESSION_EXPIRED',
    UnavailableError: 'UNAVAILABLE',
    InvalidArgumentError: 'INVALID_ARGUMENT',
    NoSuchQueueError: 'NO_SUCH_QUEUE',
    StaleDeliveryError: 'STALE_DELIVERY',
    LimitReachedError: 'LIMIT_REACHED',
    PermissionDeniedError: 'PERMISSION_DENIED',
    UnauthenticatedError: 'UNAUTHENTICATED',
    TooLargeError: 'TOO_LARGE',
    ClientClosedError: 'CLIENT_CLOSED',
  }
  for (const [name, code] of Object.entries(codes)) {
    const ErrorClass = distsync[name]
    assert.equal(ErrorClass.code, code)
    const error = new ErrorClass('message')
    assert.ok(error instanceof DistsyncError && error instanceof Error)
    assert.equal(error.name, name)
    assert.equal(error.code, code)
  }
  assert.equal(DistsyncError.code, 'INTERNAL')
  assert.throws(() => new Client(), /constructor|Class contains no `constructor`/i)
})

test('ESM import gives the same names', async () => {
  const script = `import { Client, DeadlockError } from ${JSON.stringify(PACKAGE + '/distsync.js')}; console.log(typeof Client, typeof DeadlockError)`
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script])
  assert.equal(stdout.trim(), 'function function')
})

test('unusable configuration rejects with INVALID_ARGUMENT', async () => {
  const { endpoints, ca } = cluster
  const env = { DISTSYNC_ENDPOINTS: process.env.DISTSYNC_ENDPOINTS, DISTSYNC_CA: process.env.DISTSYNC_CA }
  delete process.env.DISTSYNC_ENDPOINTS
  delete process.env.DISTSYNC_CA
  try {
    await assert.rejects(Client.connect(endpoints), { code: 'INVALID_ARGUMENT', message: /no CA certificate/ })
    await assert.rejects(Client.connect(), { code: 'INVALID_ARGUMENT', message: /no endpoints/ })
    await assert.rejects(Client.connect(endpoints, { ca: '/nonexistent/ca.pem' }), { code: 'INVALID_ARGUMENT' })
    await assert.rejects(Client.connect(['not an address'], { ca }), { code: 'INVALID_ARGUMENT' })
    await assert.rejects(Client.connect([], { ca }), { code: 'INVALID_ARGUMENT' })
    await assert.rejects(Client.connect(endpoints, { ca, sessionTtlMs: 10 }), { code: 'INVALID_ARGUMENT' })
    await assert.rejects(Client.connect(endpoints, { ca, requestTimeoutMs: -1 }), { code: 'INVALID_ARGUMENT' })
    await assert.rejects(Client.connect(endpoints, { ca, home: '127.0.0.1:1' }), { code: 'INVALID_ARGUMENT', message: /home/ })
  } finally {
    for (const [name, value] of Object.entries(env)) if (value !== undefined) process.env[name] = value
  }
})

test('endpoints and CA fall back to DISTSYNC_ENDPOINTS and DISTSYNC_CA', async () => {
  const saved = { ...process.env }
  Object.assign(process.env, cluster.env())
  try {
    const client = await Client.connect()
    await client.cache.set('fallback', 'works')
    assert.deepEqual(await client.cache.get('fallback'), Buffer.from('works'))
    await client.close()
  } finally {
    for (const name of ['DISTSYNC_ENDPOINTS', 'DISTSYNC_CA']) {
      if (saved[name] === undefined) delete process.env[name]
      else process.env[name] = saved[name]
    }
  }
})

test('a CA that did not sign the nodes rejects with UNAUTHENTICATED', async () => {
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'distsync-other-ca-'))
  try {
    await cluster.cli('certs', 'init', '--dir', directory, '--nodes', '1')
    const ca = path.join(directory, 'ca.pem')
    const error = await Client.connect(cluster.endpoints, { ca, requestTimeoutMs: 1000 }).catch((e) => e)
    assert.ok(error instanceof distsync.UnauthenticatedError, String(error))
    assert.equal(error.code, 'UNAUTHENTICATED')
    assert.match(error.message, /not trusted/)
  } finally {
    fs.rmSync(directory, { recursive: true, force: true })
  }
})

test('the TypeScript declarations accept the documented API and refuse misuse', async () => {
  const tsc = require.resolve('typescript/bin/tsc')
  const project = path.join(__dirname, 'types', 'tsconfig.json')
  const run = await promisify(execFile)(process.execPath, [tsc, '-p', project]).catch((error) => error)
  assert.equal(run.code ?? 0, 0, `${run.stdout}${run.stderr}`)
})
