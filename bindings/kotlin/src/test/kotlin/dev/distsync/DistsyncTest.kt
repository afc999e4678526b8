package dev.distsync

import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows
import java.util.UUID

/** The Kotlin SDK against a real cluster: locks, queues and the cache. */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class DistsyncTest {
    private lateinit var cluster: Cluster
    private lateinit var client: Client

    @BeforeAll
    fun start() {
        cluster = Cluster()
        client = Client.connectBlocking(cluster.endpoints, cluster.ca)
    }

    @AfterAll
    fun stop() {
        client.closeSessionBlocking()
        client.close()
        cluster.close()
    }

    private fun unique(base: String) = "$base-${UUID.randomUUID().toString().take(8)}"

    @Test
    fun `lock and unlock with a fencing token`(): Unit = runBlocking {
        val name = unique("reports")
        val first = client.lock(name)
        assertEquals(name, first.name())
        assertTrue(first.isHeld())
        first.release()
        assertTrue(!first.isHeld())
        val second = client.lockBlocking(name)
        assertTrue(second.token() > first.token(), "token ${second.token()} after ${first.token()}")
        second.releaseBlocking()
        val again = assertThrows<DistsyncException.NotHeld> { second.releaseBlocking() }
        assertEquals(name, again.lock)
    }

    @Test
    fun `tryLock takes only a free lock, and lockInfo shows holders and waiters`(): Unit = runBlocking {
        val name = unique("inventory")
        assertNull(client.lockInfo(name))
        val held = client.tryLock(name)!!
        assertNull(client.tryLock(name), "a held lock was taken again")
        val waiterOwner = client.owner()
        val waiting = async(Dispatchers.IO) { client.lockBlocking(name, owner = waiterOwner) }
        Cluster.waitUntil("the waiter to queue", 10_000) { runBlocking { client.lockInfo(name) }!!.waiters.isNotEmpty() }
        val info = client.lockInfo(name)!!
        assertEquals(name, info.name)
        assertEquals(listOf(held.owner().actor()), info.holders.map { it.actor })
        assertEquals(held.token(), info.holders.single().token)
        assertFalse(info.holders.single().shared)
        assertEquals(listOf(waiterOwner.actor()), info.waiters.map { it.actor })
        held.release()
        val next = waiting.await()
        assertTrue(next.token() > held.token())
        next.release()
        assertNull(client.lockInfo(name))
        // Shared tryLocks coexist.
        val a = client.tryLock(name, shared = true)!!
        val b = client.tryLock(name, shared = true)!!
        assertEquals(2, client.lockInfo(name)!!.holders.size)
        a.release()
        b.release()
    }

    @Test
    fun `shared holds coexist and exclude a writer, which times out`(): Unit = runBlocking {
        val name = unique("config")
        val reader = client.lock(name, shared = true)
        val another = client.lock(name, shared = true)
        assertTrue(reader.isShared() && another.isShared())
        val timeout = assertThrows<DistsyncException.LockTimeout> { client.lockBlocking(name, timeoutMs = 300uL) }
        assertEquals(name, timeout.lock)
        assertTrue(timeout.reason.contains("not granted within the timeout"), timeout.reason)
        another.release()
        reader.upgrade()
        assertTrue(!reader.isShared())
        reader.release()
    }

    @Test
    fun `a deadlock throws with the cycle, and the other waiter is then granted`(): Unit = runBlocking {
        val (a, b) = unique("a") to unique("b")
        val first = client.owner()
        val second = client.owner()
        val holdA = client.lock(a, owner = first)
        val holdB = client.lock(b, owner = second)
        val firstWaits = async(Dispatchers.IO) { client.lock(b, owner = first) }
        val firstActor = "actor 0x${first.actor().toString(16)}"
        Cluster.waitUntil("the first owner to wait for $b") {
            val shown = cluster.cli("--endpoints", cluster.endpoints.joinToString(","), "--ca", cluster.ca, "lock", "show", b)
            shown?.substringAfter("waiters", "")?.contains(firstActor) == true
        }
        val deadlock = assertThrows<DistsyncException.Deadlock> { client.lockBlocking(a, owner = second) }
        assertEquals(a, deadlock.lock)
        assertEquals(setOf(a, b), deadlock.cycle.map { it.lock }.toSet())
        assertEquals(setOf(first.actor(), second.actor()), deadlock.cycle.map { it.actor }.toSet())
        holdB.release()
        val granted = firstWaits.await()
        assertTrue(granted.token() > holdB.token())
        granted.release()
        holdA.release()
    }

    @Test
    fun `queue put, get and ack`(): Unit = runBlocking {
        val queue = client.queue(unique("jobs"))
        val id = queue.put("payload".toByteArray(), dedupId = "order-42")
        assertEquals(id, queue.putBlocking("payload".toByteArray(), dedupId = "order-42"))
        val message = queue.get(waitMs = 1000uL)!!
        assertArrayEquals("payload".toByteArray(), message.body())
        assertEquals(id, message.id())
        assertEquals(1u, message.attempt())
        message.ack()
        assertThrows<DistsyncException.StaleDelivery> { message.ackBlocking() }
        assertNull(queue.getBlocking(waitMs = 100uL))
        queue.delete()
        assertThrows<DistsyncException.NoSuchQueue> { runBlocking { queue.delete() } }
    }

    @Test
    fun `nacked messages come back, then go to the dead-letter queue, and stats count them`(): Unit = runBlocking {
        val queue = client.queue(unique("poison"))
        assertTrue(queue.create(maxAttempts = 2u, visibilityMs = 60_000uL))
        // A second create sets the options of the existing queue.
        assertFalse(queue.create(maxAttempts = 2u, visibilityMs = 60_000uL))
        queue.put("poison".toByteArray())
        val first = queue.get(waitMs = 1000uL)!!
        first.extend(120_000uL)
        first.nack()
        assertThrows<DistsyncException.StaleDelivery> { runBlocking { first.extend(1000uL) } }
        val second = queue.getBlocking(waitMs = 1000uL)!!
        assertEquals(first.id(), second.id())
        assertEquals(2u, second.attempt())
        second.nackBlocking()
        assertNull(queue.get())
        val dead = client.queue("${queue.name()}.dlq").get(waitMs = 1000uL)!!
        assertArrayEquals("poison".toByteArray(), dead.body())
        dead.ack()
        val stats = queue.stats()
        assertEquals(2u, stats.maxAttempts)
        assertEquals(60_000uL, stats.visibilityMs)
        assertEquals(1uL, stats.putTotal)
        assertEquals(1uL, stats.deadLettered)
        assertEquals(0uL, stats.depth)
        assertEquals(0uL, stats.inFlight)
        assertThrows<DistsyncException.NoSuchQueue> { runBlocking { client.queue(unique("missing")).stats() } }
    }

    @Test
    fun `deliveries as a Flow, and the prefetched messages go back when it stops`(): Unit = runBlocking {
        val queue = client.queue(unique("flow"))
        // A visibility timeout far beyond the test: only the consumer's stop returns messages.
        queue.create(visibilityMs = 600_000uL)
        val bodies = (0 until 10).map { "m$it" }
        bodies.forEach { queue.put(it.toByteArray()) }
        val taken = queue.deliveries(prefetch = 5u).take(3).toList()
        assertEquals(bodies.take(3), taken.map { String(it.body()) })
        taken.forEach { it.ack() }
        // The other two fetched with them are back at once, not in ten minutes.
        Cluster.waitUntil("the prefetched messages to return", 10_000) {
            runBlocking { queue.stats() }.inFlight == 0uL
        }
        val consumer = queue.consume()
        val rest = (3 until 10).map { consumer.nextBlocking()!! }
        assertEquals(bodies.drop(3), rest.map { String(it.body()) })
        rest.forEach { it.ackBlocking() }
        // stop() ends a next() that waits on the empty queue.
        val waiting = async(Dispatchers.IO) { consumer.next() }
        Cluster.waitUntil("the consumer to wait", 10_000) { runBlocking { queue.stats() }.waitingConsumers == 1uL }
        consumer.stop()
        assertNull(waiting.await())
        assertNull(consumer.next())
        consumer.close()
        assertEquals(0uL, queue.stats().depth)
    }

    @Test
    fun `batches keep FIFO order`(): Unit = runBlocking {
        val queue = client.queue(unique("batch"))
        val ids = queue.putBatch(listOf("a", "b", "c").map { it.toByteArray() })
        assertEquals(ids.sorted(), ids)
        assertEquals(3, ids.toSet().size)
        val first = queue.getBatch(2u, waitMs = 1000uL)
        assertEquals(listOf("a", "b"), first.map { String(it.body()) })
        assertEquals(ids.take(2), first.map { it.id() })
        val rest = queue.getBatch(10u)
        assertEquals(listOf("c"), rest.map { String(it.body()) })
        (first + rest).forEach { it.ack() }
        assertTrue(queue.getBatch(10u).isEmpty())
        assertThrows<DistsyncException.InvalidArgument> { runBlocking { queue.getBatch(0u) } }
    }

    @Test
    fun `cache set and get`(): Unit = runBlocking {
        val cache = client.cache()
        val key = unique("user")
        assertNull(cache.get(key))
        val version = cache.set(key, "ada".toByteArray(), ttlSeconds = 60uL)
        assertArrayEquals("ada".toByteArray(), cache.getBlocking(key))
        assertTrue(cache.setBlocking(key, "grace".toByteArray()) > version)
        assertArrayEquals("grace".toByteArray(), cache.get(key))
        // A local read answers from the home node's applied state: the write shows there soon.
        Cluster.waitUntil("the write to reach the home node", 10_000) {
            cache.getBlocking(key, local = true)?.contentEquals("grace".toByteArray()) == true
        }
        assertTrue(cache.delete(key))
        assertThrows<DistsyncException.InvalidArgument> { cache.getBlocking("") }
    }

    @Test
    fun `bad configuration throws InvalidArgument`() {
        assertThrows<DistsyncException.InvalidArgument> { Client.connectBlocking(cluster.endpoints, "/nonexistent/ca.pem") }
        assertThrows<DistsyncException.InvalidArgument> { Client.connectBlocking(listOf("not an address"), cluster.ca) }
    }

    @Test
    fun `an identity does only what it was granted, and another CA's certificate is Unauthenticated`(): Unit =
        runBlocking {
            val alice = unique("alice")
            val tls = java.io.File(cluster.ca).parent
            checkNotNull(cluster.cli("certs", "client", "--dir", tls, "--name", alice))
            checkNotNull(cluster.cli("--endpoints", cluster.endpoints.joinToString(","), "--ca", cluster.ca,
                "acl", "grant", alice, "lock:team-a/", "write"))
            Client.connect(cluster.endpoints, cluster.ca, "$tls/$alice.pem", "$tls/$alice-key.pem").use { client ->
                client.lock(unique("team-a/x")).release()
                val name = unique("team-b/x")
                val denied = assertThrows<DistsyncException.PermissionDenied> { runBlocking { client.lock(name) } }
                assertEquals(listOf(alice, "lock:$name", "write"), listOf(denied.identity, denied.resource, denied.needed))
                client.closeSession()
            }
            val other = kotlin.io.path.createTempDirectory("distsync-kt-other-ca-").toFile()
            try {
                checkNotNull(cluster.cli("certs", "init", "--dir", other.path, "--nodes", "1"))
                assertThrows<DistsyncException.Unauthenticated> {
                    Client.connectBlocking(cluster.endpoints, cluster.ca, "$other/client.pem", "$other/client-key.pem")
                }
            } finally {
                other.deleteRecursively()
            }
        }
}

/** A leader SIGKILLed while a lock is held: the hold survives and is released. */
class FailoverTest {
    @Test
    fun `the leader SIGKILLed during a held lock`(): Unit = runBlocking {
        Cluster().use { cluster ->
            val client = Client.connect(cluster.endpoints, cluster.ca)
            val other = Client.connect(cluster.endpoints, cluster.ca)
            val name = "failover-${UUID.randomUUID()}"
            val lock = client.lock(name)
            val leader = cluster.waitForLeader()
            cluster.kill(leader)
            val next = cluster.waitForLeader(cluster.ids.filter { it != leader })
            assertNotEquals(leader, next)
            assertTrue(lock.isHeld())
            lock.release()
            // The session lives on, so only the release frees the lock this soon.
            val after = other.lock(name, timeoutMs = 5000uL)
            assertTrue(after.token() > lock.token(), "token ${after.token()} after ${lock.token()}")
            after.release()
            client.closeSession()
            other.closeSession()
            client.close()
            other.close()
        }
    }
}
