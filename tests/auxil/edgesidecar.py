"""A real sidecar in its own process: ``python edgesidecar.py PORT SQLITE_PATH``.

Prints one line ``ready SOFT_LIMIT CAP`` once it listens (the open-file soft limit after the edge
raised it, and the connection cap in force), then serves until killed. The slow-client tests and
bench/slow_clients.py start it with a low RLIMIT_NOFILE, as launchd would.
"""

from __future__ import annotations

import asyncio
import resource
import sys

from core.db import Database
from core.statuslog import StatusLog
from proxy.sidecar import Sidecar, SidecarState, create_app


async def main(port: int, path: str) -> None:
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.upgrade()
    statuslog = StatusLog(db, "edge-child")
    await statuslog.start()
    state = SidecarState(statuslog=statuslog, node="edge-child")
    sidecar = Sidecar(create_app(state), "127.0.0.1", port)
    await sidecar.start()
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    print(f"ready {soft} {sidecar.tracker.cap}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
