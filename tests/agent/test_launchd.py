"""The LaunchDaemon plist for a claw's gateway (generated here; only macOS would load it)."""

from __future__ import annotations

import plistlib
from pathlib import Path

import pytest

from agent.launchd import gateway_plist, label, plist_path

COMMAND = ["/opt/node/bin/node", "/opt/openclaw/openclaw.mjs", "gateway", "run"]
HOME = Path("/Users/clawops/claws/alpha")


def test_the_plist_runs_the_gateway_as_the_claw_user_and_keeps_it_alive() -> None:
    spec = plistlib.loads(gateway_plist("alpha", COMMAND, HOME, "clawops", Path("/var/log/claws")))
    assert spec["Label"] == "com.clawops.claw.alpha" == label("alpha")
    assert spec["ProgramArguments"] == COMMAND
    assert spec["UserName"] == "clawops"
    assert spec["KeepAlive"] is True and spec["RunAtLoad"] is True
    assert spec["WorkingDirectory"] == str(HOME)
    assert spec["StandardOutPath"] == "/var/log/claws/alpha.out.log"
    assert spec["StandardErrorPath"] == "/var/log/claws/alpha.err.log"
    assert spec["EnvironmentVariables"] == {
        "HOME": str(HOME), "TMPDIR": str(HOME / "tmp"),
        "OPENCLAW_DISABLE_BONJOUR": "1", "OPENCLAW_NO_AUTO_UPDATE": "1",
    }  # fmt: skip


def test_the_plist_never_holds_a_token() -> None:
    text = gateway_plist("alpha", COMMAND, HOME, "clawops", Path("/var/log")).decode()
    assert "OPENCLAW_GATEWAY_TOKEN" not in text
    assert "token" not in text.lower()


def test_a_command_carrying_a_token_is_refused() -> None:
    with pytest.raises(ValueError, match="must not carry a token"):
        gateway_plist("alpha", [*COMMAND, "--token", "secret"], HOME, "clawops", Path("/l"))


def test_the_plist_goes_to_the_launch_daemons_folder() -> None:
    assert plist_path("alpha") == Path("/Library/LaunchDaemons/com.clawops.claw.alpha.plist")
