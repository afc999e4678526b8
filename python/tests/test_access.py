"""Identities and ACLs through the Python client: `cert=` and `key=` choose the identity, what
it was not granted raises `PermissionDenied` naming the identity, the resource and the permission
needed, and a certificate the cluster did not issue raises `Unauthenticated` at once rather than
timing out. The binding has no kv API; the cache (`cache:` grants) is its key-value store."""

import shutil
import subprocess
import tempfile
import uuid

import pytest

import distsync


def identity_name(base: str) -> str:
    """A fresh identity: grants outlive the test, so every test names its own."""
    return f"{base}-{uuid.uuid4().hex[:8]}"


def denial(error: pytest.ExceptionInfo) -> tuple[str, str, str]:
    return error.value.identity, error.value.resource, error.value.needed


def test_an_identity_writes_only_where_it_was_granted(cluster, unique):
    alice = identity_name("alice")
    with cluster.client(**cluster.identity(alice, ("lock:team-a/", "write"))) as client:
        with client.lock(unique("team-a/x")) as lock:
            assert lock.held
        other_team = unique("team-b/x")
        with pytest.raises(distsync.PermissionDenied) as denied:
            client.lock(other_team).acquire()
        assert denial(denied) == (alice, f"lock:{other_team}", "write")
        assert f"distsync acl grant {alice}" in str(denied.value)
        key = unique("team-a/x")
        with pytest.raises(distsync.PermissionDenied) as denied:
            client.cache.set(key, b"value")
        assert denial(denied) == (alice, f"cache:{key}", "write")


def test_a_read_grant_reads_without_writing_and_no_grant_reads_nothing(cluster, client, unique):
    key = unique("cfg/mode")
    client.cache.set(key, b"active")  # the admin
    with cluster.client(**cluster.identity(identity_name("reader"), ("cache:cfg/", "read"))) as reader:
        assert reader.cache.get(key) == b"active"
        with pytest.raises(distsync.PermissionDenied) as denied:
            reader.cache.set(key, b"changed")
        assert denial(denied)[1:] == (f"cache:{key}", "write")
    nobody = identity_name("nobody")
    with cluster.client(**cluster.identity(nobody)) as stranger:
        with pytest.raises(distsync.PermissionDenied) as denied:
            stranger.cache.get(key)
        assert denial(denied) == (nobody, f"cache:{key}", "read")
        with pytest.raises(distsync.PermissionDenied):
            stranger.lock(unique("team-a/x")).acquire()
    assert client.cache.get(key) == b"active"


def test_a_certificate_of_another_ca_is_unauthenticated_at_once(cluster):
    other = tempfile.mkdtemp(prefix="distsync-py-other-ca-")
    try:
        subprocess.run([cluster.binary, "certs", "init", "--dir", other, "--nodes", "1"], check=True,
                       capture_output=True)
        with pytest.raises(distsync.Unauthenticated, match="distsync certs client"):
            distsync.Client(cluster.endpoints, ca=cluster.ca, cert=f"{other}/client.pem",
                            key=f"{other}/client-key.pem", request_timeout=30.0)
        # A timeout would raise Unavailable after the 30 s request timeout: the type is the check.
        with pytest.raises(distsync.InvalidArgument, match="both"):
            distsync.Client(cluster.endpoints, ca=cluster.ca, cert=f"{other}/client.pem")
    finally:
        shutil.rmtree(other, ignore_errors=True)
