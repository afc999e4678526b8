// Identities and ACLs through the Node client: `{ cert, key }` choose the identity, what it was
// not granted rejects with PERMISSION_DENIED naming the identity, the resource and the
// permission needed, and a certificate the cluster did not issue rejects with UNAUTHENTICATED at
// once rather than timing out. The binding has no kv API; the cache (`cache:` grants) is its
// key-value store.
'use strict'

const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { after, before, test } = require('node:test')

const { Client, PermissionDeniedError, UnauthenticatedError } = require('..')
const { Cluster, unique } = require('./helpers/cluster')

let cluster
let admin
before(async () => {
  cluster = await Cluster.start(3)
  admin = await Client.connect(cluster.endpoints, { ca: cluster.ca })
})
after(async () => {
  await admin?.close()
  await cluster?.stop()
})

/** A client of a fresh identity (grants outlive a test, so each test names its own). */
async function clientOf(name, ...grants) {
  return Client.connect(cluster.endpoints, { ca: cluster.ca, ...(await cluster.identity(name, ...grants)) })
}

/** Asserts that `promise` rejects with PERMISSION_DENIED and these fields. */
async function denied(promise, fields) {
  const error = await promise.then(() => assert.fail('expected PERMISSION_DENIED'), (e) => e)
  assert.ok(error instanceof PermissionDeniedError, String(error))
  assert.equal(error.code, 'PERMISSION_DENIED')
  assert.deepEqual({ identity: error.identity, resource: error.resource, needed: error.needed }, fields)
  return error
}

test('an identity writes only where it was granted', async () => {
  const alice = unique('alice')
  const client = await clientOf(alice, ['lock:team-a/', 'write'])
  try {
    await client.withLock(unique('team-a/x'), async (lock) => assert.ok(lock.token > 0))
    const otherTeam = unique('team-b/x')
    const error = await denied(client.lock(otherTeam), { identity: alice, resource: `lock:${otherTeam}`, needed: 'write' })
    assert.match(error.message, new RegExp(`distsync acl grant ${alice}`))
    const key = unique('team-a/x')
    await denied(client.cache.set(key, 'value'), { identity: alice, resource: `cache:${key}`, needed: 'write' })
  } finally {
    await client.close()
  }
})

test('a read grant reads without writing, and no grant reads nothing', async () => {
  const key = unique('cfg/mode')
  await admin.cache.set(key, 'active')
  const reader = unique('reader')
  const reading = await clientOf(reader, ['cache:cfg/', 'read'])
  try {
    assert.deepEqual(await reading.cache.get(key), Buffer.from('active'))
    await denied(reading.cache.set(key, 'changed'), { identity: reader, resource: `cache:${key}`, needed: 'write' })
  } finally {
    await reading.close()
  }
  const nobody = unique('nobody')
  const stranger = await clientOf(nobody)
  try {
    await denied(stranger.cache.get(key), { identity: nobody, resource: `cache:${key}`, needed: 'read' })
    await assert.rejects(stranger.lock(unique('team-a/x')), { code: 'PERMISSION_DENIED' })
  } finally {
    await stranger.close()
  }
  assert.deepEqual(await admin.cache.get(key), Buffer.from('active'))
})

test('a certificate of another CA rejects with UNAUTHENTICATED at once', async () => {
  const other = fs.mkdtempSync(path.join(os.tmpdir(), 'distsync-node-other-ca-'))
  try {
    await cluster.cli('certs', 'init', '--dir', other, '--nodes', '1')
    const options = { ca: cluster.ca, cert: path.join(other, 'client.pem'), key: path.join(other, 'client-key.pem') }
    const error = await Client.connect(cluster.endpoints, { ...options, requestTimeoutMs: 30_000 }).catch((e) => e)
    assert.ok(error instanceof UnauthenticatedError, String(error))
    assert.equal(error.code, 'UNAUTHENTICATED')
    assert.match(error.message, /distsync certs client/)
    // A timeout would reject with UNAVAILABLE after the 30 s request timeout: the code is the check.
    await assert.rejects(Client.connect(cluster.endpoints, { ca: cluster.ca, cert: options.cert }), {
      code: 'INVALID_ARGUMENT',
      message: /both/,
    })
  } finally {
    fs.rmSync(other, { recursive: true, force: true })
  }
})
