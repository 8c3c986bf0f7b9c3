"""Service managers behind one interface: status, start, stop, restart, logs."""

from core.config import ServiceConfig
from core.executors import Executor
from core.services._base import ServiceManager, ServiceStatus, State, check_lines, check_name
from core.services._logs import LogStream, ServiceLogs
from core.services.launchd import Launchd
from core.services.pm2 import PM2
from core.services.process import PlainProcess
from core.services.systemd import Systemd
from core.services.windows import WindowsService

MANAGERS: dict[str, type[ServiceManager]] = {
    "launchd": Launchd,
    "pm2": PM2,
    "systemd": Systemd,
    "windows": WindowsService,
    "process": PlainProcess,
}


def manager_for(service: ServiceConfig, executor: Executor) -> ServiceManager:
    return MANAGERS[service.manager](service, executor)


__all__ = [
    "MANAGERS",
    "LogStream",
    "ServiceLogs",
    "ServiceManager",
    "ServiceStatus",
    "State",
    "check_lines",
    "check_name",
    "manager_for",
]
