"""Locks across processes (multiprocessing), Ctrl-C during a blocking wait, and fork()."""

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import distsync
from conftest import read_line, wait_until


def fenced_increments(args):
    """One worker process: its own client, `rounds` read-modify-writes of a shared file under
    the lock. The file holds the counter and the highest fencing token written so far."""
    endpoints, ca, name, path, rounds = args
    client = distsync.Client(endpoints, ca=ca)
    tokens, stale = [], 0
    for _ in range(rounds):
        with client.lock(name) as lock:
            with open(path, "r+") as shared:
                counter, highest = map(int, shared.read().split())
                if lock.token <= highest:
                    stale += 1
                time.sleep(0.003)          # widen the window a lost exclusion would show in
                shared.seek(0)
                shared.write(f"{counter + 1} {lock.token}\n")
                shared.truncate()
            tokens.append(lock.token)
    client.close()
    return tokens, stale


def test_processes_exclude_each_other_with_increasing_fencing_tokens(cluster, unique, tmp_path):
    # The default start method on Linux is fork: the children inherit this process, whose
    # clients (the session fixture's) they must not use, and make their own.
    assert multiprocessing.get_start_method() == "fork"
    path = tmp_path / "shared"
    path.write_text("0 0\n")
    name = unique("cross-process")
    with multiprocessing.Pool(3) as pool:
        results = pool.map(fenced_increments, [(cluster.endpoints, cluster.ca, name, str(path), 12)] * 3)
    counter, _ = map(int, path.read_text().split())
    assert counter == 36, "an increment was lost: two processes were inside at once"
    assert all(stale == 0 for _, stale in results), "a holder saw a token not above the last one written"
    tokens = [token for worker_tokens, _ in results for token in worker_tokens]
    assert len(set(tokens)) == 36


WAITER = textwrap.dedent(
    """
    import sys, time
    import distsync
    client = distsync.Client()            # DISTSYNC_ENDPOINTS, DISTSYNC_CA
    print("ready", flush=True)
    try:
        client.lock(sys.argv[1]).acquire()
        print("granted", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    time.sleep(120)                       # stay alive, session open
    """
)


def test_ctrl_c_interrupts_a_lock_wait_and_leaves_no_waiter_behind(cluster, client, unique):
    name = unique("interrupted")
    holder = client.lock(name)
    holder.acquire()
    waiter = subprocess.Popen([sys.executable, "-c", WAITER, name], stdout=subprocess.PIPE, text=True,
                              env=cluster.env())
    try:
        assert read_line(waiter, 30) == "ready"
        wait_until(lambda: (info := client.lock_info(name)) and len(info.waiters) == 1, 20, "the waiter to queue")
        waiter.send_signal(signal.SIGINT)
        assert read_line(waiter, 10) == "interrupted"
        # The interrupted request was withdrawn while its process (and session) lives on.
        wait_until(lambda: client.lock_info(name).waiters == [], 10, "the withdrawn request to leave")
        holder.release()
        assert client.lock_info(name) is None, "the lock went to the interrupted waiter"
        assert waiter.poll() is None
        with client.lock(name, timeout=5) as again:
            assert again.held
    finally:
        waiter.kill()
        waiter.wait()


FORKER = textwrap.dedent(
    """
    import os
    import distsync
    client = distsync.Client()
    client.cache.set("fork-key", "from the parent")
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            client.cache.get("fork-key")
            code = 3                      # silently reused: wrong
        except distsync.ForkError as error:
            if "create a new client in the child" not in str(error):
                code = 4
        fresh = distsync.Client()
        if fresh.cache.get("fork-key") != b"from the parent":
            code = 5
        with fresh.lock("fork-lock") as lock:
            if not lock.held:
                code = 6
        fresh.close()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print("child", os.waitstatus_to_exitcode(status), flush=True)
    print("parent", client.cache.get("fork-key").decode(), flush=True)
    """
)


def test_a_client_made_before_fork_refuses_the_child_which_makes_its_own(cluster):
    done = subprocess.run([sys.executable, "-c", FORKER], capture_output=True, text=True, timeout=120,
                          env=cluster.env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["child 0", "parent from the parent"], done.stdout + done.stderr
