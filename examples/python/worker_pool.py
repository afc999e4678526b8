"""A worker pool sharing a job queue and a lock.

A producer enqueues jobs (each with a dedup id, so a retried put cannot enqueue it twice);
worker processes take them from the queue, and each job appends one line to a ledger file under
the distributed lock "ledger", passing the lock's fencing token along. The ledger refuses a token
lower than the last one it accepted, which is what stops a worker that lost the lock (a long
pause, a partition) from writing late. Every job is acked after it is written, so a worker that
crashes mid-job leaves it to be delivered again.

Run it against the README's local cluster (`distsync dev`):

    python examples/python/worker_pool.py --jobs 50 --workers 4

It prints what each worker did and checks that every job reached the ledger exactly once.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import uuid

import distsync

DEV_ENDPOINTS = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
DEV_CA = ".distsync-dev/tls/ca.pem"


def connect(args) -> distsync.Client:
    return distsync.Client(args.endpoints.split(","), ca=args.ca)


def append_to_ledger(path: str, token: int, line: str) -> None:
    """The protected resource: refuses writes fenced with an older token."""
    with open(path, "a+") as ledger:
        ledger.seek(0)
        lines = ledger.read().splitlines()
        last_token = int(lines[-1].split()[0]) if lines else 0
        if token <= last_token:
            raise RuntimeError(f"stale fencing token {token} (the ledger has seen {last_token})")
        ledger.write(f"{token} {line}\n")


def worker(args, number: int) -> int:
    """Takes jobs until the queue stays empty for a second; returns how many it did."""
    done = 0
    with connect(args) as client:        # one client per process, made after the fork
        jobs = client.queue(args.queue)
        while (job := jobs.get(wait=1.0)) is not None:
            with client.lock("ledger", timeout=30) as lock:
                append_to_ledger(args.ledger, lock.token, f"worker-{number} {job.body.decode()}")
            job.ack()
            done += 1
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", default=os.environ.get("DISTSYNC_ENDPOINTS", DEV_ENDPOINTS))
    parser.add_argument("--ca", default=os.environ.get("DISTSYNC_CA", DEV_CA))
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--queue", default=f"jobs-{uuid.uuid4().hex[:8]}")
    parser.add_argument("--ledger", default=os.path.join(tempfile.mkdtemp(), "ledger"))
    args = parser.parse_args()

    with connect(args) as client:
        jobs = client.queue(args.queue)
        for n in range(args.jobs):
            jobs.put(f"job-{n}".encode(), dedup_id=f"{args.queue}/job-{n}")

    with multiprocessing.Pool(args.workers) as pool:
        counts = pool.starmap(worker, [(args, n) for n in range(args.workers)])
    for n, count in enumerate(counts):
        print(f"worker-{n} did {count} jobs")

    with open(args.ledger) as ledger:
        written = [line.split()[2] for line in ledger]
    expected = {f"job-{n}" for n in range(args.jobs)}
    if sorted(written) != sorted(expected):
        print(f"ledger mismatch: {len(written)} lines for {len(expected)} jobs", file=sys.stderr)
        return 1
    print(f"all {args.jobs} jobs in the ledger exactly once ({args.ledger})")
    with connect(args) as client:
        client.queue(args.queue).delete()
    return 0


if __name__ == "__main__":
    sys.exit(main())
