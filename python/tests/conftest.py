"""Fixtures: real clusters of the `distsync` binary (and a real redis-server) on loopback.

The binary comes from $DISTSYNC_BIN, else target/debug/distsync or target/release/distsync of
this repository, else `distsync` on PATH (build it with `cargo build -p distsync-cli`).
Each cluster lives in a fresh temporary directory with its own certificates, data and logs, on
ports the kernel picked, so test runs do not collide. Node processes die with the test process
(PR_SET_PDEATHSIG). A failing test prints the tail of every node's log.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import pathlib
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

import distsync

REPO = pathlib.Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
POLL = 0.1


def binary() -> str:
    candidates = [os.environ.get("DISTSYNC_BIN")]
    candidates += [str(REPO / "target" / profile / "distsync") for profile in ("debug", "release")]
    candidates.append(shutil.which("distsync"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("no distsync binary: build it with `cargo build -p distsync-cli` or set DISTSYNC_BIN")


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the test process dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_ports(kind: int, count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, kind)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_until(condition, timeout: float, what: str):
    """Polls `condition` until it returns something truthy, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL)


def read_line(process: subprocess.Popen, timeout: float) -> str:
    """The next line a helper process prints (stdout opened as text), waiting at most `timeout`."""
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    try:
        if not selector.select(timeout):
            raise AssertionError(f"no output from the helper process within {timeout}s")
        return process.stdout.readline().strip()
    finally:
        selector.close()


class Redis:
    """A redis-server on a free loopback port, without persistence."""

    def __init__(self, directory: pathlib.Path):
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is required for the cache tests (apt-get install redis-server)")
        self.port = free_ports(socket.SOCK_STREAM, 1)[0]
        directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--protected-mode", "no", "--dir", str(directory)],
            stdout=open(directory / "redis.log", "ab"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )
        wait_until(self.answers, START_TIMEOUT, "redis-server to answer PING")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"redis-server exited with {self.process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


