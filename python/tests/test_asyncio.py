"""The asyncio flavour: locks owned per task, cancellation withdraws, queues and the cache."""

import asyncio

import pytest

import distsync


def run(coroutine):
    return asyncio.run(coroutine)


def test_tasks_exclude_each_other_and_nested_locks_belong_to_the_task(cluster, unique):
    name = unique("async-counter")

    async def main():
        async with cluster.async_client() as client:
            inside, overlaps, tokens = 0, 0, []

            async def worker():
                nonlocal inside, overlaps
                for _ in range(8):
                    async with client.lock(name) as lock:
                        tokens.append(lock.token)
                        inside += 1
                        overlaps += inside > 1
                        await asyncio.sleep(0.002)
                        inside -= 1

            await asyncio.gather(*(worker() for _ in range(4)))
            assert overlaps == 0
            assert len(set(tokens)) == 32 and tokens == sorted(tokens)

            async with client.lock(name):
                with pytest.raises(distsync.AlreadyHeld):
                    await client.lock(name).acquire()

    run(main())


def test_cancelling_a_waiting_acquire_withdraws_it(cluster, unique):
    name = unique("async-cancel")

    async def main():
        async with cluster.async_client() as holder, cluster.async_client() as waiter:
            lock = holder.lock(name)
            await lock.acquire()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(waiter.lock(name).acquire(), 0.5)
            for _ in range(100):
                info = await holder.lock_info(name)
                if not info.waiters:
                    break
                await asyncio.sleep(0.1)
            assert info.waiters == [], "the cancelled request still waits"
            await lock.release()
            assert await holder.lock_info(name) is None, "the lock went to the cancelled waiter"

    run(main())


def test_timeouts_and_deadlocks_raise_their_exceptions(cluster, unique):
    first, second = unique("async-a"), unique("async-b")

    async def main():
        async with cluster.async_client() as client:
            async with client.lock(first):
                other = cluster.async_client()
                with pytest.raises(distsync.LockTimeout):
                    await other.lock(first, timeout=0.3).acquire()
                await other.close()

            a_holds, b_waits = asyncio.Event(), asyncio.Event()

            async def task_a():
                async with client.lock(first):
                    a_holds.set()
                    await b_waits.wait()
                    # Task b holds `second` and waits for `first`: this closes the cycle.
                    with pytest.raises(distsync.DeadlockError) as raised:
                        await client.lock(second).acquire()
                    return raised.value

            async def task_b():
                await a_holds.wait()
                async with client.lock(second):
                    waiting = asyncio.ensure_future(client.lock(first).acquire())
                    while not (await client.lock_info(first)).waiters:
                        await asyncio.sleep(0.05)
                    b_waits.set()
                    await waiting
                    await client.lock(first).release()  # a different lock object: not held here
                return None

            results = await asyncio.gather(task_a(), task_b(), return_exceptions=True)
            return results

    error, b_result = run(main())
    assert isinstance(error, distsync.DeadlockError), error
    assert sorted(lock for _, _, lock in error.cycle) == sorted([first, second])
    assert isinstance(b_result, distsync.NotHeld), b_result


def test_async_queue_and_cache(cluster, unique):
    name = unique("async-queue")

    async def main():
        async with cluster.async_client() as client:
            queue = client.queue(name)
            ids = await queue.put_batch([b"1", b"2", b"3"])
            got = []
            async for message in queue.consume(prefetch=3):
                got.append(message.id)
                await message.ack()
                if len(got) == 3:
                    break
            assert got == ids
            assert await queue.get(wait=0.1) is None
            stats = await queue.stats()
            assert stats.acked_total == 3
            with pytest.raises(distsync.NoSuchQueue):
                await client.queue(unique("none")).stats()

            key = unique("async-key")
            version = await client.cache.set(key, b"v1", ttl=60)
            assert await client.cache.get_versioned(key) == (b"v1", version)
            assert await client.cache.get_many([key, unique("absent")]) == [b"v1", None]
            assert await client.cache.delete(key) is True
            assert await client.cache.get(key) is None

    run(main())
