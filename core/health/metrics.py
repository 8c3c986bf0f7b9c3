"""Machine metrics — swap, memory, disk, load/CPU, process count — in one shape for every OS.

Each OS has one command (an argv, no shell) that prints everything at once, and one parser:

- macOS: ``sysctl``, ``vm_stat``, ``df -k /`` and ``top -l 1 -n 0`` joined by ``sh -c`` with a
  fixed script (no user input in it);
- Linux: ``/proc/meminfo``, ``/proc/loadavg``, ``df -k /`` and the number of processes;
- Windows: one PowerShell CIM query printed as JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from core.errors import RemoteError


@dataclass(frozen=True)
class MachineMetrics:
    memory_percent: float | None = None
    swap_used_mb: float | None = None
    swap_total_mb: float | None = None
    disk_percent: float | None = None
    disk_free_gb: float | None = None
    load1: float | None = None
    cpu_percent: float | None = None
    processes: int | None = None

    @property
    def swap_percent(self) -> float | None:
        if self.swap_used_mb is None or not self.swap_total_mb:
            return None
        return round(100 * self.swap_used_mb / self.swap_total_mb, 1)

    def as_json(self) -> dict[str, float | int | None]:
        return {**asdict(self), "swap_percent": self.swap_percent}


_MARK = "@@clawops:"
MACOS_SCRIPT = (
    f"echo {_MARK}swap; sysctl vm.swapusage; echo {_MARK}memsize; sysctl -n hw.memsize; "
    f"echo {_MARK}vmstat; vm_stat; echo {_MARK}df; df -k /; "
    f"echo {_MARK}top; top -l 1 -n 0"
)
LINUX_SCRIPT = (
    f"echo {_MARK}meminfo; cat /proc/meminfo; echo {_MARK}loadavg; cat /proc/loadavg; "
    f"echo {_MARK}df; df -k /; echo {_MARK}ps; ps -e -o pid= | wc -l"
)
WINDOWS_SCRIPT = (
    "$os = Get-CimInstance Win32_OperatingSystem; "
    "$cpu = (Get-CimInstance Win32_Processor | Measure-Object -Property LoadPercentage "
    "-Average).Average; "
    "$disk = Get-CimInstance Win32_LogicalDisk -Filter \"DeviceID='C:'\"; "
    "[pscustomobject]@{TotalVisibleMemorySize=$os.TotalVisibleMemorySize; "
    "FreePhysicalMemory=$os.FreePhysicalMemory; SizeStoredInPagingFiles="
    "$os.SizeStoredInPagingFiles; FreeSpaceInPagingFiles=$os.FreeSpaceInPagingFiles; "
    "CpuLoad=$cpu; DiskSize=$disk.Size; DiskFree=$disk.FreeSpace; "
    "Processes=(Get-Process).Count} | ConvertTo-Json -Compress"
)


def metrics_command(os_name: str) -> list[str]:
    if os_name == "windows":
        return ["powershell", "-NoProfile", "-NonInteractive", "-Command", WINDOWS_SCRIPT]
    return ["sh", "-c", MACOS_SCRIPT if os_name == "macos" else LINUX_SCRIPT]


def parse_metrics(os_name: str, output: str) -> MachineMetrics:
    try:
        if os_name == "windows":
            return parse_windows(output)
        sections = _sections(output)
        return parse_macos(sections) if os_name == "macos" else parse_linux(sections)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise RemoteError(f"cannot read {os_name} metrics: {exc}") from None


def _sections(output: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    name = None
    for line in output.splitlines():
        if line.startswith(_MARK):
            name = line[len(_MARK) :].strip()
            parts[name] = ""
        elif name is not None:
            parts[name] += line + "\n"
    return parts


def _mb(value: str) -> float:
    number, unit = float(value[:-1]), value[-1].upper()
    return number * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]


def parse_df(text: str) -> tuple[float, float]:
    """``df -k /`` (Linux or macOS columns) -> (percent used, GB free)."""
    lines = [line for line in text.splitlines() if line.strip()]
    fields = lines[-1].split()
    # Filesystem, blocks, used, available, capacity/use% come first on both systems.
    used, available = float(fields[2]), float(fields[3])
    percent = float(fields[4].rstrip("%"))
    return percent, round(available / 1024 / 1024, 1) if used >= 0 else 0.0


def parse_macos(sections: dict[str, str]) -> MachineMetrics:
    swap = re.search(r"total = ([\d.]+[KMGT])\s+used = ([\d.]+[KMGT])", sections["swap"])
    page_size = int(re.search(r"page size of (\d+) bytes", sections["vmstat"]).group(1))  # type: ignore[union-attr]
    pages = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^(Pages [^:]+|[^:]+compressor):\s+(\d+)\.", sections["vmstat"], re.M)
    }
    used_pages = (
        pages.get("Pages active", 0)
        + pages.get("Pages wired down", 0)
        + pages.get("Pages occupied by compressor", 0)
    )
    total_bytes = int(sections["memsize"].strip())
    top = sections["top"]
    cpu = re.search(r"CPU usage: [\d.]+% user, [\d.]+% sys, ([\d.]+)% idle", top)
    load = re.search(r"Load Avg: ([\d.]+)", top)
    procs = re.search(r"Processes: (\d+) total", top)
    disk_percent, disk_free = parse_df(sections["df"])
    return MachineMetrics(
        memory_percent=round(100 * used_pages * page_size / total_bytes, 1),
        swap_used_mb=round(_mb(swap.group(2)), 1) if swap else None,
        swap_total_mb=round(_mb(swap.group(1)), 1) if swap else None,
        disk_percent=disk_percent,
        disk_free_gb=disk_free,
        load1=float(load.group(1)) if load else None,
        cpu_percent=round(100 - float(cpu.group(1)), 1) if cpu else None,
        processes=int(procs.group(1)) if procs else None,
    )


def parse_linux(sections: dict[str, str]) -> MachineMetrics:
    info = {
        key.strip(): int(value.split()[0])
        for key, value in (
            line.split(":", 1) for line in sections["meminfo"].splitlines() if ":" in line
        )
    }
    total, available = info["MemTotal"], info.get("MemAvailable", info.get("MemFree", 0))
    swap_total, swap_free = info.get("SwapTotal", 0), info.get("SwapFree", 0)
    disk_percent, disk_free = parse_df(sections["df"])
    return MachineMetrics(
        memory_percent=round(100 * (total - available) / total, 1),
        swap_used_mb=round((swap_total - swap_free) / 1024, 1),
        swap_total_mb=round(swap_total / 1024, 1),
        disk_percent=disk_percent,
        disk_free_gb=disk_free,
        load1=float(sections["loadavg"].split()[0]),
        processes=int(sections["ps"].strip()),
    )


def parse_windows(output: str) -> MachineMetrics:
    data = json.loads(output)
    total_kb, free_kb = float(data["TotalVisibleMemorySize"]), float(data["FreePhysicalMemory"])
    page_total_kb = float(data.get("SizeStoredInPagingFiles") or 0)
    page_free_kb = float(data.get("FreeSpaceInPagingFiles") or 0)
    disk_size, disk_free = float(data["DiskSize"]), float(data["DiskFree"])
    cpu = data.get("CpuLoad")
    return MachineMetrics(
        memory_percent=round(100 * (total_kb - free_kb) / total_kb, 1),
        swap_used_mb=round((page_total_kb - page_free_kb) / 1024, 1),
        swap_total_mb=round(page_total_kb / 1024, 1),
        disk_percent=round(100 * (disk_size - disk_free) / disk_size, 1),
        disk_free_gb=round(disk_free / 1024**3, 1),
        cpu_percent=float(cpu) if cpu is not None else None,
        processes=int(data["Processes"]),
    )
