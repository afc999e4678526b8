// The cases of bindings/kotlin's JUnit suite, against a real cluster: three nodes of the
// `distsync` binary ($DISTSYNC_BIN, default ../../target/release/distsync) and a redis-server.
import Foundation
import XCTest

@testable import Distsync

final class Cluster {
    let binary: String
    let directory: URL
    let ids = [1, 2, 3]
    var addresses: [Int: String] = [:]
    var processes: [Int: Process] = [:]
    var redis: Process!
    let redisPort: Int

    init() throws {
        binary = ProcessInfo.processInfo.environment["DISTSYNC_BIN"] ?? "../../target/release/distsync"
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("distsync-swift-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let ports = Cluster.freePorts(count: 4)
        for id in ids { addresses[id] = "127.0.0.1:\(ports[id - 1])" }
        redisPort = ports[3]
        _ = try cli(["certs", "init", "--dir", directory.appendingPathComponent("tls").path, "--nodes", "3"])
        redis = try spawn("/usr/bin/env", ["redis-server", "--bind", "127.0.0.1", "--port", "\(redisPort)", "--save", "",
                                          "--appendonly", "no", "--dir", directory.path], log: "redis.log")
        for id in ids { try start(id) }
        _ = try waitForLeader()
    }

    var endpoints: [String] { ids.compactMap { addresses[$0] } }
    var ca: String { directory.appendingPathComponent("tls/ca.pem").path }

    func start(_ id: Int) throws {
        let peers = addresses.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        processes[id] = try spawn(binary, ["serve", "--id", "\(id)", "--listen", addresses[id]!, "--peers", peers,
                                           "--data-dir", directory.appendingPathComponent("node-\(id)").path,
                                           "--tls-dir", directory.appendingPathComponent("tls").path,
                                           "--redis", "redis://127.0.0.1:\(redisPort)"], log: "node-\(id).log")
    }

    /// SIGKILLs node `id`.
    func kill(_ id: Int) {
        guard let process = processes.removeValue(forKey: id) else { return }
        Darwin.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Waits until one of `among` leads and the others agree; returns its id.
    func waitForLeader(among: [Int]? = nil) throws -> Int {
        let nodes = among ?? processes.keys.sorted()
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let statuses = nodes.map { id in (id, status(id)) }
            if statuses.allSatisfy({ $0.1 != nil }) {
                let leaders = statuses.filter { $0.1!.role == "leader" }.map { $0.0 }
                if leaders.count == 1, statuses.allSatisfy({ $0.1!.leader == leaders[0] }) { return leaders[0] }
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw NSError(domain: "Cluster", code: 1, userInfo: [NSLocalizedDescriptionKey: "no leader among \(nodes)"])
    }

    func status(_ id: Int) -> (role: String, leader: Int?)? {
        guard let out = try? cli(["--endpoints", addresses[id]!, "--ca", ca, "status", "--json"]),
              let json = try? JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]],
              let first = json.first, let role = first["role"] as? String else { return nil }
        return (role, first["leader"] as? Int)
    }

    func cli(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw NSError(domain: "Cluster", code: Int(process.terminationStatus))
        }
        return String(decoding: out, as: UTF8.self)
    }

    func stop() {
        for id in processes.keys { kill(id) }
        redis.terminate()
        try? FileManager.default.removeItem(at: directory)
    }

    private func spawn(_ executable: String, _ arguments: [String], log: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let logURL = directory.appendingPathComponent(log)
        FileManager.default.createFile(atPath: logURL.path, contents: nil)
        let handle = try FileHandle(forWritingTo: logURL)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }

    static func freePorts(count: Int) -> [Int] {
        (0..<count).map { _ in
            let socket = Darwin.socket(AF_INET, SOCK_DGRAM, 0)
            defer { close(socket) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    _ = bind(socket, $0, length)
                    _ = getsockname(socket, $0, &length)
                }
            }
            return Int(UInt16(bigEndian: address.sin_port))
        }
    }
}

final class DistsyncTests: XCTestCase {
    static var cluster: Cluster!
    var client: Client!

    override class func setUp() {
        cluster = try! Cluster()
    }

    override class func tearDown() {
        cluster.stop()
    }

    override func setUp() async throws {
        client = try await Client.connect(endpoints: Self.cluster.endpoints, caPath: Self.cluster.ca)
    }

    override func tearDown() async throws {
        await client.closeSession()
    }

    func unique(_ base: String) -> String { "\(base)-\(UUID().uuidString.prefix(8))" }

    func testLockAndUnlockWithFencingToken() async throws {
        let name = unique("reports")
        let first = try await client.lock(name: name)
        XCTAssertEqual(first.name(), name)
        XCTAssertTrue(first.isHeld())
        try await first.release()
        let second = try client.lockBlocking(name: name)
        XCTAssertGreaterThan(second.token(), first.token())
        try await second.release()
        do {
            try await second.release()
            XCTFail("a second release succeeded")
        } catch DistsyncError.NotHeld(_, let lock) {
            XCTAssertEqual(lock, name)
        }
    }

