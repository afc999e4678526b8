"""A limit the cluster enforces raises LimitReached naming the limit (`what`, as docs/limits.md
lists it) and its value (`limit`), with `queue` set when a queue is full; nothing is changed."""

import pytest

import distsync
from conftest import Cluster


@pytest.fixture(scope="module")
def limited():
    cluster = Cluster(3, node_args=("--max-queues", "1", "--max-cache-keys", "1"))
    yield cluster
    cluster.stop()


def test_a_full_queue_table_names_the_limit_and_the_queue(limited):
    with limited.client() as client:
        client.queue("first").create()
        with pytest.raises(distsync.LimitReached) as refused:
            client.queue("second").put(b"body")
        assert (refused.value.what, refused.value.limit, refused.value.queue) == ("QUEUES_MAX", 1, "second")
        assert "QUEUES_MAX" in str(refused.value)
        assert [stats.name for stats in client.queues()] == ["first"], "the refused queue was not created"


def test_a_full_cache_directory_names_the_limit_without_a_queue(limited):
    with limited.client() as client:
        client.cache.set(b"one", b"v")
        with pytest.raises(distsync.LimitReached) as refused:
            client.cache.set(b"two", b"v")
        assert (refused.value.what, refused.value.limit, refused.value.queue) == ("CACHE_KEYS_MAX", 1, None)
        assert client.cache.get(b"two") is None
