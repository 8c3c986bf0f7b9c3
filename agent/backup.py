"""Claw backups in the claw's bucket: the gateway's own archive, else a tarball of the home.

A backup is made with ``openclaw backup create --output TMP --json --verify``, run as the gateway
runs (HOME = the claw's home, its environment), bounded by ``backup_timeout``; it covers the
state directory ``$HOME/.openclaw`` (config, credentials, SQLite databases captured online,
workspace). Where that command cannot be run, fails, or does not finish in time, the agent falls
back to a tar.gz of the claw's home (caches and temp files left out) and says so: ``method`` is
``tarball`` and ``note`` tells why.

Keys are ``backups/<UTC timestamp>.openclaw.tar.gz`` (the gateway's archive) or
``backups/<UTC timestamp>.tar.gz`` (a tarball); the timestamp sorts, so the newest backup of
either kind is the greatest key. With ``keep``, older backups beyond the newest ``keep`` are
deleted after a successful upload (never the one just made).

Restoring (before the gateway starts): a tarball unpacks with tarfile's "data" filter (no
absolute paths, no links out of the home, no device files). A gateway archive is verified and
extracted by ``openclaw backup restore ARCHIVE --target FRESH`` into a scratch directory, whose
layout is ``FRESH/<archiveRoot>/manifest.json`` and ``FRESH/<asset archivePath>/...``; each
asset's ``sourcePath`` lies in the home the backup was made from (the parent of
``paths.stateDir``) and is copied to the same place in the new home. An archive whose manifest
or payload points outside that home, or holds links out of it or special files, is refused
(``BadArchive``) and the caller removes the home.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from agent.openclaw_cli import CliFailed, cli_reason, json_object, run_cli
from core.buckets import Buckets
from core.errors import ClawopsError, RemoteError, Unreachable

PREFIX = "backups/"
OPENCLAW_EXT = ".openclaw.tar.gz"
TARBALL_EXT = ".tar.gz"
SKIPPED = {"tmp", ".cache", "cache", "caches", ".npm", "node_modules"}


class BadArchive(ClawopsError):
    """A backup that cannot or must not be restored (corrupt, hostile, or unreadable)."""


def _archive(home: Path, dest: Path) -> None:
    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        return None if any(part in SKIPPED for part in parts) else info

    with tarfile.open(dest, "w:gz") as tar:
        tar.add(home, arcname=".", filter=keep)


def _unpack(archive: Path, home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(home, filter="data")
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise BadArchive(f"the backup tarball cannot be restored: {exc}") from None
    home.chmod(0o700)


def backup_key(ext: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{PREFIX}{stamp}{ext}"


def _is_backup(key: str) -> bool:
    return key.startswith(PREFIX) and key.endswith(TARBALL_EXT)


@dataclass(frozen=True)
class Made:
    """A backup uploaded: its key, size in bytes, seconds taken, method, older ones pruned, and
    a note (why the fallback was taken, or that pruning failed); empty when all went well."""

    key: str
    size: int
    seconds: float
    method: str
    pruned: int = 0
    note: str = ""

    def answer(self) -> dict[str, object]:
        out: dict[str, object] = {
            "key": self.key,
            "size": self.size,
            "seconds": round(self.seconds, 3),
            "method": self.method,
            "pruned": self.pruned,
        }
        if self.note:
            out["note"] = self.note
        return out


async def openclaw_archive(
    cli: list[str], env: dict[str, str], out_dir: Path, timeout: float
) -> Path:
    """``openclaw backup create --verify`` into ``out_dir``; the archive's path."""
    argv = [*cli, "backup", "create", "--output", str(out_dir), "--json", "--verify"]
    code, out, err = await run_cli(argv, env, out_dir, timeout)
    if code != 0:
        raise CliFailed(f"openclaw backup create failed ({code}): {cli_reason(out, err)}")
    result = json_object(out, "backup create")
    path = Path(str(result.get("archivePath") or ""))
    if result.get("verified") is not True:
        raise CliFailed("openclaw backup create did not verify its archive")
    if path.parent != out_dir or not await asyncio.to_thread(path.is_file):
        raise CliFailed(f"openclaw backup create named no archive in {out_dir}")
    return path


