// Real clusters of the `distsync` binary (and a real redis-server) on loopback, for the tests.
//
// The binary comes from $DISTSYNC_BIN, else target/debug/distsync or target/release/distsync of
// this repository, else `distsync` on PATH (build it with `cargo build -p distsync-cli`).
// Each cluster lives in a fresh temporary directory with its own certificates, data and logs,
// on ports the kernel picked, so test files running in parallel do not collide. Node and
// redis processes get SIGKILL when the test process dies (setpriv --pdeathsig), and are
// killed on exit otherwise.
'use strict'

const { execFile, spawn } = require('node:child_process')
const crypto = require('node:crypto')
const dgram = require('node:dgram')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { promisify } = require('node:util')

const REPO = path.resolve(__dirname, '..', '..', '..')
const START_TIMEOUT_MS = 30_000
const POLL_MS = 100

const live = new Set()
process.on('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGKILL')
    } catch {}
  }
})

function binary() {
  const candidates = [
    process.env.DISTSYNC_BIN,
    path.join(REPO, 'target', 'debug', 'distsync'),
    path.join(REPO, 'target', 'release', 'distsync'),
  ]
  for (const candidate of candidates) {
    if (candidate && isExecutable(candidate)) return candidate
  }
  const onPath = (process.env.PATH || '').split(path.delimiter).map((dir) => path.join(dir, 'distsync'))
  const found = onPath.find(isExecutable)
  if (found) return found
  throw new Error('no distsync binary: build it with `cargo build -p distsync-cli` or set DISTSYNC_BIN')
}

function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK)
    return fs.statSync(file).isFile()
  } catch {
    return false
  }
}

const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find(isExecutable)

/** Spawns `command` so that it dies with this process. */
function spawnTied(command, args, options) {
  const child = setpriv
    ? spawn(setpriv, ['--pdeathsig', 'SIGKILL', '--', command, ...args], options)
    : spawn(command, args, options)
  live.add(child)
  child.once('exit', () => live.delete(child))
  return child
}

/** Ports the kernel picks, of `kind` 'udp' or 'tcp'. */
async function freePorts(kind, count) {
  const sockets = []
  try {
    for (let i = 0; i < count; i++) {
      if (kind === 'udp') {
        const socket = dgram.createSocket('udp4')
        await new Promise((resolve, reject) => socket.bind(0, '127.0.0.1', resolve).once('error', reject))
        sockets.push({ port: socket.address().port, close: () => socket.close() })
      } else {
        const server = net.createServer()
        await new Promise((resolve, reject) => server.listen(0, '127.0.0.1', resolve).once('error', reject))
        sockets.push({ port: server.address().port, close: () => server.close() })
      }
    }
    return sockets.map((socket) => socket.port)
  } finally {
    for (const socket of sockets) socket.close()
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls `condition` (sync or async) until it returns something truthy, which is returned. */
async function waitUntil(condition, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await condition()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(POLL_MS)
  }
}

/** Resolves with the exit code (or signal name) of `child`. */
function exited(child) {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve(child.exitCode ?? child.signalCode)
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)))
}

/** A name unique to this run: unique('jobs') -> 'jobs-<random>-<n>'. */
let counter = 0
function unique(base) {
  return `${base}-${crypto.randomBytes(4).toString('hex')}-${counter++}`
}

