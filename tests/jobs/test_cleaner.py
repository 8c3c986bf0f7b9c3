"""The cleaner: real orphaned processes found and ended, port conflicts, ps formats of both OSes."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from core.errors import InputError
from jobs.cleaner import (
    cleaner,
    launchd_pids,
    orphans,
    parse_etime,
    parse_ps,
    ps_command,
    service_cgroup,
)
from jobs.registry import builtin_jobs

# pid, ppid, sid (Linux) or pgid (macOS), age, command line. 640 and 700 are daemons run by a
# manager (session/group leaders with PPID 1): never orphans.
LINUX_PS = """\
      1       0       1    8123 /sbin/init splash
    640       1     640    8000 node /usr/lib/node_modules/pm2/lib/Daemon.js
    812       1     777    7400 node /usr/lib/node_modules/next/dist/server/next-server.js
    913     812     777      30 esbuild --service=0.19.2 --ping
   1024       1     777      12 node expo start
"""
MACOS_PS = """\
    1     0     1 12-03:04:05 /sbin/launchd
  700     1   700 3-00:00:00 node /opt/homebrew/bin/expo-server start
  501     1   480    02:10:00 node /Users/felipe/app/node_modules/.bin/expo start
  502   501   502       05:07 /bin/zsh -l
  503     1   480       00:09 esbuild --service=0.19.2
