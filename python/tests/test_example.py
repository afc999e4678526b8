"""The example of the README's Python section, line by line, against a real cluster."""

import asyncio

import distsync
from conftest import REPO


def test_the_blocking_example_works_as_written(cluster):
    handled = []

    def handle(body):
        handled.append(body)

    client = distsync.Client(cluster.endpoints, ca=cluster.ca)

    with client.lock("reports") as lock:          # exclusive; lock.token is the fencing token
        assert isinstance(lock.token, int) and lock.token > 0
        assert lock.held
    assert lock.token is None and not lock.held
    with client.lock("config", shared=True, timeout=5.0) as config:
        assert config.mode == "shared"

    jobs = client.queue("jobs")
    first = jobs.put(b"payload", dedup_id="order-42")
    assert jobs.put(b"payload", dedup_id="order-42") == first   # the retry enqueued nothing
    msg = jobs.get(wait=1.0)                      # None when nothing arrived
    if msg:
        handle(msg.body); msg.ack()
    assert handled == [b"payload"]
    assert jobs.get(wait=0.1) is None

    jobs.put(b"second")
    for msg in jobs.consume():
        handle(msg.body); msg.ack()
        break
    assert handled == [b"payload", b"second"]

    client.cache.set("user:1", b"...", ttl=60)
    assert client.cache.get("user:1") == b"..."
    client.close()


def test_the_asyncio_example_works_as_written(cluster):
    async def main():
        async with distsync.AsyncClient(cluster.endpoints, ca=cluster.ca) as aclient:
            async with aclient.lock("x") as lock:
                assert lock.token > 0
            jobs = aclient.queue("async-jobs")
            await jobs.put(b"payload")
            async for msg in jobs.consume():
                assert msg.body == b"payload"
                await msg.ack()
                break
            await aclient.cache.set("user:2", "Ada", ttl=60)
            return await aclient.cache.get("user:2")

    assert asyncio.run(main()) == b"Ada"


def test_the_worker_pool_example_runs_as_written(cluster, tmp_path):
    import subprocess
    import sys

    example = REPO / "examples" / "python" / "worker_pool.py"
    done = subprocess.run(
        [sys.executable, str(example), "--jobs", "30", "--workers", "3", "--ledger", str(tmp_path / "ledger")],
        capture_output=True, text=True, timeout=300, env=cluster.env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all 30 jobs in the ledger exactly once" in done.stdout
    counts = [int(line.split()[2]) for line in done.stdout.splitlines() if line.startswith("worker-")]
    assert sum(counts) == 30 and len(counts) == 3
    tokens = [int(line.split()[0]) for line in (tmp_path / "ledger").read_text().splitlines()]
    assert tokens == sorted(tokens) and len(set(tokens)) == 30