async def backup(
    buckets: Buckets,
    bucket: str,
    home: Path,
    *,
    cli: list[str] | None,
    env: dict[str, str],
    timeout: float,
    keep: int | None = None,
) -> Made:
    """Make a backup of the claw at ``home`` (the gateway's archive, else a tarball), upload it
    to ``bucket`` and, with ``keep``, delete all but the newest ``keep`` backups."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="clawops-backup-") as tmp:
        out_dir = Path(tmp)
        archive: Path | None = None
        note = ""
        if cli is None:
            note = "no openclaw CLI (gateway_command has no 'gateway'): a tarball of the home"
        else:
            try:
                archive = await openclaw_archive(cli, env, out_dir, timeout)
            except CliFailed as exc:
                note = f"{exc}; a tarball of the home instead"
        if archive is not None:
            method, key = "openclaw", backup_key(OPENCLAW_EXT)
        else:
            method, key = "tarball", backup_key(TARBALL_EXT)
            archive = out_dir / "claw.tar.gz"
            await asyncio.to_thread(_archive, home, archive)
        size = archive.stat().st_size
        try:
            await buckets.upload(bucket, key, archive)
        except Unreachable:
            raise  # nothing reached the store: nothing to clean up
        except BaseException:
            # The store may hold the object (or a part) though the upload failed: no partial
            # key may stay behind to be restored later.
            with contextlib.suppress(ClawopsError):
                await buckets.remove(bucket, [key])
            raise
    pruned = 0
    if keep is not None:
        try:
            pruned = await prune(buckets, bucket, key, keep)
        except RemoteError as exc:
            note = "; ".join(filter(None, [note, f"older backups not pruned: {exc}"]))
    return Made(key, size, time.monotonic() - started, method, pruned, note)


async def prune(buckets: Buckets, bucket: str, made: str, keep: int) -> int:
    """Delete all but the newest ``keep`` backups, ``made`` (just uploaded) always kept."""
    others = sorted(k for k in await buckets.keys(bucket, PREFIX) if _is_backup(k) and k != made)
    old = others[: max(0, len(others) - (keep - 1))]
    if old:
        await buckets.remove(bucket, old)
    return len(old)


def _inside(path: PurePosixPath, root: PurePosixPath) -> bool:
    return path == root or root in path.parents


def _check_tree(top: Path) -> None:
    """Refuse special files, and links that are absolute or lead out of ``top``."""
    entries = [top] if not top.is_dir() or top.is_symlink() else [top, *top.rglob("*")]
    for entry in entries:
        mode = entry.lstat().st_mode
        if stat.S_ISLNK(mode):
            target = os.readlink(entry)
            resolved = os.path.normpath(os.path.join(entry.parent, target))
            if os.path.isabs(target) or not _inside(PurePosixPath(resolved), PurePosixPath(top)):
                raise BadArchive(f"the archive holds a link out of the claw's home: {target}")
        elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise BadArchive(f"the archive holds a special file: {entry.name}")


def _place(staged: Path, home: Path) -> int:
    """Copy the assets of the restored archive in ``staged`` into ``home``; how many."""
    roots = [p for p in staged.iterdir()]
    if len(roots) != 1 or not (roots[0] / "manifest.json").is_file():
        raise BadArchive("the restored archive has no single root with a manifest.json")
    try:
        manifest = json.loads((roots[0] / "manifest.json").read_text())
        state_dir = PurePosixPath(manifest["paths"]["stateDir"])
        assets = list(manifest["assets"])
        if manifest.get("externalSymbolicLinks"):
            raise BadArchive("the archive holds links out of the claw's home")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadArchive(f"the archive's manifest.json is unreadable: {exc}") from None
    old_home = state_dir.parent
    if not state_dir.is_absolute() or ".." in state_dir.parts or old_home == PurePosixPath("/"):
        raise BadArchive(f"the archive's state directory {state_dir} is not in a claw's home")
    moves: list[tuple[Path, Path]] = []
    for asset in assets:
        try:
            source = PurePosixPath(str(asset["sourcePath"]))
            inner = PurePosixPath(str(asset["archivePath"]))
        except (KeyError, TypeError):
            raise BadArchive("an asset of the archive's manifest has no paths") from None
        if not _inside(source, old_home) or ".." in source.parts:
            raise BadArchive(f"the archive restores {source}, outside the claw's home {old_home}")
        if inner.is_absolute() or ".." in inner.parts or not (staged / inner).exists():
            raise BadArchive(f"the archive's payload {inner} is missing or outside it")
        _check_tree(staged / inner)
        moves.append((staged / inner, home / source.relative_to(old_home)))
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    for src, dest in moves:
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if src.is_dir():
            shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dest, follow_symlinks=False)
    home.chmod(0o700)
    return len(moves)


async def restore_openclaw(
    cli: list[str], env: dict[str, str], archive: Path, scratch: Path, home: Path, timeout: float
) -> None:
    """``openclaw backup restore`` into a fresh dir under ``scratch``, then into ``home``."""
    # The CLI runs with a home of its own: the claw's is not there yet, and the restore target
    # must lie outside any live state directory.
    cli_home = scratch / "home"
    (cli_home / "tmp").mkdir(parents=True, mode=0o700)
    env = {**env, "HOME": str(cli_home), "TMPDIR": str(cli_home / "tmp")}
    target = scratch / "restored"
    argv = [*cli, "backup", "restore", str(archive), "--target", str(target), "--json"]
    try:
        code, out, err = await run_cli(argv, env, scratch, timeout)
    except CliFailed as exc:
        raise BadArchive(f"the backup cannot be restored: {exc}") from None
    if code != 0:
        raise BadArchive(f"openclaw backup restore refused the backup: {cli_reason(out, err)}")
    await asyncio.to_thread(_place, target, home)


async def restore_newest(
    buckets: Buckets,
    bucket: str,
    home: Path,
    *,
    cli: list[str] | None,
    env: dict[str, str],
    timeout: float,
) -> str | None:
    """Restore the newest backup of ``bucket`` (either kind) into ``home``; its key, or None
    when there is none. ``BadArchive`` when it cannot be restored (the caller removes ``home``)."""
    keys = [k for k in await buckets.keys(bucket, PREFIX) if _is_backup(k)]
    if not keys:
        return None
    key = max(keys)
    with tempfile.TemporaryDirectory(prefix="clawops-restore-") as tmp:
        archive = Path(tmp) / "claw.tar.gz"
        await buckets.download(bucket, key, archive)
        if key.endswith(OPENCLAW_EXT):
            if cli is None:
                raise BadArchive(f"{key} is an openclaw archive and this agent has no openclaw CLI")
            await restore_openclaw(cli, env, archive, Path(tmp), home, timeout)
        else:
            await asyncio.to_thread(_unpack, archive, home)
    return key
