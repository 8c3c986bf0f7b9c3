"""The fleet: machines and services from the config, with one executor per machine that this
node can run commands on (local, or over SSH). A machine without SSH has none: asking for its
executor raises ``NoSSH``, the one answer every command that needs one gives."""

from __future__ import annotations

from core.config import Config, MachineConfig, ServiceConfig
from core.errors import InputError, NoSSH
from core.executors import Executor, executor_for
from core.secrets import secret_env_names
from core.services import ServiceManager, check_name, manager_for


class Fleet:
    def __init__(self, config: Config, executors: dict[str, Executor] | None = None) -> None:
        self.config = config
        hidden = secret_env_names(config)  # no child process of the node inherits these
        self.executors: dict[str, Executor] = executors or {
            m.name: executor_for(m, hidden) for m in config.machines if m.runs_commands
        }

    async def close(self) -> None:
        for executor in self.executors.values():
            await executor.close()

    def reconfigure(self, config: Config) -> list[Executor]:
        """Take ``config`` (a reload): a machine whose settings and hidden variables are unchanged
        keeps its executor (and its pooled SSH connection); the others get new ones. Returns the
        executors no longer used, for the caller to close once work in flight on them is done."""
        hidden = secret_env_names(config)
        keep = hidden == secret_env_names(self.config)
        old = {m.name: m for m in self.config.machines}
        executors: dict[str, Executor] = {}
        for machine in (m for m in config.machines if m.runs_commands):
            current = self.executors.get(machine.name)
            if keep and current is not None and old.get(machine.name) == machine:
                executors[machine.name] = current
            else:
                executors[machine.name] = executor_for(machine, hidden)
        kept = {id(e) for e in executors.values()}
        retired = [e for e in self.executors.values() if id(e) not in kept]
        self.config, self.executors = config, executors
        return retired

    @property
    def machines(self) -> list[MachineConfig]:
        return list(self.config.machines)

    def machine(self, name: str) -> MachineConfig:
        check_name(name, "machine name")
        found = self.config.machine(name)
        if found is None:
            known = ", ".join(m.name for m in self.config.machines)
            raise InputError(f"no machine {name!r}; known: {known}")
        return found

    def executor(self, machine: str) -> Executor:
        """The executor of ``machine``; ``NoSSH`` when this node cannot run commands there."""
        found = self.machine(machine)
        executor = self.executors.get(found.name)
        if executor is None:
            raise NoSSH(found.name)
        return executor

    def service(self, name: str, machine: str | None = None) -> ServiceConfig:
        """The service called ``name`` (on ``machine`` when several machines have one)."""
        check_name(name)
        if machine is not None:
            self.machine(machine)
        matches = [
            s for s in self.config.services
            if s.name == name and (machine is None or s.machine == machine)
        ]  # fmt: skip
        if not matches:
            where = f" on {machine}" if machine else ""
            raise InputError(f"no service {name!r}{where}")
        if len(matches) > 1:
            machines = ", ".join(s.machine for s in matches)
            raise InputError(f"{name!r} runs on {machines}: say which machine")
        return matches[0]

    def services_on(self, machine: str) -> list[ServiceConfig]:
        return [s for s in self.config.services if s.machine == machine]

    def manager(self, service: ServiceConfig) -> ServiceManager:
        return manager_for(service, self.executor(service.machine))
