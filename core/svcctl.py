"""Running a service manager's commands (launchctl, systemctl), each bounded by a timeout.

A ``Runner`` takes an argv and a timeout and answers a ``Completed``; ``run_command`` is the real
one. It starts the command in its own session so that, on timeout, the whole process group is
killed (a ``systemctl`` waiting on a hung bus, or a shell script's children, cannot outlive it).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core.errors import InstallError

COMMAND_TIMEOUT = 30.0  # seconds for one launchctl/systemctl call


@dataclass(frozen=True)
class Completed:
    """A command's end. ``returncode`` is None when it did not end in time (``stderr`` says)."""

    returncode: int | None
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str], float], Completed]


@dataclass(frozen=True)
class Step:
    """One command; exit codes in ``tolerate`` mean "nothing to do" (e.g. not loaded)."""

    argv: tuple[str, ...]
    tolerate: frozenset[int] = field(default_factory=frozenset)

    def __str__(self) -> str:
        return shlex.join(self.argv)


def run_command(argv: Sequence[str], timeout: float) -> Completed:
    """Run ``argv`` without a shell; kill its process group if it outlives ``timeout``."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except FileNotFoundError:
        return Completed(127, "", f"{argv[0]}: command not found")
    except OSError as exc:
        return Completed(126, "", f"{argv[0]}: {exc.strerror or exc}")
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return Completed(None, "", f"no answer within {timeout:g} s (killed)")
    return Completed(proc.returncode, out, err)


def run_steps(
    steps: Sequence[Step],
    runner: Runner,
    timeout: float,
    say: Callable[[str], None],
    after_failure: str,
) -> None:
    """Run ``steps`` in order; the first failure raises InstallError with its stderr and
    ``after_failure`` (what state that leaves)."""
    for step in steps:
        result = runner(step.argv, timeout)
        if result.returncode == 0:
            say(f"ran: {step}")
            continue
        if result.returncode is not None and result.returncode in step.tolerate:
            say(f"ran: {step} (nothing to stop)")
            continue
        how = "timed out" if result.returncode is None else f"failed (exit {result.returncode})"
        detail = (result.stderr.strip() or result.stdout.strip() or "no output")[-800:]
        raise InstallError(f"`{step}` {how}: {detail}\n{after_failure}")
