"""Backups with the REAL gateway's own ``openclaw backup`` (installed by scripts/setup-openclaw),
to moto's S3 server on loopback: backup -> delete -> restore on another port with a new token."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from core.buckets import Buckets, S3Settings
from core.openclaw import gateway_url, handshake
from tests.agent.conftest import Agent, claw_token
from tests.agent.test_agent_backup import s3_table
from tests.agent.test_real_gateway import NODE, OPENCLAW, clean_openclaw_tmp

__all__ = ["clean_openclaw_tmp"]  # a fixture the tests use
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (NODE.exists() and OPENCLAW.exists()),
        reason="the real OpenClaw gateway is not installed: run scripts/setup-openclaw",
    ),
]
REAL = [str(NODE), str(OPENCLAW), "gateway", "run"]
StartAgent = Callable[..., Agent]


async def test_a_workspace_file_survives_backup_delete_and_restore_with_a_new_port_and_token(
    start_agent: StartAgent, s3: S3Settings, clean_openclaw_tmp: None
) -> None:
    buckets = Buckets(s3)
    bucket = "claw-real-" + claw_token()[:8]
    await buckets.create(bucket)
    agent = start_agent(gateway_command=REAL, extra_toml=s3_table(s3))
    port = agent.free_port()
    body = {"clawId": "real", "port": port, "token": claw_token(), "bucket": bucket}
    assert agent.call("POST", "/claws", body).status_code == 201
    agent.wait_for("real", lambda i: i["ready"] is True, timeout=60)

    empty = agent.call("POST", "/claws/real/backup")  # a fresh claw: the figure to report
    assert empty.status_code == 200, empty.text
    first = empty.json()
    assert first["method"] == "openclaw" and "note" not in first, first
    print(f"\nbackup of an empty claw: {first['size']} bytes in {first['seconds']} s")

    # The real gateway's workspace is $HOME/.openclaw/workspace (the archive's manifest says so).
    home = agent.state_dir / "homes" / "real"
    workspace = home / ".openclaw" / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "MEMORY.md").write_text("remember the milk\n")
    answer = agent.call("POST", "/claws/real/backup", {"keep": 1})
    assert answer.status_code == 200, answer.text
    made = answer.json()
    assert made["ok"] is True and made["method"] == "openclaw", made
    assert made["key"].startswith("backups/") and made["key"].endswith(".openclaw.tar.gz")
    assert made["key"] > first["key"] and made["pruned"] == 1
    assert await buckets.keys(bucket, "backups/") == [made["key"]], "keep 1: only the newest"

    assert agent.call("DELETE", "/claws/real").status_code == 200
    assert not home.exists()
    new_port = next(p for p in agent.ports if p != port and p > agent.ports.start)
    new_token = claw_token()
    body = {"clawId": "real", "port": new_port, "token": new_token, "bucket": bucket}
    body["restore"] = True
    created = agent.call("POST", "/claws", body)
    assert created.status_code == 201, created.text
    agent.wait_for("real", lambda i: i["ready"] is True, timeout=60)
    assert (workspace / "MEMORY.md").read_text() == "remember the milk\n"
    config = json.loads((home / ".openclaw" / "openclaw.json").read_text())
    assert config["gateway"]["port"] == new_port
    assert config["gateway"]["auth"]["token"] == new_token, "the request's token wins"
    assert (home.stat().st_mode & 0o777) == 0o700
    hello = await handshake(gateway_url(new_port), new_token, timeout=10)
    assert hello.protocol == 4
    assert agent.call("DELETE", "/claws/real").status_code == 200
    await buckets.delete(bucket)


def _tar(members: dict[str, bytes | str]) -> bytes:
    """A tar.gz of files (bytes) and symbolic links (str: the target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _real_archive(where: Path, link: bool) -> tuple[str, dict[str, bytes | str]]:
    """A real ``openclaw backup create`` archive of a small home (with ``link``, its workspace
    holds a link to /etc): its root and its members (files and links)."""
    home, out = where / "home", where / "out"
    (home / ".openclaw" / "workspace").mkdir(parents=True)
    (home / "tmp").mkdir()
    out.mkdir()
    (home / ".openclaw" / "workspace" / "MEMORY.md").write_text("mine\n")
    (home / ".openclaw" / "openclaw.json").write_text('{"gateway": {"mode": "local"}}')
    if link:
        (home / ".openclaw" / "workspace" / "etc").symlink_to("/etc")
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(home / "tmp")}
    done = subprocess.run(
        [str(NODE), str(OPENCLAW), "backup", "create", "--output", str(out), "--json"],
        env=env,
        cwd=out,
        capture_output=True,
        timeout=120,
        check=True,
    )
    archive = Path(json.loads(done.stdout)["archivePath"])
    members: dict[str, bytes | str] = {}
    with tarfile.open(archive) as tar:
        for info in tar.getmembers():
            if info.isfile():
                extracted = tar.extractfile(info)
                assert extracted is not None
                members[info.name] = extracted.read()
            elif info.issym():
                members[info.name] = info.linkname
    root = json.loads(done.stdout)["archiveRoot"]
    return root, members


