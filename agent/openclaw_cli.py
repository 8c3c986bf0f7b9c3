"""Running the gateway's own CLI (``openclaw backup …``, ``openclaw devices …``) for a claw.

Always argv (never a shell), with the claw's HOME and environment so the CLI finds the claw's
config and token, in its own process group, and bounded: a CLI that does not finish in time is
killed with everything it started. ``--json`` answers are read with ``json_object``; why a run
failed with ``cli_reason``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from core.errors import RemoteError


class CliFailed(RemoteError):
    """The openclaw CLI could not be run, did not finish in time, or answered nonsense."""


async def run_cli(
    argv: list[str], env: dict[str, str], cwd: Path, timeout: float
) -> tuple[int, str, str]:
    """Run the CLI; ``(returncode, stdout, stderr)``. Killed (group and all) after ``timeout``."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise CliFailed(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise CliFailed(f"{' '.join(argv[-2:])} did not finish within {timeout:g}s") from None
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


def json_object(text: str, what: str) -> dict[str, Any]:
    """The JSON object a ``--json`` run printed (after any banner lines)."""
    start = text.find("{")
    try:
        value = json.loads(text[start:]) if start >= 0 else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise CliFailed(f"openclaw {what} answered no JSON object")
    return value


def cli_reason(out: str, err: str) -> str:
    """Why the CLI failed: its --json error message, else its ``Reason:`` line, else the last
    line it wrote (at most 300 characters)."""
    with contextlib.suppress(ValueError, KeyError, TypeError):
        message = json.loads(out[out.find("{") :])["error"]["message"]
        if isinstance(message, str) and message:
            return message[:300]
    lines = [line.strip() for line in (err or out).splitlines() if line.strip()]
    reasons = [line.split("Reason:", 1)[1].strip() for line in lines if "Reason:" in line]
    return (reasons or lines or ["no output"])[-1][:300]
