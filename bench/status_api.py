"""Throughput of POST /api/log (durable) against the same app answering a no-op handler.

    .venv/bin/python bench/status_api.py [--seconds 5] [--concurrency 64] [--database URL]

The sidecar runs in a child process (as `clawops run` would), with the real middlewares; the
no-op route is added to that same app and answers 201 without storing anything. A load
generator in this process (aiohttp, keep-alive, N concurrent posters) drives each route for the
same time, and the script prints both rates and their ratio. Every 201 of the durable route is
committed before it is answered (SQLite WAL, synchronous=FULL), so the ratio is the cost of
durability; the script also checks afterwards that the database holds every acknowledged entry.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BODY = {"jobId": "bench", "status": "ok", "message": "Cleaned 5 orphans"}


async def serve(port: int, url: str) -> None:
    from aiohttp import web

    from core.db import Database
    from core.statuslog import StatusLog
    from proxy.sidecar import Sidecar, SidecarState, create_app

    db = Database(url)
    await db.upgrade()
    log = StatusLog(db, "bench")
    await log.start()
    app = create_app(SidecarState(statuslog=log, node="bench"))

    async def noop(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"id": 0}, status=201)

    app.router.add_post("/bench/noop", noop)
    sidecar = Sidecar(app, "127.0.0.1", port)
    await sidecar.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def drive(url: str, seconds: float, concurrency: int) -> tuple[float, int]:
    """Requests per second answered 201 at ``url`` during ``seconds``; also the count."""
    done = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + seconds

        async def poster() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with session.post(url, json=BODY) as response:
                    if response.status != 201:
                        raise SystemExit(f"{url} answered {response.status}")
                    await response.read()
                    done += 1

        started = time.perf_counter()
        await asyncio.gather(*(poster() for _ in range(concurrency)))
        return done / (time.perf_counter() - started), done


async def count_rows(url: str) -> int:
    from sqlalchemy import func, select

    from core.db import Database
    from core.tables import status_log

    db = Database(url)
    try:
        async with db.connect() as conn:
            query = select(func.count()).select_from(status_log)
            return int((await conn.execute(query)).scalar_one())
    finally:
        await db.close()


async def main(args: argparse.Namespace) -> None:
    from tests.auxil.net import free_port

    port = free_port()
    child = subprocess.Popen(  # noqa: ASYNC220 - started once, before any measuring
        [sys.executable, __file__, "--serve", str(port), "--database", args.database],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("the sidecar did not start")
        base = f"http://127.0.0.1:{port}"
        await drive(f"{base}/bench/noop", 1.0, args.concurrency)  # warm-up
        await drive(f"{base}/api/log", 1.0, args.concurrency)
        before = await count_rows(args.database)
        noop, _ = await drive(f"{base}/bench/noop", args.seconds, args.concurrency)
        durable, acknowledged = await drive(f"{base}/api/log", args.seconds, args.concurrency)
        stored = await count_rows(args.database) - before
    finally:
        child.terminate()
        child.wait()
    print(f"concurrency {args.concurrency}, {args.seconds:g} s per route, database {args.database}")
    print(f"no-op handler:          {noop:8.0f} req/s")
    print(
        f"POST /api/log, durable: {durable:8.0f} req/s "
        f"({acknowledged} acknowledged, {stored} stored)"
    )
    print(f"ratio durable/no-op:    {durable / noop:8.2f}")
    if stored != acknowledged:
        raise SystemExit("MISMATCH: acknowledged entries are missing from the database")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--database", help="SQLAlchemy URL (default: SQLite in a temp dir)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.database))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            args.database = args.database or f"sqlite+aiosqlite:///{tmp}/bench.db"
            os.environ.setdefault("PYTHONUNBUFFERED", "1")
            asyncio.run(main(args))
