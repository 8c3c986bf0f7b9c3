"""``clawops agent``: load the config, refuse without a token, serve until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from agent.config import load_agent_config
from agent.fleet import Fleet
from agent.server import make_app
from core.httpedge import WILDCARD_BINDS
from core.httplimits import EdgeServer

log = logging.getLogger("clawops.agent")


async def serve(config_path: str | Path) -> None:
    config = load_agent_config(config_path)
    token = config.token()  # StartupRefused before anything is bound or started
    hosts = [*config.allowed_hosts, config.host]
    app = make_app(Fleet(config), token, hosts, any_ip=config.host in WILDCARD_BINDS)
    server = EdgeServer(app, config.host, config.port, config.limits)
    try:
        await server.start()  # also raises the open-file limit
        log.info("agent listening on %s:%d (%d claws max, ports %s)",
                 config.host, config.port, config.max_claws, config.port_range)  # fmt: skip
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("agent stopping: stopping every gateway")
    finally:
        await server.stop()


def run(config_path: str | Path) -> int:
    asyncio.run(serve(config_path))
    return 0