    func testTryLockTakesOnlyAFreeLockAndLockInfoShowsHoldersAndWaiters() async throws {
        let name = unique("inventory")
        let nobody = try await client.lockInfo(name: name)
        XCTAssertNil(nobody)
        let held = try await client.tryLock(name: name)!
        let again = try await client.tryLock(name: name)
        XCTAssertNil(again, "a held lock was taken again")
        let waiterOwner = client.owner()
        let client = self.client!
        let waiting = Task { try await client.lock(name: name, owner: waiterOwner) }
        let deadline = Date().addingTimeInterval(10)
        while try await client.lockInfo(name: name)?.waiters.isEmpty ?? true {
            XCTAssertLessThan(Date(), deadline, "the waiter never queued")
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        let info = try await client.lockInfo(name: name)!
        XCTAssertEqual(info.name, name)
        XCTAssertEqual(info.holders.map { $0.actor }, [held.owner().actor()])
        XCTAssertEqual(info.holders.first?.token, held.token())
        XCTAssertEqual(info.waiters.map { $0.actor }, [waiterOwner.actor()])
        try await held.release()
        let next = try await waiting.value
        XCTAssertGreaterThan(next.token(), held.token())
        try await next.release()
    }

    func testSharedHoldsExcludeAWriterWhichTimesOut() async throws {
        let name = unique("config")
        let reader = try await client.lock(name: name, shared: true)
        let another = try await client.lock(name: name, shared: true)
        XCTAssertTrue(reader.isShared() && another.isShared())
        do {
            _ = try await client.lock(name: name, timeoutMs: 300)
            XCTFail("an exclusive hold beside shared ones")
        } catch DistsyncError.LockTimeout(let reason, let lock) {
            XCTAssertEqual(lock, name)
            XCTAssertTrue(reason.contains("not granted within the timeout"))
        }
        try await another.release()
        try await reader.upgrade()
        XCTAssertFalse(reader.isShared())
        try await reader.release()
    }

    func testDeadlockThrowsWithTheCycle() async throws {
        let (a, b) = (unique("a"), unique("b"))
        let first = client.owner()
        let second = client.owner()
        let holdA = try await client.lock(name: a, owner: first)
        let holdB = try await client.lock(name: b, owner: second)
        let client = self.client!
        let firstWaits = Task { try await client.lock(name: b, owner: first) }
        let firstActor = "actor 0x" + String(first.actor(), radix: 16)
        let deadline = Date().addingTimeInterval(30)
        while !((try? Self.cluster.cli(["--endpoints", Self.cluster.endpoints.joined(separator: ","), "--ca", Self.cluster.ca,
                                         "lock", "show", b]))?.components(separatedBy: "waiters").last?.contains(firstActor) ?? false) {
            XCTAssertLessThan(Date(), deadline, "the first owner never waited")
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        do {
            _ = try await client.lock(name: a, owner: second)
            XCTFail("a deadlock was granted")
        } catch DistsyncError.Deadlock(_, let lock, let cycle) {
            XCTAssertEqual(lock, a)
            XCTAssertEqual(Set(cycle.map { $0.lock }), [a, b])
            XCTAssertEqual(Set(cycle.map { $0.actor }), [first.actor(), second.actor()])
        }
        try await holdB.release()
        let granted = try await firstWaits.value
        XCTAssertGreaterThan(granted.token(), holdB.token())
        try await granted.release()
        try await holdA.release()
    }

    func testQueuePutGetAck() async throws {
        let queue = client.queue(name: unique("jobs"))
        let id = try await queue.put(body: Data("payload".utf8), dedupId: "order-42")
        XCTAssertEqual(try queue.putBlocking(body: Data("payload".utf8), dedupId: "order-42"), id)
        let message = try await queue.get(waitMs: 1000)
        XCTAssertEqual(message?.body(), Data("payload".utf8))
        XCTAssertEqual(message?.id(), id)
        XCTAssertEqual(message?.attempt(), 1)
        try await message!.ack()
        do {
            try await message!.ack()
            XCTFail("a second ack succeeded")
        } catch DistsyncError.StaleDelivery {}
        let empty = try await queue.get(waitMs: 100)
        XCTAssertNil(empty)
        _ = try await queue.delete()
    }

    func testNackedMessagesComeBackThenGoToTheDeadLetterQueue() async throws {
        let queue = client.queue(name: unique("poison"))
        let created = try await queue.create(maxAttempts: 2, visibilityMs: 60_000)
        XCTAssertTrue(created)
        // A second create sets the options of the existing queue.
        let again = try await queue.create(maxAttempts: 2, visibilityMs: 60_000)
        XCTAssertFalse(again)
        _ = try await queue.put(body: Data("poison".utf8))
        let first = try await queue.get(waitMs: 1000)!
        try await first.extend(visibilityMs: 120_000)
        try await first.nack()
        do {
            try await first.extend(visibilityMs: 1000)
            XCTFail("a nacked delivery was extended")
        } catch DistsyncError.StaleDelivery {}
        let second = try queue.getBlocking(waitMs: 1000)!
        XCTAssertEqual(second.id(), first.id())
        XCTAssertEqual(second.attempt(), 2)
        try second.nackBlocking()
        let none = try await queue.get()
        XCTAssertNil(none)
        let dead = try await client.queue(name: queue.name() + ".dlq").get(waitMs: 1000)!
        XCTAssertEqual(dead.body(), Data("poison".utf8))
        try await dead.ack()
        let stats = try await queue.stats()
        XCTAssertEqual(stats.maxAttempts, 2)
        XCTAssertEqual(stats.visibilityMs, 60_000)
        XCTAssertEqual(stats.putTotal, 1)
        XCTAssertEqual(stats.deadLettered, 1)
        XCTAssertEqual(stats.depth, 0)
        XCTAssertEqual(stats.inFlight, 0)
        do {
            _ = try await client.queue(name: unique("missing")).stats()
            XCTFail("stats of a missing queue")
        } catch DistsyncError.NoSuchQueue {}
    }

    func testDeliveriesAsAnAsyncSequenceReturnPrefetchedMessagesWhenReleased() async throws {
        let queue = client.queue(name: unique("flow"))
        // A visibility timeout far beyond the test: only the consumer's end returns messages.
        _ = try await queue.create(visibilityMs: 600_000)
        let bodies = (0..<10).map { "m\($0)" }
        for body in bodies {
            _ = try await queue.put(body: Data(body.utf8))
        }
        var taken: [Delivery] = []
        do {
            for try await message in queue.deliveries(prefetch: 5) {
                taken.append(message)
                if taken.count == 3 { break }
            }
        }
        XCTAssertEqual(taken.map { String(decoding: $0.body(), as: UTF8.self) }, Array(bodies.prefix(3)))
        for message in taken {
            try await message.ack()
        }
        // The other two fetched with them are back at once, not in ten minutes.
        let deadline = Date().addingTimeInterval(10)
        while try await queue.stats().inFlight != 0 {
            XCTAssertLessThan(Date(), deadline, "the prefetched messages never returned")
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        let consumer = queue.consume()
        var rest: [String] = []
        for _ in 3..<10 {
            let message = try consumer.nextBlocking()!
            rest.append(String(decoding: message.body(), as: UTF8.self))
            try message.ackBlocking()
        }
        XCTAssertEqual(rest, Array(bodies.dropFirst(3)))
        // stop() ends a next() that waits on the empty queue.
        let waiting = Task { try await consumer.next() }
        while try await queue.stats().waitingConsumers != 1 {
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        await consumer.stop()
        let ended = try await waiting.value
        XCTAssertNil(ended)
    }

    func testBatchesKeepFifoOrder() async throws {
        let queue = client.queue(name: unique("batch"))
        let ids = try await queue.putBatch(bodies: ["a", "b", "c"].map { Data($0.utf8) })
        XCTAssertEqual(ids, ids.sorted())
        let first = try await queue.getBatch(max: 2, waitMs: 1000)
        XCTAssertEqual(first.map { String(decoding: $0.body(), as: UTF8.self) }, ["a", "b"])
        let rest = try await queue.getBatch(max: 10)
        XCTAssertEqual(rest.map { String(decoding: $0.body(), as: UTF8.self) }, ["c"])
        for message in first + rest {
            try await message.ack()
        }
    }

    func testCacheSetGet() async throws {
        let cache = client.cache()
        let key = unique("user")
        let missing = try await cache.get(key: key)
        XCTAssertNil(missing)
        let version = try await cache.set(key: key, value: Data("ada".utf8), ttlSeconds: 60)
        XCTAssertEqual(try cache.getBlocking(key: key), Data("ada".utf8))
        XCTAssertGreaterThan(try cache.setBlocking(key: key, value: Data("grace".utf8)), version)
        let deleted = try await cache.delete(key: key)
        XCTAssertTrue(deleted)
        do {
            _ = try await cache.get(key: "")
            XCTFail("an empty key was accepted")
        } catch DistsyncError.InvalidArgument {}
    }

    func testLeaderKilledDuringAHeldLock() async throws {
        let cluster = try Cluster()
        defer { cluster.stop() }
        let client = try await Client.connect(endpoints: cluster.endpoints, caPath: cluster.ca)
        let other = try await Client.connect(endpoints: cluster.endpoints, caPath: cluster.ca)
        let name = unique("failover")
        let lock = try await client.lock(name: name)
        let leader = try cluster.waitForLeader()
        cluster.kill(leader)
        let next = try cluster.waitForLeader(among: cluster.ids.filter { $0 != leader })
        XCTAssertNotEqual(next, leader)
        XCTAssertTrue(lock.isHeld())
        try await lock.release()
        // The session lives on, so only the release frees the lock this soon.
        let after = try await other.lock(name: name, timeoutMs: 5000)
        XCTAssertGreaterThan(after.token(), lock.token())
        try await after.release()
        await client.closeSession()
        await other.closeSession()
    }
}
