from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from core.config import default_config, load_config, parse_config, startup_refusals
from core.durations import format_duration, parse_duration
from core.errors import ConfigError, StartupRefused
from core.secrets import secret_env_names

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"


def example() -> dict:
    return tomllib.loads(EXAMPLE.read_text())


def problems_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return [str(p) for p in info.value.problems]


def test_the_example_describes_the_seed_fleet():
    config = load_config(EXAMPLE).config
    machines = {m.name: m for m in config.machines}
    assert set(machines) == {"macbook", "mac-mini", "msi"}
    assert machines["macbook"].local and machines["macbook"].address == "10.144.238.116"
    assert machines["mac-mini"].ssh is not None
    assert machines["mac-mini"].ssh.host == "felipes-mac-mini.local"
    assert machines["mac-mini"].ssh.user == "felipemacmini"
    assert machines["msi"].os == "windows"
    assert machines["msi"].socks_proxy == "127.0.0.1:1055"
    assert machines["msi"].timeout == timedelta(seconds=15)

    services = {(s.machine, s.name): s for s in config.services}
    assert services[("macbook", "gateway")].port == 18789
    assert services[("macbook", "ollama")].unit_name == "homebrew.mxcl.ollama"
    assert services[("macbook", "ollama")].launchd_domain == "daemon"
    assert services[("macbook", "crabwalk")].port == 9009
    assert services[("mac-mini", "aphos-server-prod")].manager == "pm2"
    assert services[("mac-mini", "aphos-server-prod")].port == 2567
    assert services[("mac-mini", "aphos-server-dev")].port == 2568
    assert services[("msi", "sshd")].manager == "windows"
    assert {"caffeinate", "system-cleanup", "failover", "clawdbot-node"} <= {
        s.name for s in config.services if s.machine == "mac-mini"
    }

    ranges = {r.project: r for r in config.port_ranges}
    assert ranges["aphos-game"].range == (2567, 2599)
    assert ranges["aphos-game"].default_port == [2567, 2568]
    assert ranges["ez-crm"].range == (3000, 3099)
    assert ranges["bmi-calculator"].range == (8081, 8081)

    assert config.jobs.heartbeat.every == timedelta(minutes=60)
    assert config.jobs.healer.every == timedelta(hours=2)
    assert config.jobs.system_cleanup.every == timedelta(minutes=15)
    assert config.jobs.failover.every == timedelta(seconds=30)
    assert (config.jobs.failover.failures, config.jobs.failover.successes) == (3, 5)
    commands = {c.name: c for c in config.jobs.commands}
    assert commands["lume-update"].cron == "0 10 * * *"
    assert commands["git-auto-sync"].cron == "*/15 * * * *"
    assert commands["clear-sessions"].cron == "0 0 * * 0"
    assert commands["crash-monitor"].every == timedelta(minutes=1)

    checkins = {c.job_id: c for c in config.checkins}
    assert set(checkins) == {
        "cleaner", "healer", "ios-dev", "linklounge", "ez-crm",
        "app-store", "rnd", "shitcoin-brain", "shitcoin-quant",
    }  # fmt: skip
    assert checkins["rnd"].period == timedelta(hours=6)
    assert checkins["shitcoin-quant"].period == timedelta(hours=1)
    assert checkins["app-store"].cron is not None

    assert config.claws.deployment_target == "mac-mini"
    assert len(config.claws.minis) == 1
    assert [o.slug for o in config.orgs] == ["felipe"]


def test_every_problem_is_reported_with_its_key_at_once():
    data = example()
    data["machines"][2]["os"] = "win"
    data["services"][0]["port"] = 99999
    data["jobs"]["heartbeat"]["every"] = "soon"
    data["port_ranges"][0]["range"] = "2600-2500"
    data["telegram"]["group_policy"] = "open"
    problems = problems_of(data)
    assert len(problems) == 5, problems
    joined = "\n".join(problems)
    assert "machines[2] (msi).os: 'win' is not allowed" in joined
    assert "'macos', 'linux' or 'windows'" in joined
    assert "services[0] (gateway).port: 99999" in joined
    assert "jobs.heartbeat.every: 'soon'" in joined
    assert "port_ranges[0] (aphos-game).range" in joined
    assert "telegram.group_policy: 'open'" in joined


def test_an_unknown_key_names_the_allowed_ones():
    data = example()
    data["machines"][0]["colour"] = "red"
    (problem,) = problems_of(data)
    assert problem.startswith("machines[0] (macbook).colour: unknown key")
    assert "address" in problem and "socks_proxy" in problem


def test_a_service_on_an_unknown_machine_is_refused():
    data = example()
    data["services"][0]["machine"] = "laptop"
    (problem,) = problems_of(data)
    assert "services[0] (gateway).machine" in problem
    assert "'laptop' is not defined" in problem and "mac-mini" in problem


def test_two_services_on_one_port_of_one_machine_are_refused():
    data = example()
    data["services"][1]["port"] = 18789  # ollama on the gateway's port
    (problem,) = problems_of(data)
    assert "port 18789 on macbook is already the port of 'gateway'" in problem


def test_cloudflare_deployment_is_not_supported():
    data = example()
    data["claws"]["deployment_target"] = "cloudflare"
    (problem,) = problems_of(data)
    assert "claws" in problem and "not supported" in problem


def test_a_default_port_outside_its_range_is_refused():
    data = example()
    data["port_ranges"][1]["default_port"] = 4000
    (problem,) = problems_of(data)
    assert "port_ranges[1] (ez-crm)" in problem and "outside the range 3000-3099" in problem


