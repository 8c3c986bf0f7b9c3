"""Time to 503 with a silent database, against the configured ``[database] timeout``.

    .venv/bin/python bench/silent_db.py [--timeouts 10,1] [--admin postgresql://postgres@127.0.0.1:5432/postgres]

For each timeout: a throw-away PostgreSQL database is reached through a loopback TCP proxy
(tests/auxil/tcpproxy.py); the sidecar (status log, /healthz probe) takes a first entry, then the
proxy goes silent (connections stay open, no byte gets through) and the script times
``POST /api/log`` and ``GET /healthz`` until their 503. It prints each time and its ratio to the
timeout (1.0 is the bound; a frozen node would never answer).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ENTRY = {"jobId": "bench", "status": "ok", "message": "silent database"}


async def measure(url: str, timeout: float) -> tuple[float, float]:
    from core.db import Database, DatabaseProbe
    from core.statuslog import StatusLog
    from proxy.sidecar import Sidecar, SidecarState, create_app
    from tests.auxil.tcpproxy import TcpProxy, through

    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    db = Database(through(url, proxy), timeout=timeout)
    log = StatusLog(db, "bench")
    await log.start()
    state = SidecarState(statuslog=log, node="bench", database=DatabaseProbe(db, max_age=0))
    sidecar = Sidecar(create_app(state), "127.0.0.1", 0)
    await sidecar.start()
    try:
        async with httpx.AsyncClient(base_url=sidecar.url, timeout=timeout * 10) as client:
            assert (await client.post("/api/log", json=ENTRY)).status_code == 201
            proxy.silence()
            times = []
            for method, path in (("POST", "/api/log"), ("GET", "/healthz")):
                started = time.perf_counter()
                response = await client.request(method, path, json=ENTRY)
                times.append(time.perf_counter() - started)
                assert response.status_code == 503, response.text
            return times[0], times[1]
    finally:
        proxy.resume()
        await sidecar.stop()
        await log.stop()
        await db.close()
        await proxy.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeouts", default="10,1")
    parser.add_argument("--admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    from core.db import Database

    name = f"clawops_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(args.admin, autocommit=True, connect_timeout=3)
    admin.execute(f'CREATE DATABASE "{name}"')
    base = args.admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    url = f"{base}/{name}"
    try:
        direct = Database(url)
        await direct.upgrade()
        await direct.close()
        for timeout in (float(t) for t in args.timeouts.split(",")):
            post, health = await measure(url, timeout)
            print(
                f"timeout {timeout:g}s: POST /api/log 503 after {post:.2f}s "
                f"(ratio {post / timeout:.2f}), /healthz 503 after {health:.2f}s "
                f"(ratio {health / timeout:.2f})"
            )
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    asyncio.run(main())
