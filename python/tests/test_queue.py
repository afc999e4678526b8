"""Queues: acks, redelivery, dead letters, typed errors, and no loss across a consumer crash."""

import subprocess
import sys
import textwrap
import time

import pytest

import distsync
from conftest import read_line


def test_nack_redelivers_and_a_stale_ack_is_refused(client, unique):
    jobs = client.queue(unique("jobs"))
    jobs.put("text bodies are UTF-8")
    first = jobs.get(wait=1.0)
    assert (first.body, first.attempt) == (b"text bodies are UTF-8", 1)
    first.nack()
    second = jobs.get(wait=1.0)
    assert (second.id, second.attempt) == (first.id, 2)
    assert second.tag != first.tag
    with pytest.raises(distsync.StaleDelivery) as raised:
        first.ack()
    assert (raised.value.queue, raised.value.tag) == (jobs.name, first.tag)
    second.ack()
    with pytest.raises(distsync.StaleDelivery):
        second.ack()
    stats = jobs.stats()
    assert (stats.depth, stats.in_flight, stats.acked_total, stats.put_total) == (0, 0, 1, 1)


def test_an_unacked_message_comes_back_after_its_visibility_timeout(client, unique):
    jobs = client.queue(unique("slow-jobs"), visibility=2.0)
    jobs.put(b"job")
    taken = jobs.get(wait=1.0)
    assert jobs.get(wait=0.0) is None, "invisible while in flight"
    again = jobs.get(wait=15.0)
    assert again is not None and again.id == taken.id and again.attempt == 2
    with pytest.raises(distsync.StaleDelivery):
        taken.ack()
    before = again.visible_at_ms
    again.extend(30.0)
    assert again.visible_at_ms > before
    again.ack()


def test_messages_move_to_the_dead_letter_queue_after_max_attempts(client, unique):
    name = unique("fragile")
    jobs = client.queue(name)
    assert jobs.create(max_attempts=2, visibility=10) is True
    assert jobs.create(max_attempts=2, visibility=10) is False
    jobs.put(b"poison")
    jobs.get(wait=1.0).nack()
    jobs.get(wait=1.0).nack()
    assert jobs.get(wait=0.2) is None
    dead = client.queue(name + ".dlq").get(wait=1.0)
    assert dead.body == b"poison"
    dead.ack()
    stats = jobs.stats()
    assert (stats.dead_lettered, stats.max_attempts, stats.visibility) == (1, 2, 10.0)
    assert name in {queue.name for queue in client.queues()}


def test_batches_keep_fifo_order(client, unique):
    jobs = client.queue(unique("batch"))
    ids = jobs.put_batch([b"a", "b", bytearray(b"c")])
    assert ids == sorted(ids)
    messages = jobs.get_batch(10, wait=1.0)
    assert [m.body for m in messages] == [b"a", b"b", b"c"]
    assert [m.id for m in messages] == ids
    for message in messages:
        message.ack()


def test_queue_errors_are_typed(client, unique):
    missing = unique("missing")
    with pytest.raises(distsync.NoSuchQueue) as raised:
        client.queue(missing).stats()
    assert raised.value.queue == missing
    small = client.queue(unique("small"))
    small.create(max_message_bytes=1024)
    with pytest.raises(distsync.InvalidArgument):
        small.put(b"x" * 2048)
    with pytest.raises(distsync.InvalidArgument):
        small.put(42)
    with pytest.raises(distsync.InvalidArgument):
        client.queue("has space").put(b"x")
    with pytest.raises(distsync.InvalidArgument):
        small.get(wait=-1)
    with pytest.raises(distsync.InvalidArgument):
        small.get_batch(0)
    # One write is at most 4 MiB: a batch of five 1 MiB messages is too large, and nothing of it
    # is enqueued.
    large = client.queue(unique("large"))
    large.create(max_message_bytes=1024 * 1024)
    with pytest.raises(distsync.TooLarge) as raised:
        large.put_batch([b"x" * (1024 * 1024)] * 5)
    assert isinstance(raised.value, distsync.InvalidArgument)
    assert (raised.value.what, raised.value.limit) == ("write", 4 * 1024 * 1024)
    assert raised.value.bytes > 5 * 1024 * 1024
    assert large.stats().depth == 0


CONSUMER = textwrap.dedent(
    """
    import sys, time
    import distsync
    client = distsync.Client(session_ttl=2)
    for message in client.queue(sys.argv[1]).consume(prefetch=5):
        print("acking", message.id, flush=True)
        message.ack()
        print("acked", message.id, flush=True)
        time.sleep(0.01)
    """
)


def test_no_message_is_lost_or_acked_twice_across_a_consumer_crash(cluster, client, unique):
    name = unique("crash")
    jobs = client.queue(name)
    ids = set(jobs.put_batch([f"job {i}".encode() for i in range(200)]))
    consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, name], stdout=subprocess.PIPE, text=True,
                                env=cluster.env())
    acking, acked = set(), set()
    try:
        while len(acked) < 60:
            verb, message_id = read_line(consumer, 30).split()
            (acking if verb == "acking" else acked).add(int(message_id))
    finally:
        consumer.kill()          # SIGKILL, mid-stream, with prefetched messages in flight
        consumer.wait()
    uncertain = acking - acked   # killed between "acking" and "acked": either outcome is right

    drained = set()
    deadline = time.monotonic() + 60
    while True:
        for message in jobs.get_batch(100, wait=0.5):
            drained.add(message.id)
            message.ack()
        stats = jobs.stats()
        if stats.depth == 0 and stats.in_flight == 0:
            break
        assert time.monotonic() < deadline, f"the crashed consumer's deliveries never came back: {stats}"
    assert not (drained & acked), "a message acked by the crashed consumer was delivered again"
    assert ids <= drained | acked | uncertain, "messages were lost"
    assert (stats.put_total, stats.acked_total, stats.dead_lettered) == (200, 200, 0)
