"""The package's surface: stubs matching the module, documentation, the exception tree, and
clear errors for unusable configuration."""

import ast
import inspect
import pathlib
import pydoc
import subprocess

import pytest

import distsync
import distsync._native as native

PACKAGE = pathlib.Path(distsync.__file__).parent


def stub_classes():
    tree = ast.parse((PACKAGE / "_native.pyi").read_text())
    classes = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
            classes[node.name] = {m for m in members if not m.startswith("_")}
    return classes


def test_the_type_stubs_describe_exactly_the_native_module():
    classes = stub_classes()
    runtime = {name for name, value in vars(native).items() if isinstance(value, type)}
    assert set(classes) == runtime
    for name, members in classes.items():
        if issubclass(getattr(native, name), Exception):
            continue  # attributes are set per instance
        actual = {m for m in dir(getattr(native, name)) if not m.startswith("_")}
        assert members == actual, f"{name}: stub {sorted(members)} vs module {sorted(actual)}"
    assert (PACKAGE / "py.typed").exists()
    assert sorted(distsync.__all__) == sorted(runtime | {"__version__"})


def test_every_public_name_and_method_is_documented():
    for name in distsync.__all__:
        value = getattr(distsync, name)
        if name == "__version__":
            continue
        assert inspect.getdoc(value), f"distsync.{name} has no docstring"
        for member, attribute in vars(value).items():
            if not member.startswith("_"):
                assert inspect.getdoc(attribute), f"distsync.{name}.{member} has no docstring"


def test_help_reads_well():
    text = pydoc.render_doc(distsync.Client, renderer=pydoc.plaintext)
    assert "Client(endpoints=None, *, ca=None, cert=None, key=None, session_ttl=10.0, request_timeout=10.0, home=None)" in text
    assert "lock(self, /, name, *, shared=False, timeout=None, owner=None)" in text
    assert "fencing token" in text and "fork()" in text


def test_every_exception_is_a_distsync_error():
    for name in ["LockTimeout", "DeadlockError", "AlreadyHeld", "NotHeld", "SessionExpired", "Unavailable",
                 "InvalidArgument", "NoSuchQueue", "StaleDelivery", "LimitReached", "ForkError", "PermissionDenied",
                 "Unauthenticated"]:
        assert issubclass(getattr(distsync, name), distsync.Error)
    assert issubclass(distsync.Error, Exception)


def test_unusable_configuration_raises_invalid_argument(cluster, monkeypatch):
    monkeypatch.delenv("DISTSYNC_CA", raising=False)
    monkeypatch.delenv("DISTSYNC_ENDPOINTS", raising=False)
    with pytest.raises(distsync.InvalidArgument, match="ca="):
        distsync.Client(cluster.endpoints)
    with pytest.raises(distsync.InvalidArgument, match="DISTSYNC_ENDPOINTS"):
        distsync.Client(ca=cluster.ca)
    with pytest.raises(distsync.InvalidArgument):
        distsync.Client(cluster.endpoints, ca="/nonexistent/ca.pem")
    with pytest.raises(distsync.InvalidArgument):
        distsync.Client(["not an address"], ca=cluster.ca)
    with pytest.raises(distsync.InvalidArgument):
        distsync.Client(cluster.endpoints, ca=cluster.ca, session_ttl=0.1)
    # The command line's environment variables work too.
    monkeypatch.setenv("DISTSYNC_ENDPOINTS", ",".join(cluster.endpoints))
    monkeypatch.setenv("DISTSYNC_CA", cluster.ca)
    with distsync.Client() as client:
        assert client.cache.get("never-set-by-anyone") is None


def test_a_ca_that_did_not_sign_the_nodes_is_refused(cluster, tmp_path):
    subprocess.run([cluster.binary, "certs", "init", "--dir", str(tmp_path), "--nodes", "1"], check=True,
                   capture_output=True)
    with pytest.raises(distsync.Unauthenticated, match="not trusted"):
        distsync.Client(cluster.endpoints, ca=str(tmp_path / "ca.pem"), request_timeout=1.0)
