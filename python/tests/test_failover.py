"""Leader changes are invisible to the caller: a `with client.lock()` block whose leader is
SIGKILLed inside it still exits cleanly, and the lock is free afterwards."""

import distsync


def test_the_leader_killed_inside_a_with_lock_block_does_not_disturb_it(own_cluster):
    cluster = own_cluster
    client = cluster.client(session_ttl=10)
    with client.lock("jobs-table") as lock:
        token = lock.token
        leader = cluster.wait_for_leader()
        cluster.kill(leader)
        survivors = [node for node in cluster.ids if node != leader]
        cluster.wait_for_leader(survivors)
        # Work inside the block goes on through the new leader.
        client.queue("after-failover").put(b"written while holding")
        assert lock.held
    # The release went through the new leader: the lock is free, and the next holder's token is
    # higher than the one held across the failover.
    assert client.lock_info("jobs-table") is None
    other = cluster.client()
    with other.lock("jobs-table", timeout=5) as next_hold:
        assert next_hold.token > token
    assert client.queue("after-failover").get(wait=1.0).body == b"written while holding"
    other.close()
    client.close()


def test_a_queue_consumer_and_the_cache_carry_on_across_a_leader_kill(own_cluster):
    cluster = own_cluster
    client = cluster.client()
    jobs = client.queue("failover-jobs")
    ids = jobs.put_batch([b"one", b"two"])
    client.cache.set("failover-key", b"before")
    cluster.kill(cluster.wait_for_leader())
    ids.append(jobs.put(b"three"))
    client.cache.set("failover-key", b"after")
    received = []
    for message in jobs.consume(prefetch=2):
        received.append(message.id)
        message.ack()
        if len(received) == 3:
            break
    assert received == ids
    assert client.cache.get("failover-key") == b"after"
    client.close()
