"""What changed between two configs, and which of it a reload can apply (SIGHUP, ``/reload``).

A reload re-reads the file and applies what the running node can swap safely: the fleet
(machines, services, port ranges, protected ports, settle windows), the jobs and scheduled
commands, check-ins, alert rules, the Telegram allowlist and roles, orgs, resources and the
claws settings. What is bound at start cannot change in place: the node's name and role, its
peer, the data dir, the database, the sidecar's address and edge, the Telegram token and Bot
API, the failover watchdog's settings and the LLM accounts. A change there is named as needing a
restart; anything this module does not know is treated the same way (never claimed applied).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.config._root import Config

# Dotted prefixes a reload applies; RESTART wins over APPLIED for a longer prefix inside.
APPLIED = (
    "machines",
    "services",
    "port_ranges",
    "protected_ports",
    "restart_settle",
    "jobs",
    "checkins",
    "alerts",
    "orgs",
    "resources",
    "claws",
    "telegram.allowed_chats",
    "telegram.admins",
    "telegram.viewers",
    "telegram.alert_chat",
    "telegram.confirm_timeout",
    "telegram.warning_repeats",
    "telegram.progress_after",
)
RESTART = ("jobs.failover",)
# How the items of a list section are told apart (its name in the answer).
ITEM_KEYS: dict[str, tuple[str, ...]] = {
    "machines": ("name",),
    "services": ("machine", "name"),
    "port_ranges": ("machine", "project"),
    "checkins": ("job_id",),
    "jobs.commands": ("name",),
    "orgs": ("slug",),
    "resources": ("name",),
    "llm_accounts": ("name",),
    "claws.minis": ("hostname",),
    "alerts.rules": ("match",),
    "alerts.maintenance": ("match", "cron"),
}


def _matches(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def applies(path: str) -> bool:
    """Whether a reload applies a change at ``path`` (a dotted config key)."""
    if any(_matches(path, p) for p in RESTART):
        return False
    return any(_matches(path, p) for p in APPLIED)


@dataclass(frozen=True)
class Change:
    """One changed key: a scalar (``telegram.admins``) or a list section's items."""

    path: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        parts = [f"+{n}" for n in self.added] + [f"−{n}" for n in self.removed]
        parts += [f"~{n}" for n in self.changed]
        return f"{self.path} ({', '.join(parts)})" if parts else self.path


@dataclass(frozen=True)
class ConfigChanges:
    applied: list[Change] = field(default_factory=list)
    restart: list[Change] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.applied and not self.restart

    def touches(self, prefix: str) -> bool:
        """Whether an applied change is at or under ``prefix``."""
        return any(_matches(c.path, prefix) for c in self.applied)


def config_changes(old: Config, new: Config) -> ConfigChanges:
    """The keys whose values differ, sorted into what a reload applies and what needs a
    restart."""
    found: list[Change] = []
    _diff("", old.model_dump(mode="json"), new.model_dump(mode="json"), found)
    applied = [c for c in found if applies(c.path)]
    restart = [c for c in found if not applies(c.path)]
    return ConfigChanges(applied, restart)


def _diff(path: str, old: Any, new: Any, out: list[Change]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys(), key=str):
            child = f"{path}.{key}" if path else str(key)
            _diff(child, old.get(key), new.get(key), out)
        return
    if isinstance(old, list) and isinstance(new, list) and path in ITEM_KEYS:
        out.append(_list_change(path, old, new))
        return
    out.append(Change(path))


def _list_change(path: str, old: list[Any], new: list[Any]) -> Change:
    fields = ITEM_KEYS[path]

    def name(item: Any) -> str:
        if not isinstance(item, dict):
            return str(item)
        return "/".join(str(item.get(f)) for f in fields)

    before = {name(i): i for i in old}
    after = {name(i): i for i in new}
    return Change(
        path,
        added=tuple(n for n in after if n not in before),
        removed=tuple(n for n in before if n not in after),
        changed=tuple(n for n in after if n in before and before[n] != after[n]),
    )


def keep_running(old: Config, new: Config, changes: ConfigChanges) -> Config:
    """``new`` with the running node's values at every key that needs a restart: what the node
    runs on after a reload until it is restarted (so nothing claims a value it does not use)."""
    config = new
    for change in changes.restart:
        config = _put(config, change.path.split("."), _get(old, change.path.split(".")))
    return config


def _get(obj: Any, path: list[str]) -> Any:
    for part in path:
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def _put(obj: Any, path: list[str], value: Any) -> Any:
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        inner = _put(obj[head], rest, value) if rest else value
        return {**obj, head: inner}
    inner = _put(getattr(obj, head), rest, value) if rest else value
    return obj.model_copy(update={head: inner})
