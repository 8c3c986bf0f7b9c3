"""Processes of one machine: who is whose parent, and what a few pids run.

Both questions are asked over the machine's executor (so over SSH too) and answered from one
bounded call each: the executor's timeout and output limit hold, and a command line is cut at
``MAX_COMMAND`` characters before anyone shows it.

- ``process_tree``: every pid with its parent (``ps -A -o pid=,ppid=`` on macOS and Linux,
  ``Win32_Process`` on Windows), for ``descendants``;
- ``command_lines``: the command line of a few given pids (``ps -ww -o pid=,args= -p ...``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping

from core.config import MachineConfig
from core.errors import RemoteError
from core.executors import Executor
from core.secrets import BOT_TOKEN, REDACTED, redact_urls

MAX_COMMAND = 300  # characters of a command line kept for display
# The value after an option or variable named like a secret: --token X, --api-key=X, PASSWORD=X.
_SECRET_ARG = re.compile(
    r"((?:--?|\b)[\w-]*(?:token|secret|passw(?:or)?d|api[_-]?key)[\w-]*(?:=|\s+))(?!-)\S+",
    re.IGNORECASE,
)


def _powershell(script: str) -> list[str]:
    return ["powershell", "-NoProfile", "-NonInteractive", "-Command", script]


def tree_command(os_name: str) -> list[str]:
    if os_name == "windows":
        return _powershell(
            "Get-CimInstance Win32_Process | Select-Object ProcessId,ParentProcessId"
            " | ConvertTo-Json -Compress"
        )
    return ["ps", "-A", "-o", "pid=,ppid="]


def lines_command(os_name: str, pids: Collection[int]) -> list[str]:
    ids = sorted({int(p) for p in pids})  # ints only: nothing else reaches the command
    if os_name == "windows":
        where = " OR ".join(f"ProcessId={p}" for p in ids)
        return _powershell(
            f'Get-CimInstance Win32_Process -Filter "{where}"'
            " | Select-Object ProcessId,CommandLine | ConvertTo-Json -Compress"
        )
    return ["ps", "-ww", "-o", "pid=,args=", "-p", ",".join(str(p) for p in ids)]


def _json_items(output: str) -> list[dict[str, object]]:
    data = json.loads(output) if output.strip() else []
    items = data if isinstance(data, list) else [data]
    return [i for i in items if isinstance(i, dict)]


def parse_tree(os_name: str, output: str) -> dict[int, int]:
    """pid -> parent pid."""
    if os_name == "windows":
        return {
            int(str(i["ProcessId"])): int(str(i["ParentProcessId"])) for i in _json_items(output)
        }
    tree: dict[int, int] = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
            tree[int(fields[0])] = int(fields[1])
    return tree


def _cut(text: str) -> str:
    """A command line fit to show in a chat: one line, secrets redacted, at most MAX_COMMAND."""
    text = " ".join(text.split())
    text = _SECRET_ARG.sub(rf"\1{REDACTED}", redact_urls(BOT_TOKEN.sub(REDACTED, text)))
    return text if len(text) <= MAX_COMMAND else text[: MAX_COMMAND - 1] + "…"


def parse_lines(os_name: str, output: str) -> dict[int, str]:
    """pid -> command line (cut at MAX_COMMAND characters)."""
    if os_name == "windows":
        return {
            int(str(i["ProcessId"])): _cut(str(i.get("CommandLine") or ""))
            for i in _json_items(output)
        }
    found: dict[int, str] = {}
    for line in output.splitlines():
        pid, _, args = line.strip().partition(" ")
        if pid.isdigit():
            found[int(pid)] = _cut(args)
    return found


async def process_tree(machine: MachineConfig, executor: Executor) -> dict[int, int]:
    """Every process of ``machine``: pid -> parent pid."""
    result = await executor.run(tree_command(machine.os))
    if not result.ok:
        reason = (result.stderr.strip().splitlines() or ["no answer in time"])[-1]
        raise RemoteError(f"{machine.name}: cannot list processes: {reason}")
    try:
        return parse_tree(machine.os, result.stdout)
    except (ValueError, KeyError, TypeError) as exc:
        raise RemoteError(f"{machine.name}: cannot read the process list: {exc}") from None


async def command_lines(
    machine: MachineConfig, executor: Executor, pids: Collection[int]
) -> dict[int, str]:
    """The command lines of ``pids`` that still run (a pid that ended is left out)."""
    if not pids:
        return {}
    result = await executor.run(lines_command(machine.os, pids))
    # ps exits 1 when none of the pids runs any more: an answer, not a failure.
    if result.timed_out or result.exit_status not in (0, 1):
        reason = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise RemoteError(f"{machine.name}: cannot read command lines: {reason}")
    try:
        return parse_lines(machine.os, result.stdout)
    except (ValueError, KeyError, TypeError) as exc:
        raise RemoteError(f"{machine.name}: cannot read command lines: {exc}") from None


def descendants(tree: Mapping[int, int], roots: Mapping[int, str]) -> dict[int, str]:
    """Each root and every process below it, labelled with its nearest root's label.

    A root inside another root's subtree keeps its own label (and its subtree); pid reuse on
    Windows can make a parent link point anywhere, so every pid is visited once at most.
    """
    children: dict[int, list[int]] = {}
    for pid, parent in tree.items():
        if pid != parent:
            children.setdefault(parent, []).append(pid)
    labels = dict(roots)
    todo = list(roots)
    while todo:
        pid = todo.pop()
        for child in children.get(pid, ()):
            if child not in labels:
                labels[child] = labels[pid]
                todo.append(child)
    return labels
