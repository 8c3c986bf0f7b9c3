"""Concurrent claw provisioning against stand-in agents with a fixed latency.

    .venv/bin/python bench/provision.py [--n 50 100] [--latency 0.05] [--minis 5] [--pg URL]

For each backend (SQLite in a temp dir; PostgreSQL too when the admin URL answers: a throw-away
database is created and dropped) and each N, the script starts ``--minis`` stand-in agents on
loopback that answer every call after ``--latency`` seconds, adds the Minis with room for N
claws in all, and runs N ``Claws.provision`` calls at once. A provision makes two agent calls
(POST /claws, then one GET status that finds the gateway ready), so no implementation can beat
N provisions in 2 x latency: that is the ideal bound printed beside the measured rate, with
their ratio. The invariants are checked and printed after each run (every claw active, no two
claws on one (Mini, port), no Mini over capacity); the script exits 1 if one is violated.
Buckets are left out (no [claws.r2]): the figure is the node's own overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
AGENT_CALLS = 2  # POST /claws + GET /claws/{id}/status


async def run(url: str, n: int, minis: int, latency: float) -> tuple[float, list[str]]:
    """Provisions per second for ``n`` at once, and the invariant violations found."""
    import os

    from core.claws import Claws
    from core.config import OrgConfig
    from core.crypto import Keyring, generate_key
    from core.db import Database
    from core.minis import Minis
    from core.orgs import sync_orgs
    from tests.auxil.fakeagent import FakeAgent

    db = Database(url)
    await db.upgrade()
    agents = [
        await FakeAgent(latency=latency, port_low=20000, port_high=20999).start()
        for _ in range(minis)
    ]
    os.environ["BENCH_AGENT_TOKEN"] = agents[0].token
    try:
        await sync_orgs(db, [OrgConfig(slug="bench", name="Bench")])
        inventory = Minis(db)
        capacity = math.ceil(n / minis)
        for i, agent in enumerate(agents):
            await inventory.add(
                f"mini-{i}", agent.url, ports="20000-20999", capacity=capacity,
                agent_token_env="BENCH_AGENT_TOKEN",
            )  # fmt: skip
        claws = Claws(db, Keyring.parse(generate_key()), provision_timeout=30, poll_interval=0.01)
        started = time.perf_counter()
        results = await asyncio.gather(
            *(claws.provision("bench", f"c{i}") for i in range(n)), return_exceptions=True
        )
        elapsed = time.perf_counter() - started
        problems = [f"provision failed: {r}" for r in results if isinstance(r, BaseException)]
        placed = [(c.mini, c.mini_port) for c in await claws.list("bench")]
        if len(placed) != n or any(c.status != "active" for c in await claws.list("bench")):
            problems.append(f"{len(placed)} claws stored for {n} provisions, not all active")
        if len(set(placed)) != len(placed):
            problems.append("two claws share one (Mini, port)")
        for mini in await inventory.list():
            if mini.used > mini.capacity:
                problems.append(f"{mini.hostname} holds {mini.used} > capacity {mini.capacity}")
        held = sum(len(a.claws) for a in agents)
        if held != n:
            problems.append(f"the agents hold {held} claws, not {n}")
        return n / elapsed, problems
    finally:
        for agent in agents:
            await agent.stop()
        await db.close()


def pg_database(admin: str) -> tuple[str, str] | None:
    """A fresh database on ``admin``'s server (URL, name), or None when none is reachable."""
    import psycopg

    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            name = f"clawops_bench_{uuid.uuid4().hex[:12]}"
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL not reachable at {admin}: skipped ({str(exc).strip()[:80]})")
        return None
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}", name


def drop(admin: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(args: argparse.Namespace) -> int:
    ideal_per_n = AGENT_CALLS * args.latency
    print(
        f"{args.minis} stand-in agents, {args.latency * 1000:g} ms per agent call, "
        f"{AGENT_CALLS} calls per provision: ideal = N / {ideal_per_n:g} s"
    )
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("sqlite", n) for n in args.n]
        if not args.no_pg:
            runs += [("postgresql", n) for n in args.n]
        for backend, n in runs:
            url, name = f"sqlite+aiosqlite:///{tmp}/bench-{n}.db", None
            if backend == "postgresql":
                made = pg_database(args.pg)
                if made is None:
                    break
                url, name = made
            try:
                rate, problems = asyncio.run(run(url, n, args.minis, args.latency))
            finally:
                if name:
                    drop(args.pg, name)
            ideal = n / ideal_per_n
            verdict = "OK" if not problems else "VIOLATED: " + "; ".join(problems[:3])
            print(
                f"{backend:10} N={n:4d}: {rate:7.1f} provisions/s, ideal {ideal:7.1f}/s, "
                f"ratio {rate / ideal:5.2f}; invariants (all active, distinct (mini, port), "
                f"capacity respected, agents hold N): {verdict}"
            )
            failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per agent call")
    parser.add_argument("--minis", type=int, default=5)
    parser.add_argument("--pg", default=PG_ADMIN, help="PostgreSQL admin URL")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    sys.exit(main(parser.parse_args()))
