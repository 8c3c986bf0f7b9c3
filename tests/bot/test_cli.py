"""The `clawops` command as a user runs it: real processes, real sockets, real databases."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from asyncio.subprocess import PIPE
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from core.db import Database
from core.localtelegram import LocalTelegram
from core.tables import status_log
from tests.auxil.net import free_port, wait_for_http

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).with_name("clawops")
CLAWOPS = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "bot.cli"]


def clawops(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [*CLAWOPS, *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})}, cwd=cwd,
    )  # fmt: skip


def write_config(path: Path, db_url: str, port: int, extra: str = "") -> Path:
    path.write_text(
        f"""
[node]
name = "test-node"
data_dir = "{path.parent / "data"}"

[database]
url = "{db_url}"

[telegram]
local_api_port = {free_port()}

[sidecar]
port = {port}
{extra}
"""
    )
    return path


class Node:
    def __init__(self, config: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.config = config
        self.proc = subprocess.Popen(
            [*CLAWOPS, "run", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "CLAWOPS_TELEGRAM_TOKEN": "", **(env or {})},
        )  # fmt: skip

    def wait_up(self) -> None:
        try:
            wait_for_http(f"{self.url}/healthz")
        except TimeoutError:
            self.proc.kill()
            raise AssertionError(f"node did not start: {self.proc.communicate()[1]}") from None

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err


@pytest.fixture
def node_config(tmp_path: Path, db_url: str) -> Iterator[tuple[Path, int]]:
    port = free_port()
    config = write_config(tmp_path / "clawops.toml", db_url, port)
    if not db_url.startswith("sqlite"):
        result = clawops("db", "upgrade", "--config", str(config))
        assert result.returncode == 0, result.stderr
    yield config, port


@pytest.fixture
def node(node_config) -> Iterator[Node]:
    config, port = node_config
    running = Node(config, port)
    running.wait_up()
    yield running
    running.stop(signal.SIGKILL)


def test_check_config_accepts_the_example():
    result = clawops("check-config", "--config", str(ROOT / "config.example.toml"))
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout and "3 machine(s)" in result.stdout


def test_check_config_lists_every_problem_and_exits_1(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[sidecar]\nport = 70000\n[[machines]]\nname = "m"\nos = "beos"\naddress = "x"\n'
        'local = true\n[[services]]\nname = "s"\nmachine = "nowhere"\nmanager = "pm2"\n'
    )
    result = clawops("check-config", "--config", str(bad))
    assert result.returncode == 1
    assert "sidecar.port: 70000 is not allowed" in result.stderr
    assert "machines[0] (m).os: 'beos' is not allowed" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_notes_an_alert_chat_where_buttons_would_be_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("CHECK_BOT_TOKEN", "123456:token")
    config = tmp_path / "alerts.toml"
    config.write_text(
        '[telegram]\ntoken_env = "CHECK_BOT_TOKEN"\nallowed_chats = [-100]\nadmins = [7]\n'
        "[alerts]\nalert_chat = -200\n"
    )
    result = clawops("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "alerts go to chat -200, which is not in telegram.allowed_chats" in result.stdout
    config.write_text(config.read_text().replace("-200", "7"))  # an admin's private chat
    assert "alerts go to chat" not in clawops("check-config", "--config", str(config)).stdout


def test_check_config_refuses_a_missing_file(tmp_path):
    result = clawops("check-config", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 1 and "does not exist" in result.stderr


def test_run_serves_logs_and_shuts_down_cleanly_on_sigterm(node: Node):
    posted = clawops("log", "cleaner", "ok", "Cleaned 5 orphans", "--config", str(node.config))
    assert posted.returncode == 0, posted.stderr
    entry_id = int(posted.stdout)
    entries = aiohttp_get_json(f"{node.url}/api/log?jobId=cleaner")["entries"]
    assert [(e["id"], e["message"]) for e in entries] == [(entry_id, "Cleaned 5 orphans")]
    code, err = node.stop(signal.SIGTERM)
    assert code == 0, err
    assert "Traceback" not in err
    for line in ("database:", "sidecar: listening on http://127.0.0.1:", "scheduler: started",
                 "telegram: off", "stopped"):  # fmt: skip
        assert line in err


def test_run_also_stops_cleanly_on_sigint(node: Node):
    code, err = node.stop(signal.SIGINT)
    assert code == 0 and "Traceback" not in err and "stopped" in err


def test_clawops_log_reports_the_servers_refusal_and_exits_nonzero(node: Node):
    result = clawops("log", "j" * 200, "ok", "m", "--config", str(node.config))
    assert result.returncode == 1
    assert "400" in result.stderr and "jobId is longer than 128" in result.stderr


def test_clawops_log_says_when_the_sidecar_is_unreachable(tmp_path):
    result = clawops("log", "job", "ok", "m", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1 and "cannot reach the sidecar" in result.stderr


def test_a_node_on_an_open_address_without_a_token_refuses_to_start(tmp_path):
    port = free_port()
    config = write_config(
        tmp_path / "open.toml", f"sqlite+aiosqlite:///{tmp_path}/x.db", port,
        'host = "0.0.0.0"\ntoken_env = "TEST_SIDECAR_TOKEN"',
    )  # fmt: skip
    result = clawops("run", "--config", str(config), env={"TEST_SIDECAR_TOKEN": ""})
    assert result.returncode == 1
    assert "no API token" in result.stderr and "TEST_SIDECAR_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_on_postgres_before_db_upgrade_asks_for_it(tmp_path, pg_url):
    # A fresh database of its own, so the session's migrated one is not touched.
    import psycopg

    admin_url = pg_url.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0]
    name = f"{pg_url.rsplit('/', 1)[1]}_empty"
    with psycopg.connect(f"{admin_url}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = pg_url.rsplit("/", 1)[0] + f"/{name}"
            config = write_config(tmp_path / "pg.toml", url, free_port())
            result = clawops("run", "--config", str(config))
            assert result.returncode == 1 and "clawops db upgrade" in result.stderr
            upgraded = clawops("db", "upgrade", "--config", str(config))
            assert upgraded.returncode == 0 and "revision" in upgraded.stdout
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_entries_answered_201_survive_kill_9(node_config, db_url):
    config, port = node_config
    running = Node(config, port)
    running.wait_up()

    async def post_many() -> list[int]:
        async with aiohttp.ClientSession(running.url) as session:

            async def post(i: int) -> int:
                body = {"jobId": "durable", "status": "ok", "message": str(i)}
                async with session.post("/api/log", json=body) as response:
                    assert response.status == 201
                    return int((await response.json())["id"])

            return list(await asyncio.gather(*(post(i) for i in range(300))))

    try:
        ids = asyncio.run(post_many())
    finally:
        running.proc.kill()  # SIGKILL right after the last 201: no flush, no clean shutdown
        running.proc.wait()

    async def stored() -> set[int]:
        db = Database(db_url)
        try:
            async with db.connect() as conn:
                rows = await conn.execute(select(status_log.c.id))
                return {r.id for r in rows}
        finally:
            await db.close()

    assert set(ids) <= asyncio.run(stored())


def aiohttp_get_json(url: str) -> dict:
    async def get() -> dict:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return await response.json()

    return asyncio.run(get())


def test_clawops_chat_talks_to_the_running_bot_and_presses_buttons(node: Node):
    once = clawops("chat", "--config", str(node.config), "-c", "/status")
    assert once.returncode == 0, once.stderr
    assert "test-node · primary" in once.stdout and "local Bot API, polling" in once.stdout
    # A confirmed command runs beside the chat's next ones (it does not hold the chat): the
    # session ends when the mute has answered, and the unmute comes after it.
    session = subprocess.run(
        [*CLAWOPS, "chat", "--config", str(node.config)], input="/mute 1h\n1\n",
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert session.returncode == 0, session.stderr
    assert "[1] ✅ Confirm   [2] ✖️ Cancel" in session.stdout
    assert "(edited) 🔕 Muted all alerts for 1h" in session.stdout
    unmute = clawops("chat", "--config", str(node.config), "-c", "/unmute")
    assert unmute.returncode == 0, unmute.stderr
    assert "Unmuted (1 mute ended)." in unmute.stdout


def test_clawops_chat_without_a_running_node_names_the_missing_access_file(tmp_path, db_url):
    config = write_config(tmp_path / "clawops.toml", db_url, free_port())
    result = clawops("chat", "--config", str(config), "-c", "/help")
    assert result.returncode == 1
    assert "local-bot-api.json (it does not exist)" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_refused_bot_token_is_named_but_never_printed_even_at_debug_level(tmp_path):
    token = "424242:only-the-config-knows-me"  # not token-shaped: redacted because it is known
    async with LocalTelegram(token="424242:the-token-telegram-knows-xxxxxxxxxx") as telegram:
        config = tmp_path / "clawops.toml"
        config.write_text(
            f'[node]\nname = "n"\ndata_dir = "{tmp_path / "data"}"\n'
            f'[telegram]\ntoken_env = "TEST_REFUSED_TOKEN"\napi_base_url = "{telegram.base_url}"\n'
            f"[sidecar]\nport = {free_port()}\n"
        )
        env = {**os.environ, "TEST_REFUSED_TOKEN": token, "CLAWOPS_LOG_LEVEL": "DEBUG"}
        proc = await asyncio.create_subprocess_exec(
            *CLAWOPS, "run", "--config", str(config), stdout=PIPE, stderr=PIPE, env=env
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    output = out.decode() + err.decode()
    assert proc.returncode == 1, output
    assert telegram.calls.get("getMe") == 1
    assert "Telegram refused the bot token (check TEST_REFUSED_TOKEN" in output
    assert "DEBUG" in output  # the debug log really was on
    assert token not in output and "only-the-config-knows-me" not in output


def test_clawops_chat_sends_a_superscript_digit_as_text_not_as_a_button(node: Node):
    session = subprocess.run(
        [*CLAWOPS, "chat", "--config", str(node.config)],
        input="³\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert session.returncode == 0, session.stderr
    assert "I answer commands, not text" in session.stdout
    assert "invalid literal" not in session.stdout and "no such button" not in session.stdout
