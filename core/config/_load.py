"""Finding, reading and validating the config file; problems are reported all at once."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from core.config._root import Config, cross_check, default_config
from core.errors import ConfigError, Problem
from core.secrets import redact_urls

if TYPE_CHECKING:
    from core.db import Database

ENV_VAR = "CLAWOPS_CONFIG"
DEFAULT_PATH = Path("clawops.toml")


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and where it came from (``path`` is None for the embedded default)."""

    config: Config
    path: Path | None

    @property
    def base_dir(self) -> Path:
        """Relative paths in the config are taken from the config file's folder."""
        return self.path.parent if self.path else Path.cwd()

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir(self.base_dir)

    @property
    def database_url(self) -> str:
        return self.config.database_url(self.base_dir)

    def open_database(self) -> Database:
        """The configured database, every call bounded by ``[database] timeout``."""
        from core.db import Database  # the engine and alembic only for commands that need them

        return Database(self.database_url, timeout=self.config.database.timeout.total_seconds())

    @property
    def source(self) -> str:
        return str(self.path) if self.path else "the embedded default (no config file)"


def find_config(explicit: str | os.PathLike[str] | None) -> Path | None:
    """``--config``, else ``$CLAWOPS_CONFIG``, else ``./clawops.toml``; None: use the default.

    A path given explicitly (flag or env) must exist; only the implicit ./clawops.toml may be
    absent, in which case the embedded default applies.
    """
    for candidate in (explicit, os.environ.get(ENV_VAR) or None):
        if candidate is not None:
            path = Path(candidate).expanduser()
            if not path.is_file():
                raise ConfigError([Problem("", f"config file {str(path)!r} does not exist")])
            return path
    return DEFAULT_PATH if DEFAULT_PATH.is_file() else None


def load_config(explicit: str | os.PathLike[str] | None = None) -> LoadedConfig:
    path = find_config(explicit)
    if path is None:
        return LoadedConfig(default_config(), None)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem("", f"not valid TOML: {exc}")], str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem("", f"cannot read the file: {exc}")], str(path)) from None
    return LoadedConfig(parse_config(data, str(path)), path)


def parse_config(data: dict[str, Any], source: str = "") -> Config:
    """Validate a parsed TOML document; raise ConfigError listing every problem found."""
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(error, data) for error in exc.errors()]
        raise ConfigError(_redacted(problems), source) from None
    problems = cross_check(config)
    if problems:
        raise ConfigError(_redacted(problems), source)
    return config


def _redacted(problems: list[Problem]) -> list[Problem]:
    # A problem may quote a value from the file: a database URL's password stays out of it.
    return [Problem(p.key, redact_urls(p.message)) for p in problems]


def _problem(error: Any, data: dict[str, Any]) -> Problem:
    loc = tuple(error["loc"])
    # A tagged union adds the tag to the path ("health.http.url"); the TOML key has none.
    loc = tuple(p for p in loc if p not in ("http", "tcp", "command", "function-after[...]"))
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    key = _key(loc, data)
    kind = error["type"]
    if kind == "missing":
        return Problem(key, "is required but missing")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return Problem(key, f"unknown key{hint}")
    message = str(error["msg"]).removeprefix("Value error, ")
    if "input" in error and not isinstance(error["input"], dict | list):
        return Problem(key, f"{error['input']!r} is not allowed: {message}")
    return Problem(key, message)


def _key(loc: tuple[Any, ...], data: Any) -> str:
    """('services', 3, 'port') -> 'services[3] (ollama).port', naming list items where we can."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            label = _label(node)
            if label:
                out += f" ({label})"
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


def _label(item: Any) -> str | None:
    if isinstance(item, dict):
        for field in ("name", "project", "job_id", "slug", "hostname"):
            value = item.get(field)
            if isinstance(value, str):
                return value
    return None


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the model at ``loc`` accepts (for 'unknown key' messages)."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if _is_model(model) else None
        if field is None:
            return []
        model = _inner_model(field.annotation)
    return sorted(model.model_fields) if _is_model(model) else []


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _inner_model(annotation: Any) -> Any:
    if _is_model(annotation):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
