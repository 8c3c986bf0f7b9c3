"""/healthz latency of a real sidecar process with and without 300 slow clients.

    .venv/bin/python bench/slow_clients.py [--slow 300] [--probes 50]

Starts tests/auxil/edgesidecar.py with a soft limit of 256 open files (launchd's default), times
sequential GET /healthz on fresh connections, then opens SLOW connections that each send half a
request and times them again; prints median and max of both and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.auxil.net import free_port  # noqa: E402


def _launchd_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


async def probe(url: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        async with httpx.AsyncClient(timeout=10) as client:
            started = time.perf_counter()
            (await client.get(url + "/healthz")).raise_for_status()
            times.append(time.perf_counter() - started)
    return times


def summary(label: str, times: list[float]) -> float:
    median = statistics.median(times)
    print(f"{label:>24}: median {median * 1000:7.2f} ms, max {max(times) * 1000:7.2f} ms")
    return median


async def measure(port: int, slow_count: int, probes: int) -> None:
    url = f"http://127.0.0.1:{port}"
    quiet = summary("no slow connections", await probe(url, probes))
    slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(slow_count)]
    for _, writer in slow:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: loc")
    loaded = summary(f"{slow_count} slow connections", await probe(url, probes))
    print(f"{'ratio of medians':>24}: {loaded / quiet:.2f}")
    for _, writer in slow:
        writer.close()


def main(slow_count: int, probes: int) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        child = ROOT / "tests" / "auxil" / "edgesidecar.py"
        argv = [sys.executable, str(child), str(port), f"{tmp}/bench.db"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, preexec_fn=_launchd_limit, env=env)
        try:
            assert proc.stdout is not None
            print("child:", proc.stdout.readline().decode().strip(), "(soft limit, cap)")
            asyncio.run(measure(port, slow_count, probes))
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--slow", type=int, default=300)
    parser.add_argument("--probes", type=int, default=50)
    args = parser.parse_args()
    main(args.slow, args.probes)
