"""core.logs in real processes: each test runs a child Python that calls ``configure_logging``
from its environment (as ``clawops`` does at start) and logs, and reads what reached stderr or
the log file. Bad settings are tried through the real ``clawops`` command."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.auxil.sshd import start_sshd
from tests.bot.test_cli import clawops

PRELUDE = """
import asyncio, logging, os, sys
from core.config import parse_config
from core.logs import configure_logging
from core.secrets import SecretFilter, secret_values

config = parse_config({"telegram": {"token_env": "TEST_LOG_BOT_TOKEN"}})
configure_logging(os.environ, filters=[SecretFilter(secret_values(config))])
log = logging.getLogger("clawops.test")
"""
SECRET = "s3cr3t-value-only-the-env-knows"


def child(
    tmp_path: Path, body: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "child.py"
    script.write_text(PRELUDE + body)
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TEST_LOG_BOT_TOKEN": SECRET, **env},
    )


def test_the_json_format_writes_one_object_per_line_with_the_time_in_utc(tmp_path):
    result = child(
        tmp_path,
        'log.info("hello %s", "world")\nlogging.getLogger("other").warning("careful")\n',
        {"CLAWOPS_LOG_FORMAT": "json"},
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(x["level"], x["logger"], x["message"]) for x in lines] == [
        ("INFO", "clawops.test", "hello world"),
        ("WARNING", "other", "careful"),
    ]
    moment = datetime.fromisoformat(lines[0]["time"])
    assert moment.utcoffset() == timedelta(0)
    assert "exc" not in lines[0]


@pytest.mark.parametrize("form", ["json", "text"])
def test_a_logged_exception_holding_a_config_secret_is_redacted_in_either_format(tmp_path, form):
    body = """
try:
    raise RuntimeError("login refused for " + os.environ["TEST_LOG_BOT_TOKEN"])
except RuntimeError:
    log.exception("cannot sign in with %s", os.environ["TEST_LOG_BOT_TOKEN"])
