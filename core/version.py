"""The installed clawops version (an agent reports it in /health; ``minis add`` shows it)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def clawops_version() -> str:
    try:
        return version("clawops")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
