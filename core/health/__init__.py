"""Health: service checks, machine metrics, the concurrent sweep over the fleet, and verified
restarts."""

from core.health.checks import CheckResult, run_check
from core.health.metrics import MachineMetrics, metrics_command, parse_metrics
from core.health.restart import Verdict, restart_verified, watch
from core.health.sweep import MachineDone, MachineReport, ServiceReport, SweepReport, sweep

__all__ = [
    "CheckResult",
    "MachineDone",
    "MachineMetrics",
    "MachineReport",
    "ServiceReport",
    "SweepReport",
    "Verdict",
    "metrics_command",
    "parse_metrics",
    "restart_verified",
    "run_check",
    "sweep",
    "watch",
]
