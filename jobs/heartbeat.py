"""Heartbeat: a whole-fleet health sweep, written to ``heartbeat-data.json`` for dashboards.

The file is replaced atomically (written to a temporary file in the same directory, fsynced,
then ``os.replace``d), so a dashboard reading it never sees half a file. Its format is stable;
fields may be added, none renamed or removed::

    {
      "generatedAt": "2026-11-25T04:00:00+00:00",   # ISO 8601, UTC
      "node": "macbook",                             # the node that wrote it
      "sweepSeconds": 1.2,
      "machines": [
        {"name": "mini", "reachable": true, "error": "",
         "metrics": {"cpuPercent": 12.0, "memoryPercent": 61.5, "diskPercent": 71.0,
                     "diskFreeGb": 120.4, "swapUsedMb": 512.0, "swapTotalMb": 2048.0,
                     "swapPercent": 25.0, "load1": 1.42},   # null where unknown
         "processCount": 412}                               # null where unknown
      ],
      "services": [
        {"name": "gateway", "machine": "mini", "healthy": true, "detail": "HTTP 200",
         "latencyMs": 3.1}                                  # null without a timed check
      ],
      "gateways": [ ... ]   # the services whose name contains "gateway", same shape
    }

An unreachable machine has ``"reachable": false``, its ``error`` and ``"metrics": null``; its
services are listed unhealthy with the detail "<machine> unreachable". A machine without SSH from
this node has ``"ssh": false`` and no metrics: ``reachable`` says whether one of its services'
HTTP/TCP checks answered, and is ``null`` (unknown) when it has none; those services are listed
by their checks, the others unhealthy with the reason they were not watched.

The run's data is ``{"machines": {name: metrics or null}}`` (``MachineMetrics.as_json`` keys),
which the status report compares between reports for disk and swap trends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from core.errors import StorageError
from core.health import MachineMetrics, MachineReport, ServiceReport, SweepReport
from core.tables import utcnow
from jobs.base import JobContext, JobResult


def output_file(ctx: JobContext) -> Path:
    path = Path(ctx.config.jobs.heartbeat.output_path).expanduser()
    return path if path.is_absolute() else ctx.data_dir / path


def _metrics(metrics: MachineMetrics | None) -> dict[str, float | None] | None:
    if metrics is None:
        return None
    return {
        "cpuPercent": metrics.cpu_percent,
        "memoryPercent": metrics.memory_percent,
        "diskPercent": metrics.disk_percent,
        "diskFreeGb": metrics.disk_free_gb,
        "swapUsedMb": metrics.swap_used_mb,
        "swapTotalMb": metrics.swap_total_mb,
        "swapPercent": metrics.swap_percent,
        "load1": metrics.load1,
    }


def _machine(report: MachineReport) -> dict[str, Any]:
    return {
        "name": report.name,
        "reachable": report.reachable,
        "ssh": not report.no_ssh,
        "error": report.error,
        "metrics": _metrics(report.metrics),
        "processCount": report.metrics.processes if report.metrics else None,
    }


def _detail(report: ServiceReport) -> str:
    if report.skipped:
        return report.error
    parts = []
    if report.check is not None:
        parts.append(report.check.detail)
    if report.status is not None:
        parts.append(report.status.state)
    if report.error:
        parts.append(report.error)
    return "; ".join(parts)


def _service(report: ServiceReport) -> dict[str, Any]:
    return {
        "name": report.service,
        "machine": report.machine,
        "healthy": report.healthy,
        "detail": _detail(report),
        "latencyMs": report.check.latency_ms if report.check else None,
    }


def heartbeat_document(report: SweepReport, node: str) -> dict[str, Any]:
    """The JSON document of the module docstring, for one sweep."""
    services = [_service(s) for s in report.services]
    return {
        "generatedAt": utcnow().isoformat(),
        "node": node,
        "sweepSeconds": report.seconds,
        "machines": [_machine(m) for m in report.machines],
        "services": services,
        "gateways": [s for s in services if "gateway" in s["name"]],
    }


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` whole: temp file in the same dir, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The rename itself is durable only once the directory is synced (POSIX).
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}%"


def machine_line(report: MachineReport) -> str:
    if report.no_ssh:  # watched by its checks: the error says how many answered
        return f"{report.name}: {report.error}"
    if not report.reachable:
        return f"{report.name}: unreachable ({report.error})"
    m = report.metrics
    if m is None:
        return f"{report.name}: no metrics ({report.error})"
    load = "?" if m.load1 is None else f"{m.load1:.2f}"
    procs = "?" if m.processes is None else str(m.processes)
    return (
        f"{report.name}: cpu {_pct(m.cpu_percent)}, mem {_pct(m.memory_percent)}, "
        f"disk {_pct(m.disk_percent)}, swap {_pct(m.swap_percent)}, load {load}, {procs} procs"
    )


async def heartbeat(ctx: JobContext) -> JobResult:
    report = await ctx.sweep()
    document = heartbeat_document(report, ctx.node)
    path = output_file(ctx)
    try:
        await asyncio.to_thread(write_atomically, path, json.dumps(document, indent=2) + "\n")
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    lines = [machine_line(m) for m in report.machines]
    gateways = document["gateways"]
    if gateways:
        healthy = sum(1 for g in gateways if g["healthy"])
        lines.append(f"gateways: {healthy}/{len(gateways)} healthy")
    # A machine without SSH and without checks is unknown (None), not unreachable: no warning.
    unreachable = [m.name for m in report.machines if m.reachable is False]
    return JobResult(
        "warning" if unreachable else "ok",
        "\n".join(lines) or "no machines",
        {"machines": {m.name: m.metrics.as_json() if m.metrics else None
                      for m in report.machines}},
    )  # fmt: skip
