"""Backups to moto's S3 server on loopback, and restore on re-provision."""

from __future__ import annotations

import json
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from core.buckets import Buckets, S3Settings
from tests.agent.conftest import Agent, claw_token

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
