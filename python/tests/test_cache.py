"""The coherent cache through Python: values in a real redis-server, linearizable reads."""

import pytest

import distsync
from conftest import wait_until


def test_set_get_delete_and_versions(client, unique):
    key = unique("user")
    assert client.cache.get(key) is None
    version = client.cache.set(key, b'{"name": "Ada"}')
    assert client.cache.get(key) == b'{"name": "Ada"}'
    assert client.cache.get_versioned(key) == (b'{"name": "Ada"}', version)
    newer = client.cache.set(key.encode(), "Grace")          # bytes key, str value
    assert newer > version
    assert client.cache.get(key) == b"Grace"
    assert client.cache.delete(key) is True
    assert client.cache.delete(key) is False
    assert client.cache.get(key) is None


def test_a_write_is_seen_by_every_other_client_at_once(cluster, client, unique):
    key = unique("shared")
    readers = [distsync.Client(cluster.endpoints, ca=cluster.ca, home=endpoint) for endpoint in cluster.endpoints]
    for round_ in range(5):
        client.cache.set(key, f"value {round_}")
        # Linearizable: each node answers with the write just acknowledged, never an older one.
        assert [reader.cache.get(key) for reader in readers] == [f"value {round_}".encode()] * 3
    for reader in readers:
        reader.close()


def test_get_many_and_local_reads(client, unique):
    keys = [unique("many") for _ in range(3)]
    client.cache.set(keys[0], b"zero")
    client.cache.set(keys[2], b"two")
    assert client.cache.get_many(keys) == [b"zero", None, b"two"]
    assert client.cache.get_many([]) == []
    # A local read may lag, but a value written long enough ago is there.
    wait_until(lambda: client.cache.get(keys[0], local=True) == b"zero", 10, "the local read")


def test_a_value_expires_after_its_ttl(client, unique):
    key = unique("session")
    client.cache.set(key, b"token", ttl=2.0)
    assert client.cache.get(key) == b"token"
    wait_until(lambda: client.cache.get(key) is None, 10, "the value to expire")


def test_bad_cache_arguments_raise_invalid_argument(client):
    with pytest.raises(distsync.InvalidArgument):
        client.cache.get("")
    with pytest.raises(distsync.InvalidArgument):
        client.cache.set("k" * 5000, b"v")
    with pytest.raises(distsync.InvalidArgument):
        client.cache.set("big", b"v" * (2 * 1024 * 1024))
    with pytest.raises(distsync.InvalidArgument):
        client.cache.set("ttl", b"v", ttl=-5)
    with pytest.raises(distsync.InvalidArgument):
        client.cache.get(12)


def test_keys_and_values_may_be_bytes_like(client, unique):
    key = unique("views")
    client.cache.set(memoryview(key.encode()), bytearray(b"from a bytearray"))
    assert client.cache.get(key) == b"from a bytearray"
    client.cache.set(key, memoryview(b"from a memoryview"))
    assert client.cache.get(key.encode()) == b"from a memoryview"