class Redis {
  static async start(directory) {
    const redis = new Redis()
    redis.port = (await freePorts('tcp', 1))[0]
    fs.mkdirSync(directory, { recursive: true })
    const log = fs.openSync(path.join(directory, 'redis.log'), 'a')
    redis.process = spawnTied(
      'redis-server',
      ['--bind', '127.0.0.1', '--port', String(redis.port), '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--dir', directory],
      { stdio: ['ignore', log, log] },
    )
    fs.closeSync(log)
    redis.process.once('error', (error) => {
      redis.failure = error
    })
    await waitUntil(() => redis.answers(), START_TIMEOUT_MS, 'redis-server to answer PING')
    return redis
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`
  }

  async answers() {
    if (this.failure) throw new Error(`redis-server could not start (apt-get install redis-server): ${this.failure.message}`)
    if (this.process.exitCode !== null) throw new Error(`redis-server exited with ${this.process.exitCode}`)
    return new Promise((resolve) => {
      const socket = net.connect(this.port, '127.0.0.1')
      socket.setTimeout(1000)
      socket.once('connect', () => socket.write('PING\r\n'))
      socket.once('data', (data) => {
        socket.destroy()
        resolve(data.toString().startsWith('+PONG'))
      })
      socket.once('error', () => resolve(false))
      socket.once('timeout', () => {
        socket.destroy()
        resolve(false)
      })
    })
  }

  async stop() {
    this.process.kill('SIGKILL')
    await exited(this.process)
  }
}

/** `nodes` nodes of the `distsync` binary on loopback, with a redis-server for the cache. */
class Cluster {
  /** `nodeArgs`: further `distsync serve` flags every node gets (`['--max-queues', '1']`). */
  static async start(nodes = 3, { nodeArgs = [] } = {}) {
    const cluster = new Cluster()
    cluster.binary = binary()
    cluster.nodeArgs = nodeArgs
    cluster.directory = fs.mkdtempSync(path.join(os.tmpdir(), 'distsync-node-'))
    cluster.ids = Array.from({ length: nodes }, (_, i) => i + 1)
    const ports = await freePorts('udp', nodes)
    cluster.addresses = new Map(cluster.ids.map((id, i) => [id, `127.0.0.1:${ports[i]}`]))
    cluster.processes = new Map()
    try {
      await cluster.cli('certs', 'init', '--dir', cluster.tls, '--nodes', String(nodes))
      cluster.redis = await Redis.start(path.join(cluster.directory, 'redis'))
      for (const id of cluster.ids) cluster.start(id)
      for (const id of cluster.ids) {
        await waitUntil(() => cluster.serving(id), START_TIMEOUT_MS, `node ${id} to serve`)
      }
      await cluster.waitForLeader()
    } catch (error) {
      await cluster.stop({ keep: true })
      throw error
    }
    return cluster
  }

  get endpoints() {
    return this.ids.map((id) => this.addresses.get(id))
  }

  /** The cluster's certificates: the CA with its key, the nodes', the admin's client.pem. */
  get tls() {
    return path.join(this.directory, 'tls')
  }

  get ca() {
    return path.join(this.tls, 'ca.pem')
  }

  /**
   * Issues a client certificate for identity `name` with the command line and grants it each
   * `[resource, permission]` as the admin (client.pem beside ca.pem); resolves to the `cert`
   * and `key` options of a client presenting it.
   */
  async identity(name, ...grants) {
    await this.cli('certs', 'client', '--dir', this.tls, '--name', name)
    for (const [resource, permission] of grants) {
      await this.cli('--endpoints', this.endpoints.join(','), '--ca', this.ca, 'acl', 'grant', name, resource, permission)
    }
    return { cert: path.join(this.tls, `${name}.pem`), key: path.join(this.tls, `${name}-key.pem`) }
  }

  /** The environment for helper processes: the variables the client falls back to. */
  env(extra = {}) {
    return { ...process.env, DISTSYNC_ENDPOINTS: this.endpoints.join(','), DISTSYNC_CA: this.ca, ...extra }
  }

  log(id) {
    return path.join(this.directory, `node-${id}.log`)
  }

  start(id) {
    const peers = [...this.addresses].map(([peer, address]) => `${peer}=${address}`).join(',')
    const log = fs.openSync(this.log(id), 'a')
    const args = ['serve', '--id', String(id), '--listen', this.addresses.get(id), '--peers', peers]
    args.push('--data-dir', path.join(this.directory, `node-${id}`), '--tls-dir', path.join(this.directory, 'tls'))
    args.push('--redis', this.redis.url, ...this.nodeArgs)
    const child = spawnTied(this.binary, args, {
      stdio: ['ignore', log, log],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', NO_COLOR: '1' },
    })
    fs.closeSync(log)
    this.processes.set(id, child)
  }

  /** SIGKILLs node `id` and waits until it is gone. */
  async kill(id) {
    const child = this.processes.get(id)
    this.processes.delete(id)
    child.kill('SIGKILL')
    await exited(child)
  }

  /** Node `id`'s own status, or null when it does not answer. */
  async status(id) {
    let out
    try {
      out = await this.cli('--endpoints', this.addresses.get(id), '--ca', this.ca, 'status', '--json')
    } catch {
      return null
    }
    const statuses = JSON.parse(out)
    return statuses.length > 0 && 'role' in statuses[0] ? statuses[0] : null
  }

  /** Waits until one of `among` (default: every running node) leads and the others agree. */
  async waitForLeader(among = [...this.processes.keys()].sort(), timeoutMs = START_TIMEOUT_MS) {
    return waitUntil(
      async () => {
        const statuses = await Promise.all(among.map((id) => this.status(id)))
        if (statuses.some((status) => status === null)) return null
        const leaders = new Set(statuses.filter((s) => s.role === 'leader').map((s) => s.id))
        if (leaders.size === 1 && statuses.every((s) => leaders.has(s.leader))) return [...leaders][0]
        return null
      },
      timeoutMs,
      `a leader among nodes ${among}`,
    )
  }

  async serving(id) {
    const child = this.processes.get(id)
    if (child.exitCode !== null) throw new Error(`node ${id} exited with ${child.exitCode}:\n${this.logTails()}`)
    return (await this.status(id)) !== null
  }

  async stop({ keep = false } = {}) {
    for (const id of [...this.processes.keys()]) await this.kill(id)
    if (this.redis) await this.redis.stop()
    if (keep || process.env.DISTSYNC_TEST_KEEP) {
      console.error(`cluster directory kept: ${this.directory}`)
    } else {
      fs.rmSync(this.directory, { recursive: true, force: true })
    }
  }

  logTails(lines = 40) {
    const parts = []
    for (const id of this.ids) {
      const text = fs.existsSync(this.log(id)) ? fs.readFileSync(this.log(id), 'utf8').split('\n') : []
      parts.push(`---- node ${id} (${this.addresses.get(id)}), last ${lines} lines ----`, ...text.slice(-lines))
    }
    return parts.join('\n')
  }

  async cli(...args) {
    const { stdout } = await promisify(execFile)(this.binary, args, { timeout: 60_000, maxBuffer: 16 << 20 })
    return stdout
  }
}

/** SIGKILLs the helper processes still running (a failed test leaves them waiting). */
async function stopHelpers() {
  const running = [...helpers].filter((child) => child.exitCode === null && child.signalCode === null)
  for (const child of running) child.kill('SIGKILL')
  await Promise.all(running.map(exited))
}

const helpers = new Set()

/** A Node.js helper process running `script` (a file under test/helpers) with `args`. */
function helper(script, args, env) {
  const child = spawnTied(process.execPath, [path.join(__dirname, script), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  })
  helpers.add(child)
  child.once('exit', () => helpers.delete(child))
  child.lines = lines(child.stdout)
  child.stderrText = ''
  child.stderr.on('data', (data) => {
    child.stderrText += data
  })
  return child
}

/** An async iterator over the lines of a readable stream. */
function lines(stream) {
  const readline = require('node:readline')
  return readline.createInterface({ input: stream })[Symbol.asyncIterator]()
}

/** The next line of a helper's output. */
async function nextLine(child) {
  const { value, done } = await child.lines.next()
  if (done) throw new Error(`helper ended without the expected output; stderr:\n${child.stderrText}`)
  return value
}

module.exports = { Cluster, REPO, exited, helper, nextLine, sleep, stopHelpers, unique, waitUntil }
