"""Locks from threads sharing one client: exclusion checked with fencing tokens, ownership per
thread, deadlock and timeout exceptions, shared holds, upgrades, explicit owners."""

import threading
import time

import pytest

import distsync
from conftest import wait_until


class FencedResource:
    """A resource that refuses writes with a token lower than the highest it has seen, and
    notices two writers inside at once."""

    def __init__(self):
        self.guard = threading.Lock()
        self.highest = 0
        self.inside = 0
        self.overlaps = 0
        self.stale = 0
        self.counter = 0

    def write(self, token):
        with self.guard:
            if token < self.highest:
                self.stale += 1
            self.highest = max(self.highest, token)
            self.inside += 1
            if self.inside > 1:
                self.overlaps += 1
        value = self.counter
        time.sleep(0.002)          # widen the window a lost exclusion would show in
        self.counter = value + 1
        with self.guard:
            self.inside -= 1


def test_threads_sharing_a_client_exclude_each_other(client, unique):
    name = unique("counter")
    resource = FencedResource()
    tokens = []
    errors = []

    def worker():
        try:
            for _ in range(15):
                with client.lock(name) as lock:
                    tokens.append(lock.token)
                    resource.write(lock.token)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert resource.overlaps == 0 and resource.stale == 0
    assert resource.counter == 60
    assert len(set(tokens)) == 60, "every hold has its own fencing token"
    assert tokens == sorted(tokens), "tokens increase in the order holds were granted"


def test_one_lock_object_shared_by_threads_keeps_a_hold_per_thread(client, unique):
    lock = client.lock(unique("shared-object"))
    resource = FencedResource()

    def worker():
        for _ in range(5):
            with lock:
                assert lock.held
                resource.write(lock.token)
            assert lock.token is None

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert resource.counter == 15 and resource.overlaps == 0


def test_a_thread_asking_again_for_its_own_lock_gets_already_held(client, unique):
    name = unique("mine")
    with client.lock(name):
        with pytest.raises(distsync.AlreadyHeld) as raised:
            client.lock(name).acquire()
        assert raised.value.name == name
        assert isinstance(raised.value, distsync.Error)
        # Another lock nested inside belongs to the same thread and is granted.
        with client.lock(unique("nested")) as nested:
            assert nested.held


def test_a_deadlock_between_threads_raises_deadlock_error_with_the_cycle(client, cluster, unique):
    first, second = unique("a"), unique("b")
    holding = threading.Barrier(2)
    outcome = {}
    observer = cluster.client()

    def thread_one():
        with client.lock(first):
            holding.wait()
            try:
                with client.lock(second, timeout=30):
                    outcome["one"] = "granted"
            except distsync.Error as error:
                outcome["one"] = error

    one = threading.Thread(target=thread_one)
    one.start()
    with client.lock(second):
        holding.wait()
        # Thread one now waits for `second`; asking for `first` would close the cycle.
        wait_until(lambda: (info := observer.lock_info(second)) and info.waiters, 20, "thread one to wait")
        with pytest.raises(distsync.DeadlockError) as raised:
            client.lock(first, timeout=30).acquire()
    one.join()
    observer.close()
    assert outcome["one"] == "granted", "the other thread got the lock once the cycle was refused"
    error = raised.value
    assert error.name == first
    locks_in_cycle = sorted(lock for _session, _actor, lock in error.cycle)
    assert locks_in_cycle == sorted([first, second])
    assert len({actor for _session, actor, _lock in error.cycle}) == 2, "two threads, two owners"
    assert "deadlock" in str(error)


def test_a_wait_past_the_timeout_raises_lock_timeout_and_holds_nothing(client, cluster, unique):
    name = unique("slow")
    other = cluster.client()
    with other.lock(name):
        started = time.monotonic()
        with pytest.raises(distsync.LockTimeout) as raised:
            with client.lock(name, timeout=0.5):
                pytest.fail("granted while held elsewhere")
        assert time.monotonic() - started >= 0.4
        assert raised.value.name == name
        info = client.lock_info(name)
        assert len(info.holders) == 1 and info.waiters == [], "the timed-out request left no waiter"
    with client.lock(name, timeout=5) as lock:
        assert lock.held
    other.close()


def test_try_acquire_does_not_wait(client, cluster, unique):
    name = unique("try")
    other = cluster.client()
    held = other.lock(name)
    assert held.try_acquire() is True
    attempt = client.lock(name)
    assert attempt.try_acquire() is False
    assert attempt.token is None
    held.release()
    assert attempt.try_acquire() is True
    attempt.release()
    other.close()


def test_shared_holds_coexist_and_exclude_writers(client, cluster, unique):
    name = unique("config")
    other, writer = cluster.client(), cluster.client()
    with client.lock(name, shared=True) as mine, other.lock(name, shared=True) as theirs:
        assert mine.held and theirs.held
        assert writer.lock(name).try_acquire() is False, "exclusive granted beside readers"
        info = client.lock_info(name)
        assert [h.mode for h in info.holders] == ["shared", "shared"]
    assert writer.lock(name).try_acquire() is True
    other.close()
    writer.close()


def test_upgrade_turns_a_shared_hold_exclusive_with_a_higher_token(client, unique):
    lock = client.lock(unique("inventory"), shared=True)
    lock.acquire()
    before = lock.token
    lock.upgrade()
    assert lock.mode == "exclusive"
    assert lock.token > before
    lock.release()
    with pytest.raises(distsync.NotHeld):
        lock.release()


def test_an_explicit_owner_ties_threads_together(client, unique):
    name = unique("actor")
    me = client.owner()
    lock = client.lock(name, owner=me)
    lock.acquire()
    outcome = {}

    def other_thread():
        try:
            client.lock(name, owner=me).acquire()
        except distsync.AlreadyHeld as error:
            outcome["error"] = error

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert isinstance(outcome.get("error"), distsync.AlreadyHeld), "the same owner, not another waiter"
    holder = client.lock_info(name).holders[0]
    assert holder.actor == me.actor
    lock.release()


def test_releasing_what_was_never_acquired_raises_not_held(client, unique):
    with pytest.raises(distsync.NotHeld) as raised:
        client.lock(unique("never")).release()
    assert "acquire it first" in str(raised.value)


def test_bad_lock_arguments_raise_invalid_argument(client):
    with pytest.raises(distsync.InvalidArgument):
        client.lock("").acquire()
    with pytest.raises(distsync.InvalidArgument):
        client.lock("x" * 5000).acquire()
    with pytest.raises(distsync.InvalidArgument):
        client.lock("negative", timeout=-1)
