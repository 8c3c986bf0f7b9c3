"""What ``/kill`` never ends, each with its reason.

On one machine a port is guarded when it is (first match names the reason):

1. one of this node's own ports (its sidecar; the local Bot API while it serves the bot), on the
   machine the node runs on: the ``local`` machine, one whose address is a loopback address,
   or the sidecar's bind address;
2. the port of a Mac Mini's clawops agent (the ``mac_minis`` inventory) that runs on this
   machine: its agent URL's host or its hostname is the machine's address, SSH host or name
   (a loopback agent URL counts on the node's machine);
3. the machine's SSH port (``ssh.port``, the way clawops reaches it);
4. in ``protected_ports``, the global list or the machine's own.

Whatever the port, a holder that is this node's own process is refused too (on its machine).
The refusal comes before any confirmation and again right before the signal.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from core.config import Config, MachineConfig
from core.errors import InputError
from core.minis import Mini
from core.ports import Listener

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def node_machine(config: Config, machine: MachineConfig) -> bool:
    """Whether the node itself runs on ``machine``."""
    return machine.local or is_loopback(machine.address) or machine.address == config.sidecar.host


def agent_port(url: str) -> int | None:
    parts = urlsplit(url)
    try:
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None


def _agent_here(mini: Mini, hosts: set[str], ours: bool) -> bool:
    host = (urlsplit(mini.agent_url).hostname or "").lower()
    return host in hosts or mini.hostname.lower() in hosts or (ours and is_loopback(host))


@dataclass(frozen=True)
class KillGuard:
    """The guarded ports of one machine (port -> what it is) and the pid never to signal."""

    machine: MachineConfig
    ports: Mapping[int, str]
    node_pid: int | None  # this node's pid, when it runs on this machine

    def check_port(self, port: int) -> None:
        reason = self.ports.get(port)
        if reason is not None:
            raise InputError(f"{self.machine.name}:{port} is {reason}; refusing to end it")

    def check_holders(self, held: list[Listener]) -> None:
        if self.node_pid is not None and any(h.pid == self.node_pid for h in held):
            port = held[0].port
            raise InputError(
                f"{self.machine.name}:{port} is held by this node's own process "
                f"(pid {self.node_pid}); refusing to end it"
            )


def kill_guard(
    config: Config,
    machine: MachineConfig,
    *,
    node_ports: Mapping[int, str],
    minis: Iterable[Mini],
    node_pid: int,
) -> KillGuard:
    """What ``/kill`` must leave alone on ``machine``; ``node_ports``: port -> what it is."""
    ports: dict[int, str] = {}
    for port in config.protected_ports:
        ports[port] = "a protected port (protected_ports)"
    for port in machine.protected_ports:
        ports[port] = f"a protected port of {machine.name} (machines.protected_ports)"
    if machine.ssh is not None:
        ports[machine.ssh.port] = f"{machine.name}'s SSH port"
    ours = node_machine(config, machine)
    hosts = {machine.address.lower(), machine.name.lower()}
    if machine.ssh is not None:
        hosts.add(machine.ssh.host.lower())
    for mini in minis:
        agent = agent_port(mini.agent_url)
        if agent is not None and _agent_here(mini, hosts, ours):
            ports[agent] = f"the clawops agent of Mini {mini.hostname}"
    if ours:
        ports.update(node_ports)
    return KillGuard(machine, ports, node_pid if ours else None)
