"""Where the process's log goes and how it looks, decided once at start from the environment.

- ``CLAWOPS_LOG_LEVEL``: DEBUG, INFO (default), WARNING, ERROR or CRITICAL.
- ``CLAWOPS_LOG_FORMAT``: ``text`` (default: ``time LEVEL logger: message``) or ``json`` (one
  object a line: time in ISO-8601 UTC, level, logger, message, and ``exc``/``stack`` text), for
  a log shipper.
- ``CLAWOPS_LOG_FILE``: log to this file instead of stderr, rotated when it would pass
  ``CLAWOPS_LOG_MAX_BYTES`` (default 10 MiB), keeping ``CLAWOPS_LOG_BACKUPS`` old files
  (default 5). Its directory is created 0700 and the files are 0600.

A service manager (launchd, systemd) sends the process's own stdout and stderr to the sibling
files ``<stem>.out.log`` and ``<stem>.err.log`` and never bounds them. They are rotated here, at
start, when over the size bound: copied to ``<name>.1`` and truncated in place, because the
manager holds them open (with O_APPEND, so its next write lands at the new end). Lines written
between the copy and the truncation are lost; at start there are few.

Libraries that log a line per routine event are held at WARNING: APScheduler (per run), alembic
and httpx (per request) always; asyncssh (per connection and channel) unless the level is DEBUG,
where its lines help to debug an SSH problem.

Every handler gets the caller's filters (the secret redaction): they rewrite the record's
message and exception text before either format sees them.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from io import TextIOWrapper
from pathlib import Path
from typing import Any

from core.errors import ConfigError, Problem

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that say too much at INFO: held at WARNING, the second ones unless at DEBUG.
QUIET = ("apscheduler", "alembic", "httpx")
QUIET_UNLESS_DEBUG = ("asyncssh",)
SOURCE = "environment"  # what a ConfigError from here names as its source


@dataclass(frozen=True)
class LogSettings:
    """The CLAWOPS_LOG_* variables, checked: ``from_env`` lists every bad one at once."""

    level: str = "INFO"
    format: str = "text"
    file: Path | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LogSettings:
        problems: list[Problem] = []
        raw_level = environ.get("CLAWOPS_LOG_LEVEL", "").strip()
        level = raw_level.upper() or "INFO"
        if level not in LEVELS:
            problems.append(_not_allowed("CLAWOPS_LOG_LEVEL", raw_level, LEVELS))
        raw_form = environ.get("CLAWOPS_LOG_FORMAT", "").strip()
        form = raw_form.lower() or "text"
        if form not in FORMATS:
            problems.append(_not_allowed("CLAWOPS_LOG_FORMAT", raw_form, FORMATS))
        max_bytes = _positive(environ, "CLAWOPS_LOG_MAX_BYTES", DEFAULT_MAX_BYTES, problems)
        backups = _positive(environ, "CLAWOPS_LOG_BACKUPS", DEFAULT_BACKUPS, problems)
        raw_file = environ.get("CLAWOPS_LOG_FILE", "").strip()
        if problems:
            raise ConfigError(problems, SOURCE)
        file = Path(raw_file).expanduser().absolute() if raw_file else None
        return cls(level, form, file, max_bytes, backups)


def _not_allowed(name: str, value: str, allowed: Iterable[str]) -> Problem:
    return Problem(name, f"{value!r} is not allowed; allowed: {', '.join(allowed)}")


def _positive(environ: Mapping[str, str], name: str, default: int, problems: list[Problem]) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        problems.append(Problem(name, f"{raw!r} is not allowed; a whole number of at least 1"))
        return default
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line. A filter that ran before (the redaction) has already replaced
    the message and the exception text, so they are taken from the record as they stand."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False)


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose files (the first and each after a rollover) are 0600."""

    def _open(self) -> TextIOWrapper:
        def private(path: str, flags: int) -> int:
            return os.open(path, flags, 0o600)

        return open(self.baseFilename, "a", encoding=self.encoding, opener=private)


def service_siblings(log_file: Path) -> tuple[Path, Path]:
    """The files a service manager writes the process's stdout and stderr to, beside
    ``log_file``: node.log -> node.out.log, node.err.log."""
    return (
        log_file.with_name(f"{log_file.stem}.out.log"),
        log_file.with_name(f"{log_file.stem}.err.log"),
    )


def copy_truncate(path: Path, max_bytes: int, backups: int) -> bool:
    """Rotate ``path`` if it is over ``max_bytes``: older copies move up (<name>.1 -> .2 ...,
    the last dropped), the file is copied to <name>.1, then truncated in place (its writer keeps
    its descriptor). True when it was rotated; a missing file is left alone."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for n in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    os.truncate(path, 0)
    return True


def _log_dir(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask


def _handler(settings: LogSettings) -> logging.Handler:
    if settings.file is None:
        return logging.StreamHandler(sys.stderr)
    try:
        _log_dir(settings.file.parent)
        for sibling in service_siblings(settings.file):
            copy_truncate(sibling, settings.max_bytes, settings.backups)
        return _PrivateRotatingFileHandler(
            settings.file,
            maxBytes=settings.max_bytes,
            backupCount=settings.backups,
            encoding="utf-8",
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        where = exc.filename or settings.file
        problem = Problem("CLAWOPS_LOG_FILE", f"cannot log to {settings.file}: {where}: {reason}")
        raise ConfigError([problem], SOURCE) from exc


def configure_logging(environ: Mapping[str, str], filters: Iterable[logging.Filter] = ()) -> None:
    """Set up the root logger from the CLAWOPS_LOG_* variables (replacing its handlers), with
    ``filters`` on its handler. Raises ConfigError, naming every bad variable and what is
    allowed, before anything is changed."""
    settings = LogSettings.from_env(environ)
    handler = _handler(settings)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    for item in filters:
        handler.addFilter(item)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(settings.level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    debug = settings.level == "DEBUG"
    for name in QUIET_UNLESS_DEBUG:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.WARNING)
