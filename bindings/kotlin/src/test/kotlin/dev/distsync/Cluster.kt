package dev.distsync

import java.io.File
import java.net.DatagramSocket
import java.net.InetAddress
import java.net.ServerSocket
import java.net.Socket
import java.nio.file.Files
import java.util.concurrent.Callable
import java.util.concurrent.Executors
import java.util.concurrent.TimeUnit

/**
 * A real cluster for the tests: three nodes of the `distsync` binary (system property
 * `distsync.bin`, set by the pom) and a redis-server, on ports the kernel picked, in a fresh
 * temporary directory. Processes run under `setpriv --pdeathsig` when available, so they die
 * with the JVM. The kernel sends that signal when the *thread* that started a process ends, and
 * JUnit runs each test and lifecycle method on a thread of its own (the timeout's separate-thread
 * mode), so every node is started from one thread that lives as long as this cluster.
 */
class Cluster(private val nodes: Int = 3) : AutoCloseable {
    val binary: String = System.getProperty("distsync.bin")
        ?: System.getenv("DISTSYNC_BIN")
        ?: error("no distsync binary: set -Ddistsync.bin or DISTSYNC_BIN (cargo build -p distsync-cli)")
    val directory: File = Files.createTempDirectory("distsync-kt-").toFile()
    val ids = (1..nodes).toList()
    val addresses: Map<Int, String>
    private val processes = mutableMapOf<Int, Process>()
    private val redisPort: Int
    private val spawner = Executors.newSingleThreadExecutor { task -> Thread(task, "distsync-cluster").apply { isDaemon = true } }
    private val redis: Process

    init {
        check(File(binary).canExecute()) { "$binary is not an executable: build it with `cargo build -p distsync-cli`" }
        val ports = freeUdpPorts(nodes)
        addresses = ids.associateWith { "127.0.0.1:${ports[it - 1]}" }
        cli("certs", "init", "--dir", File(directory, "tls").path, "--nodes", nodes.toString())
            ?: error("distsync certs init failed")
        redisPort = ServerSocket(0, 1, InetAddress.getLoopbackAddress()).use { it.localPort }
        val redisDir = File(directory, "redis").apply { mkdirs() }
        redis = spawnHere(
            listOf("redis-server", "--bind", "127.0.0.1", "--port", "$redisPort", "--save", "", "--appendonly", "no",
                "--protected-mode", "no", "--dir", redisDir.path),
            File(redisDir, "redis.log"),
        )
        waitUntil("redis-server to answer") { redisAnswers() }
        ids.forEach(::start)
        ids.forEach { id -> waitUntil("node $id to serve") { status(id) != null } }
        waitForLeader()
    }

    val endpoints: List<String> get() = ids.map { addresses.getValue(it) }
    val ca: String get() = File(directory, "tls/ca.pem").path

    fun start(id: Int) {
        val peers = addresses.entries.joinToString(",") { "${it.key}=${it.value}" }
        processes[id] = spawnHere(
            listOf(binary, "serve", "--id", "$id", "--listen", addresses.getValue(id), "--peers", peers,
                "--data-dir", File(directory, "node-$id").path, "--tls-dir", File(directory, "tls").path,
                "--redis", "redis://127.0.0.1:$redisPort"),
            File(directory, "node-$id.log"),
        )
    }

    /** SIGKILLs node [id] and waits until it is gone. */
    fun kill(id: Int) {
        val process = processes.remove(id) ?: error("node $id is not running")
        process.destroyForcibly()
        process.waitFor()
    }

    /** Node [id]'s role and leader as it sees them, or null when it does not answer. */
    fun status(id: Int): Pair<String, Int?>? {
        val out = cli("--endpoints", addresses.getValue(id), "--ca", ca, "status", "--json") ?: return null
        val role = Regex("\"role\":\\s*\"(\\w+)\"").find(out)?.groupValues?.get(1) ?: return null
        val leader = Regex("\"leader\":\\s*(\\d+)").find(out)?.groupValues?.get(1)?.toInt()
        return role to leader
    }

    /** Waits until one of [among] leads and the others agree; returns its id. */
    fun waitForLeader(among: List<Int> = processes.keys.sorted()): Int {
        var leader = -1
        waitUntil("a leader among $among") {
            val statuses = among.map { id -> id to status(id) }
            if (statuses.any { it.second == null }) return@waitUntil false
            val leaders = statuses.filter { it.second!!.first == "leader" }.map { it.first }
            if (leaders.size == 1 && statuses.all { it.second!!.second == leaders[0] }) {
                leader = leaders[0]
                true
            } else {
                false
            }
        }
        return leader
    }

    override fun close() {
        processes.keys.toList().forEach(::kill)
        redis.destroyForcibly()
        redis.waitFor()
        spawner.shutdown()
        directory.deleteRecursively()
    }

    /** Starts [command] from this cluster's own thread (see the class comment). */
    private fun spawnHere(command: List<String>, log: File): Process = spawner.submit(Callable { spawn(command, log) }).get()

    private fun redisAnswers(): Boolean = try {
        Socket("127.0.0.1", redisPort).use { socket ->
            socket.soTimeout = 1000
            socket.getOutputStream().write("PING\r\n".toByteArray())
            val reply = ByteArray(5)
            socket.getInputStream().read(reply) > 0 && String(reply).startsWith("+PONG")
        }
    } catch (e: java.io.IOException) {
        false
    }

    fun cli(vararg args: String): String? {
        val process = ProcessBuilder(binary, *args).redirectError(ProcessBuilder.Redirect.DISCARD).start()
        val out = process.inputStream.bufferedReader().readText()
        if (!process.waitFor(60, TimeUnit.SECONDS)) {
            process.destroyForcibly()
            return null
        }
        return if (process.exitValue() == 0) out else null
    }

    companion object {
        private val setpriv = listOf("/usr/bin/setpriv", "/bin/setpriv").firstOrNull { File(it).canExecute() }

        fun spawn(command: List<String>, log: File): Process {
            val full = if (setpriv != null) listOf(setpriv, "--pdeathsig", "SIGKILL", "--") + command else command
            return ProcessBuilder(full)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(log))
                .redirectErrorStream(true)
                .redirectInput(ProcessBuilder.Redirect.from(File("/dev/null")))
                .also { it.environment()["NO_COLOR"] = "1" }
                .start()
        }

        fun freeUdpPorts(count: Int): List<Int> {
            val sockets = (1..count).map { DatagramSocket(0, InetAddress.getLoopbackAddress()) }
            return sockets.map { it.localPort }.also { sockets.forEach(DatagramSocket::close) }
        }

        fun waitUntil(what: String, timeoutMs: Long = 30_000, condition: () -> Boolean) {
            val deadline = System.nanoTime() + timeoutMs * 1_000_000
            while (!condition()) {
                check(System.nanoTime() < deadline) { "timed out after $timeoutMs ms waiting for $what" }
                Thread.sleep(100)
            }
        }
    }
}
