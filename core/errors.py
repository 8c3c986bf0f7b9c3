"""The clawops error hierarchy.

Every error that crosses a package boundary is one of these. Foreign exceptions (pydantic,
SQLAlchemy, aiohttp, asyncssh, botocore, ...) are translated at the boundary into the most
specific class we have, so callers never catch a library's exception type::

    ClawopsError
    ├── ConfigError            the config file is missing, unreadable or invalid (.problems)
    ├── StartupRefused         the node will not start in this configuration (e.g. an open
    │                          sidecar without a token)
    ├── StorageError           the database could not be reached or a write failed
    │   └── DatabaseUnavailable  ... it did not answer in time, or the link to it is down
    ├── Unavailable            a dependency or feature is not available right now (e.g. backups
    │   │                      without S3 credentials)
    │   └── NoSSH              ... commands cannot run on a machine this node has no SSH to (its
    │                          config has no [machines.ssh]); it is only watched by its checks
    ├── InstallError           `clawops service` cannot install, remove or inspect the service
    │                          (a manager command failed or timed out, a value cannot be written
    │                          safely, the platform is not supported)
    ├── InputError             a request, command or argument is malformed; nothing was changed
    │   ├── NotFound           ... it names something that does not exist (HTTP 404)
    │   └── Conflict           ... it clashes with the current state (HTTP 409)
    └── RemoteError            a remote system (sidecar, SSH host, agent) failed or refused
        └── Unreachable        ... could not be reached at all

core/httpedge.py maps this tree to HTTP statuses, once, for the sidecar and the agent.

Messages are written to be read on a phone screen: short, specific, no stack traces.
"""

from __future__ import annotations

from dataclasses import dataclass


class ClawopsError(Exception):
    """Base class of every clawops error."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where (a dotted TOML key), what, and what is allowed."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


class ConfigError(ClawopsError):
    """The config is invalid; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[Problem], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s){where}:\n{lines}")


class StartupRefused(ClawopsError):
    """The node refuses to start in this configuration; the message says why and what to do."""


class StorageError(ClawopsError):
    """The database could not be reached, or a write did not complete."""


class DatabaseUnavailable(StorageError):
    """The database did not answer within its timeout, refused the connection, or dropped it.

    Transient by nature: the same call may succeed once the database is back.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"database unavailable: {reason}")


class InputError(ClawopsError):
    """Malformed input (a request body, a command argument); nothing was changed."""


class NotFound(InputError):
    """The request names something that does not exist (a lease, a claw, a resource)."""


class Conflict(InputError):
    """The request clashes with the current state (a port in use, a full agent)."""


class Unavailable(ClawopsError):
    """Something the request needs is not available right now; asking later may work."""


class InstallError(ClawopsError):
    """``clawops service`` could not do its work; the message says what was written and what to
    do next (a failed ``launchctl``/``systemctl`` leaves the written files in place)."""


class RemoteError(ClawopsError):
    """A remote system answered with a failure."""


class Unreachable(RemoteError):
    """A remote system could not be reached at all (refused, timed out, no route)."""


class NoSSH(Unavailable):
    """A command was asked of a machine this node cannot run commands on: it is not local and
    its config has no ``[machines.ssh]`` (the seed's Mac Mini cannot SSH to the MacBook).

    Not transient, unlike its parent: it lasts until the config changes. Such a machine is
    watched by its services' HTTP/TCP checks and the peer API, never reported down for this.
    """

    def __init__(self, machine: str) -> None:
        self.machine = machine
        super().__init__(
            f"{machine} has no SSH from this node ([machines.ssh] is not set): clawops watches "
            "it by its HTTP/TCP checks and the peer API, and cannot run commands there"
        )
