"""Claw backups: a tar.gz of the claw's home (caches and temp files left out) in its bucket.

Keys are ``backups/<UTC timestamp>.tar.gz``; the timestamp sorts, so the newest backup is the
greatest key. Restoring unpacks with tarfile's "data" filter (no absolute paths, no links out of
the home, no device files) before the gateway starts.
"""

from __future__ import annotations

import asyncio
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from core.buckets import Buckets

PREFIX = "backups/"
SKIPPED = {"tmp", ".cache", "cache", "caches", ".npm", "node_modules"}


def _archive(home: Path, dest: Path) -> None:
    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        return None if any(part in SKIPPED for part in parts) else info

    with tarfile.open(dest, "w:gz") as tar:
        tar.add(home, arcname=".", filter=keep)


def _unpack(archive: Path, home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(home, filter="data")
    home.chmod(0o700)


def backup_key(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{PREFIX}{stamp}.tar.gz"


@dataclass(frozen=True)
class Made:
    """A backup uploaded: its key, size in bytes, seconds taken, method, older ones pruned."""

    key: str
    size: int
    seconds: float
    method: str
    pruned: int = 0

    def answer(self) -> dict[str, object]:
        return {
            "key": self.key,
            "size": self.size,
            "seconds": round(self.seconds, 3),
            "method": self.method,
            "pruned": self.pruned,
        }


async def backup(buckets: Buckets, bucket: str, home: Path) -> Made:
    """Upload a tarball of ``home`` to ``bucket``."""
    started = time.monotonic()
    key = backup_key()
    with tempfile.TemporaryDirectory(prefix="clawops-backup-") as tmp:
        archive = Path(tmp) / "claw.tar.gz"
        await asyncio.to_thread(_archive, home, archive)
        size = archive.stat().st_size
        await buckets.upload(bucket, key, archive)
    return Made(key, size, time.monotonic() - started, "tarball")


async def restore_newest(buckets: Buckets, bucket: str, home: Path) -> str | None:
    """Unpack the newest backup of ``bucket`` into ``home``; its key, or None when there is none."""
    keys = [k for k in await buckets.keys(bucket, PREFIX) if k.endswith(".tar.gz")]
    if not keys:
        return None
    key = max(keys)
    with tempfile.TemporaryDirectory(prefix="clawops-restore-") as tmp:
        archive = Path(tmp) / "claw.tar.gz"
        await buckets.download(bucket, key, archive)
        await asyncio.to_thread(_unpack, archive, home)
    return key
