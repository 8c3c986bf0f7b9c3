"""Health: service checks, machine metrics, and the concurrent sweep over the fleet."""

from core.health.checks import CheckResult, run_check
from core.health.metrics import MachineMetrics, metrics_command, parse_metrics
from core.health.sweep import MachineDone, MachineReport, ServiceReport, SweepReport, sweep

__all__ = [
    "CheckResult",
    "MachineDone",
    "MachineMetrics",
    "MachineReport",
    "ServiceReport",
    "SweepReport",
    "metrics_command",
    "parse_metrics",
    "run_check",
    "sweep",
]