"""


def test_elapsed_times_of_both_ps_formats_are_read():
    assert parse_etime("8123") == 8123
    assert parse_etime("05:07") == 5 * 60 + 7
    assert parse_etime("02:10:00") == 2 * 3600 + 10 * 60
    assert parse_etime("12-03:04:05") == ((12 * 24 + 3) * 60 + 4) * 60 + 5
    with pytest.raises(ValueError, match="not an elapsed time"):
        parse_etime("3 days")


def test_orphans_are_old_children_of_pid_1_not_leading_a_session_whose_command_matches():
    patterns = [__import__("re").compile(p) for p in ("node", "next-server", "esbuild")]
    linux = orphans(parse_ps(LINUX_PS), patterns, timedelta(hours=2))
    assert [(p.pid, p.age) for p in linux] == [(812, 7400)]
    mac = orphans(parse_ps(MACOS_PS), patterns, timedelta(hours=2))
    assert [(p.pid, p.args) for p in mac] == [
        (501, "node /Users/felipe/app/node_modules/.bin/expo start")
    ]
    young = orphans(parse_ps(MACOS_PS), patterns, timedelta(seconds=5))
    assert [p.pid for p in young] == [501, 503]
    assert ps_command("macos")[3] == "pid=,ppid=,pgid=,etime=,args="
    assert ps_command("linux")[3] == "pid=,ppid=,sid=,etimes=,args="


def test_what_systemd_and_launchd_say_they_run_is_read_from_their_own_words():
    cgroups = "\n".join(
        [
            "/proc/640/cgroup:0::/system.slice/pm2-felipe.service",
            "/proc/641/cgroup:0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.service",
            "/proc/812/cgroup:0::/user.slice/user-1000.slice/user@1000.service/app.slice/vte.scope",
            "/proc/913/cgroup:0::/user.slice/user-1000.slice/session-3.scope",
            "/proc/950/cgroup:1:name=systemd:/system.slice/nginx.service",
            "/proc/951/cgroup:0::/",
        ]
    )
    assert service_cgroup(cgroups) == {640, 641, 950}
    listing = "PID\tStatus\tLabel\n700\t0\tcom.felipe.expo\n-\t78\tcom.felipe.gone\n"
    assert launchd_pids(listing) == {700}


def ps_line(pid: int) -> str:
    out = subprocess.run(
        ["ps", "-o", "ppid=,stat=", "-p", str(pid)], capture_output=True, text=True
    )
    return out.stdout.strip()


def alive(pid: int) -> bool:
    line = ps_line(pid)
    return bool(line) and not line.split()[-1].startswith("Z")


def spawn_orphan(tag: str, daemon: bool = False) -> int:
    """A python sleeping 5 minutes whose parent shell has exited (double fork): its pid. A
    ``daemon`` calls setsid first, as launchd, systemd and PM2 do for what they run."""
    code = "import time; time.sleep(300)"
    setsid = "setsid " if daemon else ""
    script = f"{setsid}'{sys.executable}' -c '{code}' {tag} >/dev/null 2>&1 &"
    subprocess.run(["sh", "-c", script], check=True)
    for _ in range(50):
        out = subprocess.run(["pgrep", "-f", tag], capture_output=True, text=True).stdout.split()
        if out:
            return int(out[0])
        subprocess.run(["sleep", "0.05"])
    raise AssertionError(f"orphan {tag} did not start")


@pytest.fixture
def orphan_pair():
    token = uuid.uuid4().hex[:10]
    victim, bystander = f"clawops-orphan-{token}-stale", f"clawops-keeper-{token}"
    # The daemon matches the orphan pattern too, has PPID 1 too, but leads its own session.
    daemon = f"clawops-orphan-{token}-daemon"
    pids = {
        victim: spawn_orphan(victim),
        bystander: spawn_orphan(bystander),
        daemon: spawn_orphan(daemon, daemon=True),
    }
    parents = {ps_line(pid).split()[0] for pid in pids.values()}
    if parents != {"1"}:
        for pid in pids.values():
            subprocess.run(["kill", str(pid)])
        pytest.skip(f"orphans are adopted by pid {parents} here, not by 1 (a subreaper)")
    yield token, pids[victim], pids[bystander], pids[daemon]
    for pid in pids.values():
        subprocess.run(["kill", "-KILL", str(pid)], capture_output=True)


def cleaner_config(token: str, kill: bool, **extra) -> dict:
    return {
        "jobs": {
            "cleaner": {
                "orphan_min_age": "1s",
                "orphan_patterns": [f"clawops-orphan-{token}"],
                "kill_orphans": kill,
                **extra,
            }
        }
    }


async def test_with_kill_orphans_exactly_the_matching_orphan_is_ended(harness, orphan_pair):
    token, victim, bystander, daemon = orphan_pair
    h = harness(cleaner_config(token, kill=True))
    await asyncio.sleep(1.2)
    result = await cleaner(h.ctx)
    found = result.data["machines"]["here"]
    assert [o["pid"] for o in found["orphans"]] == [victim], result.data
    assert found["killed"] == [victim]
    assert result.outcome == "warning" and "1 orphan(s) killed" in result.summary
    for _ in range(50):
        if not alive(victim):
            break
        await asyncio.sleep(0.1)
    assert not alive(victim) and alive(bystander) and alive(daemon)


async def test_without_kill_orphans_orphans_are_only_reported(harness, orphan_pair):
    token, victim, bystander, daemon = orphan_pair
    h = harness(cleaner_config(token, kill=False))
    fresh = await cleaner(h.ctx)  # younger than orphan_min_age: not an orphan yet
    assert fresh.data["machines"]["here"]["orphans"] == [] and fresh.outcome == "ok"
    await asyncio.sleep(1.2)
    result = await cleaner(h.ctx)
    found = result.data["machines"]["here"]
    assert [o["pid"] for o in found["orphans"]] == [victim] and found["killed"] == []
    assert "1 orphan(s) found" in result.summary and alive(victim) and alive(bystander)
    assert alive(daemon)


async def test_a_bad_orphan_pattern_fails_the_run_and_ends_nothing(harness, orphan_pair):
    token, victim, _, _ = orphan_pair
    h = harness(cleaner_config(token, kill=True, orphan_patterns=["node(", f"orphan-{token}"]))
    await asyncio.sleep(1.2)
    with pytest.raises(InputError, match=r"orphan_patterns: 'node\(' is not valid"):
        await cleaner(h.ctx)
    assert alive(victim)


async def test_a_port_held_by_another_process_is_a_reported_conflict(harness):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        h = harness(
            {
                "services": [
                    {"name": "aphos-api", "machine": "here", "manager": "process", "port": port}
                ],
                "jobs": {"cleaner": {"orphan_patterns": ["^clawops-never-matches$"]}},
            }
        )
        result = await cleaner(h.ctx)
    conflicts = result.data["machines"]["here"]["conflicts"]
    assert any(c.startswith("port of aphos-api, held by") for c in conflicts), conflicts
    assert result.outcome == "warning" and "port conflict" in result.summary


async def test_the_cleaner_and_system_cleanup_are_builtin_jobs(harness):
    names = {spec.name for spec in builtin_jobs(harness().config)}
    assert {"cleaner", "system_cleanup"} <= names
    assert Path(__file__).name == "test_cleaner.py"
