"""macOS: a claw's gateway as a LaunchDaemon (generation only; installing is the operator's step).

The plist runs ``gateway_command`` as ``user`` with HOME/TMPDIR in the claw's home and launchd's
KeepAlive doing the restarts. The token is NOT in the plist (plists under /Library/LaunchDaemons
are world-readable): the gateway reads it from ``$HOME/.openclaw/openclaw.json`` (mode 600).
Install with ``sudo cp PLIST /Library/LaunchDaemons/ && sudo launchctl bootstrap system PLIST``.
"""

from __future__ import annotations

import plistlib
from pathlib import Path

LABEL_PREFIX = "com.clawops.claw."


def label(claw_id: str) -> str:
    return f"{LABEL_PREFIX}{claw_id}"


def gateway_plist(
    claw_id: str, gateway_command: list[str], home: Path, user: str, log_dir: Path
) -> bytes:
    """The LaunchDaemon plist (XML bytes) for one claw's gateway."""
    if any(arg.split("=")[0] in ("--token", "--auth-token") for arg in gateway_command):
        raise ValueError("gateway_command must not carry a token: it goes in the config file")
    spec = {
        "Label": label(claw_id),
        "ProgramArguments": list(gateway_command),
        "UserName": user,
        "WorkingDirectory": str(home),
        "EnvironmentVariables": {
            "HOME": str(home),
            "TMPDIR": str(home / "tmp"),
            "OPENCLAW_DISABLE_BONJOUR": "1",
            "OPENCLAW_NO_AUTO_UPDATE": "1",
        },
        "RunAtLoad": True,
        "KeepAlive": True,
        "ThrottleInterval": 10,
        "ProcessType": "Background",
        "StandardOutPath": str(log_dir / f"{claw_id}.out.log"),
        "StandardErrorPath": str(log_dir / f"{claw_id}.err.log"),
    }
    return plistlib.dumps(spec)


def plist_path(claw_id: str, root: Path = Path("/Library/LaunchDaemons")) -> Path:
    return root / f"{label(claw_id)}.plist"
