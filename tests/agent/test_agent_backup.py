"""Backups to moto's S3 server on loopback, and restore on re-provision."""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import AgentConfig
from core.buckets import Buckets, S3Settings
from tests.agent.conftest import FAKE_GATEWAY, Agent, claw_token
from tests.auxil.net import free_port

pytestmark = pytest.mark.slow
StartAgent = Callable[..., Agent]


def s3_table(s3: S3Settings) -> str:
    return (
        "[agent.s3]\n"
        f'endpoint_url = "{s3.endpoint_url}"\n'
        'region = "us-east-1"\n'
        'access_key_id_env = "CLAWOPS_TEST_S3_KEY"\n'
        'secret_access_key_env = "CLAWOPS_TEST_S3_SECRET"\n'
    )


async def test_a_backup_lands_in_the_bucket_and_a_new_claw_restores_it(
    start_agent: StartAgent, s3: S3Settings
) -> None:
    buckets = Buckets(s3)
    bucket = "claw-backup-" + claw_token()[:8]
    await buckets.create(bucket)
    agent = start_agent(extra_toml=s3_table(s3))
    port = agent.free_port()
    body = {"clawId": "keep", "port": port, "token": claw_token(), "bucket": bucket}
    assert agent.call("POST", "/claws", body).status_code == 201
    agent.wait_for("keep", lambda i: i["ready"] is True)
    home = agent.state_dir / "homes" / "keep"
    (home / ".openclaw" / "workspace").mkdir(parents=True)
    (home / ".openclaw" / "workspace" / "MEMORY.md").write_text("remember the milk\n")
    (home / "tmp" / "scratch").write_text("not worth keeping\n")

    answer = agent.call("POST", "/claws/keep/backup")
    assert answer.status_code == 200, answer.text
    key = answer.json()["key"]
    assert answer.json()["ok"] is True
    assert key.startswith("backups/") and key.endswith(".tar.gz")
    # The fake gateway knows no `backup create`: the agent says it fell back, and why.
    assert answer.json()["method"] == "tarball"
    assert "openclaw backup create failed" in answer.json()["note"]
    assert answer.json()["note"].endswith("; a tarball of the home instead")
    assert await buckets.keys(bucket, "backups/") == [key]
    with tempfile.TemporaryDirectory() as tmp:
        await buckets.download(bucket, key, Path(tmp) / "b.tar.gz")
        with tarfile.open(Path(tmp) / "b.tar.gz") as tar:
            names = tar.getnames()
    assert "./.openclaw/workspace/MEMORY.md" in names
    assert not any("scratch" in name for name in names), "temp files stay out of backups"

    assert agent.call("DELETE", "/claws/keep").status_code == 200
    assert not home.exists()
    new_token = claw_token()
    body = {"clawId": "keep", "port": port, "token": new_token, "bucket": bucket, "restore": True}
    assert agent.call("POST", "/claws", body).status_code == 201
    agent.wait_for("keep", lambda i: i["ready"] is True)
    assert (home / ".openclaw" / "workspace" / "MEMORY.md").read_text() == "remember the milk\n"
    config = json.loads((home / ".openclaw" / "openclaw.json").read_text())
    assert config["gateway"]["auth"]["token"] == new_token, "the request's token wins"
    await buckets.delete(bucket)


async def test_restore_from_an_empty_bucket_starts_a_fresh_claw(
    start_agent: StartAgent, s3: S3Settings
) -> None:
    buckets = Buckets(s3)
    bucket = "claw-empty-" + claw_token()[:8]
    await buckets.create(bucket)
    agent = start_agent(extra_toml=s3_table(s3))
    body = {"clawId": "fresh", "port": agent.free_port(), "token": claw_token(),
            "bucket": bucket, "restore": True}  # fmt: skip
    assert agent.call("POST", "/claws", body).status_code == 201
    assert agent.wait_for("fresh", lambda i: i["ready"] is True)["error"] == ""
    await buckets.delete(bucket)