class Cluster:
    """N nodes of the `distsync` binary on loopback, with a redis-server for the cache."""

    def __init__(self, nodes: int = 3, node_args: tuple[str, ...] = ()):
        self.binary = binary()
        self.node_args = list(node_args)
        self.directory = pathlib.Path(tempfile.mkdtemp(prefix="distsync-py-"))
        self.ids = list(range(1, nodes + 1))
        self.addresses = {i: f"127.0.0.1:{port}" for i, port in zip(self.ids, free_ports(socket.SOCK_DGRAM, nodes))}
        self.processes: dict[int, subprocess.Popen] = {}
        self.redis = None
        try:
            self._cli_raw("certs", "init", "--dir", str(self.directory / "tls"), "--nodes", str(nodes))
            self.redis = Redis(self.directory / "redis")
            for node in self.ids:
                self.start(node)
            for node in self.ids:
                wait_until(lambda node=node: self._serving(node), START_TIMEOUT, f"node {node} to serve")
            self.wait_for_leader()
        except BaseException:
            self.stop(keep=True)
            raise

    @property
    def endpoints(self) -> list[str]:
        return [self.addresses[i] for i in self.ids]

    @property
    def ca(self) -> str:
        return str(self.tls / "ca.pem")

    @property
    def tls(self) -> pathlib.Path:
        """The cluster's certificates: the CA with its key, the nodes', the admin's client.pem."""
        return self.directory / "tls"

    def identity(self, name: str, *grants: tuple[str, str]) -> dict[str, str]:
        """Issues a client certificate for identity `name` with the command line and grants it
        each `(resource, permission)` as the admin (client.pem beside ca.pem); returns the
        `cert` and `key` arguments of a client presenting it."""
        self._cli_raw("certs", "client", "--dir", str(self.tls), "--name", name)
        for resource, permission in grants:
            self._cli_raw("--endpoints", ",".join(self.endpoints), "--ca", self.ca,
                          "acl", "grant", name, resource, permission)
        return {"cert": str(self.tls / f"{name}.pem"), "key": str(self.tls / f"{name}-key.pem")}

    def client(self, **options) -> distsync.Client:
        return distsync.Client(self.endpoints, ca=self.ca, **options)

    def async_client(self, **options) -> distsync.AsyncClient:
        return distsync.AsyncClient(self.endpoints, ca=self.ca, **options)

    def env(self) -> dict[str, str]:
        """The environment for helper processes: the command line's variables, which the
        clients fall back to."""
        return dict(os.environ, DISTSYNC_ENDPOINTS=",".join(self.endpoints), DISTSYNC_CA=self.ca)

    def log(self, node: int) -> pathlib.Path:
        return self.directory / f"node-{node}.log"

    def start(self, node: int) -> None:
        peers = ",".join(f"{i}={a}" for i, a in self.addresses.items())
        log = open(self.log(node), "ab")
        self.processes[node] = subprocess.Popen(
            [self.binary, "serve", "--id", str(node), "--listen", self.addresses[node], "--peers", peers,
             "--data-dir", str(self.directory / f"node-{node}"), "--tls-dir", str(self.directory / "tls"),
             "--redis", self.redis.url, *self.node_args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1"),
            preexec_fn=_die_with_parent,
        )

    def kill(self, node: int) -> None:
        """SIGKILLs node `node` and reaps it."""
        process = self.processes.pop(node)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def status(self, node: int) -> dict | None:
        """Node `node`'s own status, or None when it does not answer."""
        try:
            out = self._cli_raw("--endpoints", self.addresses[node], "--ca", self.ca, "status", "--json", timeout=10)
        except AssertionError:
            return None
        statuses = json.loads(out)
        return statuses[0] if statuses and "role" in statuses[0] else None

    def wait_for_leader(self, among: list[int] | None = None, timeout: float = START_TIMEOUT) -> int:
        """Waits until one of `among` (default: all running nodes) is leader and the others
        that run agree; returns its id."""
        nodes = among or sorted(self.processes)

        def settled():
            statuses = [self.status(n) for n in nodes]
            if any(s is None for s in statuses):
                return None
            leaders = {s["id"] for s in statuses if s["role"] == "leader"}
            if len(leaders) == 1 and all(s["leader"] in leaders for s in statuses):
                return leaders.pop()
            return None

        return wait_until(settled, timeout, f"a leader among nodes {nodes}")

    def stop(self, keep: bool = False) -> None:
        for node in list(self.processes):
            self.kill(node)
        if self.redis:
            self.redis.stop()
        if keep or os.environ.get("DISTSYNC_TEST_KEEP"):
            print(f"cluster directory kept: {self.directory}", file=sys.stderr)
        else:
            shutil.rmtree(self.directory, ignore_errors=True)

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        for node in self.ids:
            text = self.log(node).read_text(errors="replace").splitlines() if self.log(node).exists() else []
            parts.append(f"---- node {node} ({self.addresses[node]}), last {lines} lines ----")
            parts.extend(text[-lines:])
        return "\n".join(parts)

    def _serving(self, node: int) -> bool:
        process = self.processes[node]
        if process.poll() is not None:
            raise AssertionError(f"node {node} exited with {process.returncode}:\n{self.log_tails()}")
        return self.status(node) is not None

    def _cli_raw(self, *args: str, timeout: float = 60) -> str:
        done = subprocess.run([self.binary, *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"distsync {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done.stdout


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for name in ("cluster", "own_cluster"):
            cluster = item.funcargs.get(name)
            if isinstance(cluster, Cluster):
                report.sections.append(("distsync node logs", cluster.log_tails()))


@pytest.fixture(scope="session")
def cluster():
    """One three-node cluster (with Redis) shared by the tests that do not break it; tests keep
    apart by unique names (see `unique`)."""
    cluster = Cluster(3)
    yield cluster
    cluster.stop()


@pytest.fixture
def own_cluster():
    """A three-node cluster for one test that kills nodes."""
    cluster = Cluster(3)
    yield cluster
    cluster.stop()


_counter = itertools.count()


@pytest.fixture
def unique(request):
    """Makes names unique to this test and run: unique("jobs") -> "jobs-<test>-<n>-<random>"."""
    tag = f"{request.node.name[:40]}-{uuid.uuid4().hex[:6]}"
    return lambda base: f"{base}-{tag}-{next(_counter)}"


@pytest.fixture
def client(cluster):
    client = cluster.client()
    yield client
    client.close()
