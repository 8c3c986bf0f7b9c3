"""Small node apps run under real PM2 (the ``pm2`` fixture's own PM2_HOME and PATH)."""

from __future__ import annotations

from pathlib import Path

from core.config import MachineConfig
from core.executors import LocalExecutor

HERE = MachineConfig(name="here", os="linux", address="127.0.0.1", local=True)
# Exits with status 1 a second after it starts (PM2 starts it again, unless --no-autorestart).
CRASHES_AFTER_A_SECOND = "setTimeout(() => process.exit(1), 1000);\n"


def serves(port: int) -> str:
    """An app that answers every HTTP request on 127.0.0.1:``port`` with "ok"."""
    return f"require('http').createServer((q, s) => s.end('ok')).listen({port}, '127.0.0.1');\n"


async def start_app(folder: Path, name: str, script: str, *flags: str) -> None:
    """Write ``script`` to ``folder`` and start it in PM2 as ``name`` (``flags``: pm2's)."""
    app = folder / f"{name}.js"
    app.write_text(script)
    result = await LocalExecutor(HERE).run(
        ["pm2", "start", str(app), "--name", name, *flags], timeout=60
    )
    assert result.ok, result.stderr


async def start_python_server(name: str, port: int) -> None:
    """Start ``python3 -m http.server PORT`` on 127.0.0.1 in PM2 as ``name``: a service whose
    process is python, not node."""
    argv = ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    result = await LocalExecutor(HERE).run(
        ["pm2", "start", argv[0], "--name", name, "--interpreter", "none", "--", *argv[1:]],
        timeout=60,
    )
    assert result.ok, result.stderr


async def stop_app(name: str) -> None:
    result = await LocalExecutor(HERE).run(["pm2", "stop", name], timeout=60)
    assert result.ok, result.stderr
