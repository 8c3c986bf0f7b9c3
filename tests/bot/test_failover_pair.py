"""The failover pair's two shipped configs, through the real `clawops check-config`: both valid,
and the standby's one rule that matters (no command on the MacBook it cannot SSH to) enforced
with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_config
from tests.bot.test_cli import ROOT, clawops

PRIMARY = ROOT / "config.example.toml"
STANDBY = ROOT / "examples" / "standby.toml"


@pytest.mark.parametrize("path", [PRIMARY, STANDBY], ids=["primary", "standby"])
def test_check_config_accepts_both_configs_of_the_pair(path: Path):
    result = clawops("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout and "3 machine(s)" in result.stdout


def test_the_two_configs_point_at_each_other_and_the_standby_has_no_ssh_to_the_macbook():
    primary, standby = load_config(PRIMARY).config, load_config(STANDBY).config
    assert (primary.node.role, standby.node.role) == ("primary", "standby")
    assert primary.node.peer_url and "10.144.238.117:9010" in primary.node.peer_url
    assert standby.node.peer_url == "http://10.144.238.116:9010/healthz"
    local = standby.local_machine()
    assert local is not None and local.name == "mac-mini"
    macbook = standby.machine("macbook")
    assert macbook is not None and macbook.ssh is None and not macbook.runs_commands
    # The MacBook is watched by HTTP checks against its LAN address, never by a command.
    checks = [s.health for s in standby.services if s.machine == "macbook" and s.health]
    assert checks and all(c.type == "http" and "10.144.238.116" in c.url for c in checks)
    # One bot and one sidecar token for both: the same variable names.
    assert primary.telegram.token_env == standby.telegram.token_env
    assert primary.sidecar.token_env == standby.sidecar.token_env
    assert (primary.database.url_env, standby.database.url_env) == (None, None)


def test_check_config_refuses_a_scheduled_command_on_a_machine_without_ssh(tmp_path: Path):
    bad = tmp_path / "standby.toml"
    bad.write_text(
        STANDBY.read_text() + '\n[[jobs.commands]]\nname = "git-auto-sync"\nmachine = "macbook"\n'
        'cron = "*/15 * * * *"\nargv = ["/Users/felipevieira/clawd/.git-auto-sync.sh"]\n'
    )
    result = clawops("check-config", "--config", str(bad))
    assert result.returncode == 1, result.stdout
    assert (
        "jobs.commands[0] (git-auto-sync).machine: machine 'macbook' has no SSH from this node"
        in result.stderr
    )
    assert "a scheduled command needs SSH or the local machine" in result.stderr
    assert "Traceback" not in result.stderr
