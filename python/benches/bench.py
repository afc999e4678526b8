"""Throughput of the Python SDK against a running cluster, to compare with `distsync bench`.

    python python/benches/bench.py --threads 1 --duration 5
    python python/benches/bench.py --threads 16 --duration 5

Endpoints and CA come from DISTSYNC_ENDPOINTS / DISTSYNC_CA (default: the `distsync dev`
cluster). Prints one JSON line per operation: operations per second and latency percentiles,
measured in closed loops by `--threads` threads sharing one client.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid

import distsync


def measure(name: str, threads: int, duration: float, operation) -> dict:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop = time.monotonic() + duration

    def loop(index: int) -> None:
        mine = latencies[index]
        while time.monotonic() < stop:
            started = time.perf_counter()
            operation(index)
            mine.append(time.perf_counter() - started)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - began
    every = sorted(latency for mine in latencies for latency in mine)
    pick = lambda q: round(every[min(len(every) - 1, int(q * len(every)))] * 1000, 3)  # noqa: E731
    return {"op": name, "threads": threads, "ops": len(every), "ops_per_s": round(len(every) / elapsed),
            "p50_ms": pick(0.5), "p99_ms": pick(0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    endpoints = os.environ.get("DISTSYNC_ENDPOINTS", "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103")
    client = distsync.Client(endpoints, ca=os.environ.get("DISTSYNC_CA", ".distsync-dev/tls/ca.pem"))
    run = uuid.uuid4().hex[:8]
    keys = [f"bench-{run}-{i}" for i in range(args.threads)]
    for key in keys:
        client.cache.set(key, b"x" * 100)
    queue = client.queue(f"bench-{run}")
    results = [
        measure("cache.get", args.threads, args.duration, lambda i: client.cache.get(keys[i])),
        measure("cache.get(local)", args.threads, args.duration, lambda i: client.cache.get(keys[i], local=True)),
        measure("cache.set", args.threads, args.duration, lambda i: client.cache.set(keys[i], b"y" * 100)),
        measure("queue.put", args.threads, args.duration, lambda i: queue.put(b"z" * 100)),
        measure("lock acquire+release", args.threads, args.duration,
                lambda i: client.lock(f"bench-{run}-{i}").acquire().release()),
    ]
    queue.delete()
    client.close()
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