def test_a_backup_to_a_missing_bucket_is_a_failure(start_agent: StartAgent, s3: S3Settings) -> None:
    agent = start_agent(extra_toml=s3_table(s3))
    body = {"clawId": "lost", "port": agent.free_port(), "token": claw_token(),
            "bucket": "no-such-bucket-here"}  # fmt: skip
    agent.call("POST", "/claws", body)
    answer = agent.call("POST", "/claws/lost/backup")
    assert answer.status_code == 502
    assert answer.json()["ok"] is False and "NoSuchBucket" in answer.json()["error"]


def test_a_restore_on_an_agent_without_s3_is_refused_and_leaves_nothing(
    start_agent: StartAgent,
) -> None:
    agent = start_agent()
    body = {"clawId": "norestore", "port": agent.free_port(), "token": claw_token(),
            "bucket": "some-bucket", "restore": True}  # fmt: skip
    answer = agent.call("POST", "/claws", body)
    assert answer.status_code == 400
    assert answer.json() == {"ok": False, "error": "this agent has no [agent.s3]: backups are off"}
    assert agent.call("GET", "/claws").json()["claws"] == []
    assert not (agent.state_dir / "homes" / "norestore").exists()


async def test_keep_prunes_the_oldest_and_a_bad_keep_changes_nothing(
    start_agent: StartAgent, s3: S3Settings
) -> None:
    buckets = Buckets(s3)
    bucket = "claw-keep-" + claw_token()[:8]
    await buckets.create(bucket)
    agent = start_agent(extra_toml=s3_table(s3))
    body = {"clawId": "few", "port": agent.free_port(), "token": claw_token(), "bucket": bucket}
    assert agent.call("POST", "/claws", body).status_code == 201
    made = [agent.call("POST", "/claws/few/backup").json()["key"] for _ in range(2)]
    for keep in (0, -1, "x", True, 2.5):
        answer = agent.call("POST", "/claws/few/backup", {"keep": keep})
        assert answer.status_code == 400, (keep, answer.text)
        assert answer.json() == {"ok": False, "error": "keep must be a positive integer"}
    assert agent.call("POST", "/claws/few/backup", [2]).status_code == 400
    assert sorted(await buckets.keys(bucket, "backups/")) == made, (
        "a refused backup changes nothing"
    )

    third = agent.call("POST", "/claws/few/backup", {"keep": 2})
    assert third.status_code == 200, third.text
    assert third.json()["pruned"] == 1
    assert sorted(await buckets.keys(bucket, "backups/")) == [made[1], third.json()["key"]]
    fourth = agent.call("POST", "/claws/few/backup", {"keep": 5}).json()
    assert fourth["pruned"] == 0 and len(await buckets.keys(bucket, "backups/")) == 3
    await buckets.delete(bucket)


def test_a_claw_without_a_bucket_is_not_backed_up(start_agent: StartAgent, s3: S3Settings) -> None:
    agent = start_agent(extra_toml=s3_table(s3))
    assert agent.create("nobucket", agent.free_port()).status_code == 201
    answer = agent.call("POST", "/claws/nobucket/backup")
    assert answer.status_code == 400
    assert answer.json() == {"ok": False, "error": "claw nobucket has no bucket"}