def test_a_standby_needs_a_peer_url():
    (problem,) = problems_of({"node": {"role": "standby"}})
    assert problem.startswith("node:") and "peer_url" in problem


def test_a_job_with_both_every_and_cron_is_refused_but_cron_replaces_a_default_every():
    (problem,) = problems_of({"jobs": {"healer": {"every": "1h", "cron": "0 * * * *"}}})
    assert "jobs.healer" in problem and "not both" in problem
    config = parse_config({"jobs": {"healer": {"cron": "0 */3 * * *"}}})
    assert config.jobs.healer.every is None


def test_a_bad_cron_line_is_explained():
    (problem,) = problems_of({"jobs": {"status_report": {"cron": "every morning"}}})
    assert "jobs.status_report.cron" in problem and "crontab" in problem


def test_an_open_sidecar_needs_a_token_env_in_the_file():
    (problem,) = problems_of({"sidecar": {"host": "0.0.0.0"}})
    assert problem.startswith("sidecar.token_env:") and "not loopback" in problem


def test_an_open_sidecar_refuses_to_start_until_its_token_is_set(monkeypatch):
    config = parse_config({"sidecar": {"host": "0.0.0.0", "token_env": "T_TOKEN"}})
    monkeypatch.delenv("T_TOKEN", raising=False)
    (reason,) = startup_refusals(config)
    assert "no API token" in reason and "T_TOKEN" in reason
    monkeypatch.setenv("T_TOKEN", "s3cret-" * 5)
    assert startup_refusals(config) == []
    assert config.sidecar_token() == "s3cret-" * 5


def test_a_sidecar_token_shorter_than_32_characters_is_refused_like_the_agents(monkeypatch):
    config = parse_config({"sidecar": {"token_env": "T_TOKEN"}})
    monkeypatch.setenv("T_TOKEN", "x" * 31)
    (reason,) = startup_refusals(config)
    assert reason.startswith("T_TOKEN is 31 characters") and "32+" in reason
    assert "x" * 31 not in reason
    monkeypatch.setenv("T_TOKEN", "x" * 32)
    assert startup_refusals(config) == []


def test_a_bad_database_url_is_explained_without_its_password(monkeypatch):
    (problem,) = problems_of({"database": {"url": "postgresql://ops:hunter2-db-pass@db/ops"}})
    assert "unsupported driver" in problem and "postgresql://ops:***@db/ops" in problem
    assert "hunter2" not in problem
    config = parse_config({"database": {"url_env": "T_DB_URL"}})
    monkeypatch.setenv("T_DB_URL", "mysql://ops:hunter2-db-pass@db/ops")
    with pytest.raises(StartupRefused) as info:
        config.database_url()
    assert "T_DB_URL" in str(info.value) and "unsupported driver" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_secrets_come_only_from_the_environment(monkeypatch):
    config = parse_config({"telegram": {"token_env": "MY_BOT_TOKEN"}})
    monkeypatch.delenv("MY_BOT_TOKEN", raising=False)
    assert config.telegram_token() is None
    monkeypatch.setenv("MY_BOT_TOKEN", "123:abc")
    assert config.telegram_token() == "123:abc"
    problems = problems_of({"telegram": {"token": "123:abc"}})
    assert "telegram.token: unknown key" in problems[0]


def test_invalid_toml_names_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[node]\nname = "a"\nrole = \n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "line 3" in str(info.value)


def test_an_explicit_missing_config_is_an_error_but_no_file_means_the_default(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLAWOPS_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    loaded = load_config(None)
    assert loaded.path is None
    assert loaded.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/data/clawops.db"
    (machine,) = loaded.config.machines
    assert machine.local and machine.address == "127.0.0.1"


def test_the_config_env_var_is_used_when_no_flag_is_given(tmp_path, monkeypatch):
    path = tmp_path / "fleet.toml"
    path.write_text('[node]\nname = "from-env"\n')
    monkeypatch.setenv("CLAWOPS_CONFIG", str(path))
    assert load_config(None).config.node.name == "from-env"


def test_the_embedded_default_is_valid_on_its_own():
    config = default_config()
    assert config.sidecar.host == "127.0.0.1" and config.sidecar.port == 9010
    assert startup_refusals(config) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", timedelta(seconds=30)), ("15m", timedelta(minutes=15)),
     ("1h30m", timedelta(minutes=90)), ("7d", timedelta(days=7)), (90, timedelta(seconds=90)),
     ("250ms", timedelta(milliseconds=250))],
)  # fmt: skip
def test_durations_parse(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["", "soon", "10", "5 minutes", "1h x", "0s", -5, True])
def test_bad_durations_say_what_is_allowed(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_format_duration_is_the_inverse_of_parse():
    for text in ("30s", "15m", "1h30m", "2d3h"):
        assert format_duration(parse_duration(text)) == text


def test_every_env_key_of_the_config_names_a_secret_a_child_must_not_inherit():
    data = example()
    data["database"] = {"url_env": "CLAWOPS_DB_URL"}
    data["sidecar"]["token_env"] = "SIDECAR_TOKEN_VAR"
    names = secret_env_names(parse_config(data))
    assert {
        "CLAWOPS_TELEGRAM_TOKEN",
        "SIDECAR_TOKEN_VAR",
        "CLAWOPS_DB_URL",
        "CLAWOPS_SECRET_KEY",
        "CLAWOPS_R2_ACCESS_KEY_ID",
        "CLAWOPS_R2_SECRET_ACCESS_KEY",
        "CLAWOPS_AGENT_TOKEN_MINI",
    } <= names
    assert all(name.isupper() for name in names)