log.info("stack here", stack_info=True)
"""
    result = child(tmp_path, body, {"CLAWOPS_LOG_FORMAT": form})
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stderr
    if form == "json":
        failed, stacked = (json.loads(line) for line in result.stderr.splitlines())
        assert failed["message"] == "cannot sign in with [redacted]"
        assert failed["exc"].startswith("Traceback (most recent call last):")
        assert "RuntimeError: login refused for [redacted]" in failed["exc"]
        assert "Stack (most recent call last):" in stacked["stack"]
    else:
        assert "ERROR clawops.test: cannot sign in with [redacted]" in result.stderr
        assert "RuntimeError: login refused for [redacted]" in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("CLAWOPS_LOG_FORMAT", "xml", "'xml' is not allowed; allowed: text, json"),
        (
            "CLAWOPS_LOG_LEVEL",
            "chatty",
            "'chatty' is not allowed; allowed: DEBUG, INFO, WARNING",
        ),
        ("CLAWOPS_LOG_MAX_BYTES", "ten", "'ten' is not allowed; a whole number of at least 1"),
        ("CLAWOPS_LOG_MAX_BYTES", "0", "'0' is not allowed; a whole number of at least 1"),
        ("CLAWOPS_LOG_BACKUPS", "-2", "'-2' is not allowed; a whole number of at least 1"),
        ("CLAWOPS_LOG_BACKUPS", "1.5", "'1.5' is not allowed; a whole number of at least 1"),
    ],
)
def test_a_bad_log_setting_stops_clawops_at_start_naming_what_is_allowed(
    tmp_path, name, value, says
):
    log_file = tmp_path / "logs" / "node.log"
    result = clawops(
        "check-config",
        env={name: value, "CLAWOPS_LOG_FILE": str(log_file)},
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert f"  - {name}: {says}" in result.stderr
    assert "Traceback" not in result.stderr and "config OK" not in result.stdout
    assert not log_file.parent.exists()  # nothing was set up


def test_a_log_file_that_cannot_be_created_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log directory should be")
    result = clawops(
        "check-config", env={"CLAWOPS_LOG_FILE": str(blocker / "node.log")}, cwd=tmp_path
    )
    assert result.returncode == 1
    assert f"CLAWOPS_LOG_FILE: cannot log to {blocker / 'node.log'}" in result.stderr
    assert "Traceback" not in result.stderr
    assert blocker.read_text() == "a file where the log directory should be"


def test_the_log_file_rotates_at_its_size_bound_and_stays_private(tmp_path):
    log_file = tmp_path / "logs" / "node.log"
    body = 'for n in range(60):\n    log.info("line %03d %s", n, "x" * 60)\n'
    env = {
        "CLAWOPS_LOG_FILE": str(log_file),
        "CLAWOPS_LOG_MAX_BYTES": "1000",
        "CLAWOPS_LOG_BACKUPS": "2",
    }
    result = child(tmp_path, body, env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # the file, instead of stderr
    files = sorted(p.name for p in log_file.parent.iterdir())
    assert files == ["node.log", "node.log.1", "node.log.2"]  # two backups kept, older dropped
    for path in log_file.parent.iterdir():
        assert 0 < path.stat().st_size <= 1000
        assert path.stat().st_mode & 0o777 == 0o600
    assert log_file.parent.stat().st_mode & 0o777 == 0o700
    assert "line 059" in log_file.read_text()
    assert "line 000" not in "".join(p.read_text() for p in log_file.parent.iterdir())


def test_oversized_service_output_files_are_copy_truncated_at_start(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    out, err = logs / "node.out.log", logs / "node.err.log"
    out.write_text("old stdout line\n" * 100)  # 1600 bytes: over the bound
    (logs / "node.out.log.1").write_text("the previous copy\n")
    err.write_text("a short stderr\n")  # under the bound: left alone
    # The service manager's descriptor, held across the rotation as launchd holds it.
    held = os.open(out, os.O_WRONLY | os.O_APPEND)
    try:
        env = {
            "CLAWOPS_LOG_FILE": str(logs / "node.log"),
            "CLAWOPS_LOG_MAX_BYTES": "1000",
            "CLAWOPS_LOG_BACKUPS": "3",
        }
        result = child(tmp_path, 'log.info("started")\n', env)
        assert result.returncode == 0, result.stderr
        assert out.stat().st_size == 0
        assert (logs / "node.out.log.1").read_text() == "old stdout line\n" * 100
        assert (logs / "node.out.log.2").read_text() == "the previous copy\n"
        os.write(held, b"after the rotation\n")
    finally:
        os.close(held)
    assert out.read_text() == "after the rotation\n"  # written at the new end, no hole
    assert err.read_text() == "a short stderr\n"
    assert not (logs / "node.err.log.1").exists()
    assert "started" in (logs / "node.log").read_text()


SSH_BODY = """
from core.config import MachineConfig
from core.executors import SSHExecutor

machine = MachineConfig.model_validate_json(sys.argv[1])
result = asyncio.run(SSHExecutor(machine).run(["echo", "over ssh"]))
log.info("ssh said %s", result.stdout.strip())
"""


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_asyncssh_says_nothing_per_connection_unless_the_level_is_debug(tmp_path, level):
    server = await start_sshd(tmp_path)
    try:
        ssh = {
            "host": server.host,
            "port": server.port,
            "user": server.user,
            "key": str(server.client_key),
            "known_hosts": str(server.known_hosts),
        }
        machine = {"name": "mini", "os": "linux", "address": server.host, "ssh": ssh}
        script = tmp_path / "child.py"
        script.write_text(PRELUDE + SSH_BODY)
        env = {**os.environ, "CLAWOPS_LOG_LEVEL": level, "CLAWOPS_LOG_FORMAT": "json"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            json.dumps(machine),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await server.close()
    lines = [json.loads(line) for line in err.decode().splitlines()]
    assert proc.returncode == 0, lines
    assert server.connections == 1
    assert {"logger": "clawops.test", "message": "ssh said over ssh"}.items() <= lines[-1].items()
    from_asyncssh = [x for x in lines if x["logger"].startswith("asyncssh")]
    if level == "INFO":
        assert from_asyncssh == []
    else:  # the same run at DEBUG shows them: the INFO run really had them to hide
        assert any(x["level"] == "INFO" for x in from_asyncssh)