async def test_a_backup_command_that_hangs_is_killed_and_the_tarball_taken(
    start_agent: StartAgent, s3: S3Settings, tmp_path: Path
) -> None:
    """`openclaw backup create` never exits: the agent kills it (its whole process group) after
    backup_timeout and uploads the tarball, saying so."""
    marker = str(90000 + os.getpid() % 9000)  # names this test's hanging process
    script = tmp_path / "openclaw-hangs"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = backup ]; then sleep {marker} & wait; fi\n'
        f'exec {sys.executable} {FAKE_GATEWAY[1]} "$@"\n'
    )
    script.chmod(0o755)
    buckets = Buckets(s3)
    bucket = "claw-hang-" + claw_token()[:8]
    await buckets.create(bucket)
    agent = start_agent(
        gateway_command=[str(script), "gateway", "run"],
        extra_toml="backup_timeout = 1.5\n" + s3_table(s3),
    )
    body = {"clawId": "hang", "port": agent.free_port(), "token": claw_token(), "bucket": bucket}
    assert agent.call("POST", "/claws", body).status_code == 201
    agent.wait_for("hang", lambda i: i["ready"] is True)
    started = time.monotonic()
    answer = agent.call("POST", "/claws/hang/backup")
    assert answer.status_code == 200, answer.text
    assert 1.5 <= time.monotonic() - started < 10
    assert answer.json()["method"] == "tarball"
    assert "did not finish within 1.5s" in answer.json()["note"], answer.json()
    assert await buckets.keys(bucket, "backups/") == [answer.json()["key"]]
    assert not _running(f"sleep {marker}"), "the hanging command and its children are killed"
    await buckets.delete(bucket)


def _running(command: str) -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if cmdline.decode(errors="replace").strip() == command:
            return True
    return False


def test_an_unreachable_store_is_a_clear_error(start_agent: StartAgent, s3: S3Settings) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    agent = start_agent(extra_toml=s3_table(s3).replace(s3.endpoint_url, closed))
    body = {"clawId": "cutoff", "port": agent.free_port(), "token": claw_token()}
    body["bucket"] = "cut-off-bucket"
    assert agent.call("POST", "/claws", body).status_code == 201
    started = time.monotonic()
    answer = agent.call("POST", "/claws/cutoff/backup", {"keep": 1})
    assert time.monotonic() - started < 20
    assert answer.status_code == 502
    assert answer.json()["ok"] is False
    assert f"S3 store {closed} unreachable" in answer.json()["error"]


def _evil_tarball() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../escaped-from-the-home")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    return out.getvalue()


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("garbage", "the backup tarball cannot be restored"),
        ("traversal", "the backup tarball cannot be restored"),
        ("no-cli", "is an openclaw archive and this agent has no openclaw CLI"),
    ],
)
async def test_a_backup_that_cannot_be_restored_is_refused_and_leaves_nothing(
    start_agent: StartAgent, s3: S3Settings, tmp_path: Path, kind: str, reason: str
) -> None:
    buckets = Buckets(s3)
    bucket = "claw-broken-" + claw_token()[:8]
    await buckets.create(bucket)
    ext = ".openclaw.tar.gz" if kind == "no-cli" else ".tar.gz"
    key = f"backups/20990101T000000000000Z{ext}"
    (tmp_path / "bad").write_bytes(_evil_tarball() if kind == "traversal" else b"not a tarball")
    await buckets.upload(bucket, key, tmp_path / "bad")
    # A gateway_command without a `gateway` word: the agent knows no openclaw CLI.
    agent = start_agent(gateway_command=FAKE_GATEWAY[:2], extra_toml=s3_table(s3))
    body = {"clawId": "broken", "port": agent.free_port(), "token": claw_token()}
    answer = agent.call("POST", "/claws", body | {"bucket": bucket, "restore": True})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"].startswith("claw broken not created: ")
    assert reason in answer.json()["error"]
    assert agent.call("GET", "/claws").json()["claws"] == []
    assert not (agent.state_dir / "homes" / "broken").exists()
    assert not list(agent.state_dir.parent.rglob("escaped-from-the-home"))
    assert await buckets.keys(bucket, "backups/") == [key]
    await buckets.delete(bucket)


def test_the_cli_comes_from_cli_command_or_the_gateway_command() -> None:
    base = {"token_env": "X"}
    real = AgentConfig.model_validate(
        base | {"gateway_command": ["node", "o.mjs", "gateway", "run"]}
    )
    assert real.cli == ["node", "o.mjs"]
    assert AgentConfig.model_validate(base | {"gateway_command": ["gw"]}).cli is None
    own = AgentConfig.model_validate(base | {"cli_command": ["openclaw"]})
    assert own.cli == ["openclaw"] and own.backup_timeout == 300.0
