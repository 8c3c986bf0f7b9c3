"""The agent's config: no default token, strict tables, clear problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig, load_agent_config
from core.errors import ConfigError, StartupRefused


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_the_defaults_are_loopback_port_7600_and_the_openclaw_command(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, '[agent]\ntoken_env = "T"\n'))
    assert config.host == "127.0.0.1" and config.port == 7600
    assert config.ports == range(3001, 3101)
    assert config.gateway_command == ["openclaw", "gateway", "run"]
    assert config.s3 is None and config.gateway_config == {}


def test_every_problem_is_named_with_its_key(tmp_path: Path) -> None:
    text = '[agent]\nport_range = "3100-3001"\nmax_claws = 0\ncolour = "red"\n'
    with pytest.raises(ConfigError) as caught:
        load_agent_config(write(tmp_path, text))
    keys = {p.key for p in caught.value.problems}
    assert keys == {"agent.token_env", "agent.port_range", "agent.max_claws", "agent.colour"}


def test_a_missing_agent_table_is_a_clear_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[agent\] is missing"):
        load_agent_config(write(tmp_path, "[node]\n"))


def test_the_token_must_be_set_and_long(monkeypatch: pytest.MonkeyPatch) -> None:
    config = AgentConfig(token_env="CLAWOPS_TEST_AGENT_T", host="0.0.0.0")
    monkeypatch.delenv("CLAWOPS_TEST_AGENT_T", raising=False)
    with pytest.raises(StartupRefused, match="set CLAWOPS_TEST_AGENT_T"):
        config.token()
    monkeypatch.setenv("CLAWOPS_TEST_AGENT_T", "x" * 31)
    with pytest.raises(StartupRefused, match="31 characters"):
        config.token()
    monkeypatch.setenv("CLAWOPS_TEST_AGENT_T", "x" * 32)
    assert config.token() == "x" * 32