def _doctored(where: Path) -> bytes:
    """A real archive whose manifest says it restores into /etc (outside any claw's home)."""
    root, members = _real_archive(where, link=False)
    manifest = json.loads(members[f"{root}/manifest.json"])  # bytes or str: both parse
    manifest["assets"][0]["sourcePath"] = "/etc/clawops-evil"
    members[f"{root}/manifest.json"] = json.dumps(manifest).encode()
    return _tar(members)


def _linked(where: Path) -> bytes:
    _root, members = _real_archive(where, link=True)
    return _tar(members)


REASONS = {
    "garbage": "refused the backup: Backup archive verification failed",
    "traversal": "refused the backup: Backup archive verification failed",
    "link-out": "the archive holds links out of the claw's home",
    "manifest-out": "the archive restores /etc/clawops-evil, outside the claw's home",
}


@pytest.mark.parametrize("kind", sorted(REASONS))
async def test_a_corrupt_or_hostile_openclaw_archive_is_refused_and_leaves_nothing(
    start_agent: StartAgent, s3: S3Settings, clean_openclaw_tmp: None, kind: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        escape, evil = Path(tmp) / "escaped", Path("/etc/clawops-evil")
        makers: dict[str, Callable[[], bytes]] = {
            "garbage": lambda: b"\x1f\x8b not really a gzip stream",
            "traversal": lambda: _tar({"r/manifest.json": b"{}", f"../../{escape}": b"x"}),
            "link-out": lambda: _linked(Path(tmp)),
            "manifest-out": lambda: _doctored(Path(tmp)),
        }
        hostile = makers[kind]()
        (Path(tmp) / "bad.tar.gz").write_bytes(hostile)
        buckets = Buckets(s3)
        bucket = "claw-bad-" + claw_token()[:8]
        await buckets.create(bucket)
        key = "backups/20990101T000000000000Z.openclaw.tar.gz"
        await buckets.upload(bucket, key, Path(tmp) / "bad.tar.gz")
        agent = start_agent(gateway_command=REAL, extra_toml=s3_table(s3))
        body = {"clawId": "bad", "port": agent.free_port(), "token": claw_token()}
        body |= {"bucket": bucket, "restore": True}
        answer = agent.call("POST", "/claws", body)
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error.startswith("claw bad not created: "), error
        assert REASONS[kind] in error, error
        assert agent.call("GET", "/claws").json()["claws"] == []
        assert not (agent.state_dir / "homes" / "bad").exists()
        assert not any(path.exists() for path in (escape, evil)), "nothing written outside"
        assert await buckets.keys(bucket, "backups/") == [key], "the bad backup is left alone"
        await buckets.delete(bucket)
