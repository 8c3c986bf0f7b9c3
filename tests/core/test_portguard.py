"""What /kill leaves alone (core.portguard) and the process tree it reads (core.processes)."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from core.config import parse_config
from core.errors import InputError
from core.executors import LocalExecutor
from core.minis import Mini
from core.portguard import kill_guard
from core.ports import Listener
from core.processes import command_lines, descendants, parse_lines, parse_tree, process_tree

CONFIG = parse_config(
    {
        "protected_ports": [5432],
        "sidecar": {"port": 9010},
        "machines": [
            {
                "name": "here",
                "os": "linux",
                "address": "127.0.0.1",
                "local": True,
                "protected_ports": [6379],
            },
            {
                "name": "mini",
                "os": "macos",
                "address": "10.0.0.7",
                "ssh": {"host": "mini.local", "port": 2222},
            },
            {"name": "msi", "os": "windows", "address": "10.0.0.9", "ssh": {"host": "10.0.0.9"}},
        ],
    }
)
NODE = {9010: "this node's sidecar", 9011: "this node's local Bot API"}


def mini(hostname: str, agent_url: str) -> Mini:
    return Mini(1, hostname, agent_url, "T", None, None, None, 3001, 3100, 6, "online", None)


def reasons(machine: str, minis: list[Mini] | None = None) -> dict[int, str]:
    found = CONFIG.machine(machine)
    assert found is not None
    return dict(kill_guard(CONFIG, found, node_ports=NODE, minis=minis or [], node_pid=1).ports)


def test_the_nodes_own_ports_are_guarded_only_where_the_node_runs():
    assert reasons("here")[9010] == "this node's sidecar"
    assert reasons("here")[9011] == "this node's local Bot API"
    assert 9010 not in reasons("mini") and 9011 not in reasons("msi")


def test_the_ssh_port_is_the_machines_own_and_22_by_default():
    assert reasons("mini")[2222] == "mini's SSH port" and 22 not in reasons("mini")
    assert reasons("msi")[22] == "msi's SSH port"
    assert 22 not in reasons("here")  # no [machines.ssh]: nothing reaches it over SSH


def test_protected_ports_are_the_global_list_and_the_machines_own():
    assert reasons("here")[5432] == "a protected port (protected_ports)"
    assert reasons("here")[6379] == "a protected port of here (machines.protected_ports)"
    assert reasons("mini")[5432] == "a protected port (protected_ports)"
    assert 6379 not in reasons("mini")


def test_an_agent_port_is_guarded_on_the_machine_its_url_or_hostname_names():
    minis = [
        mini("m1", "http://10.0.0.7:7600"),  # the address of "mini"
        mini("mini.local", "https://agent.example.dev"),  # its SSH host; https: port 443
        mini("m3", "http://127.0.0.1:7700"),  # loopback: the node's machine
        mini("m4", "http://10.9.9.9:7800"),  # no machine of ours
    ]
    assert reasons("mini", minis)[7600] == "the clawops agent of Mini m1"
    assert reasons("mini", minis)[443] == "the clawops agent of Mini mini.local"
    assert reasons("here", minis)[7700] == "the clawops agent of Mini m3"
    assert 7700 not in reasons("mini", minis)
    assert all(7800 not in reasons(m, minis) for m in ("here", "mini", "msi"))


def test_a_guarded_port_is_refused_with_its_reason_and_the_nodes_own_pid_too():
    here = CONFIG.machine("here")
    assert here is not None
    guard = kill_guard(CONFIG, here, node_ports=NODE, minis=[], node_pid=os.getpid())
    with pytest.raises(InputError, match="here:9010 is this node's sidecar; refusing"):
        guard.check_port(9010)
    guard.check_port(8080)  # nothing to say about an ordinary port
    with pytest.raises(InputError, match=f"this node's own process \\(pid {os.getpid()}\\)"):
        guard.check_holders([Listener(8080, os.getpid(), "python3", "127.0.0.1")])
    guard.check_holders([Listener(8080, os.getpid() + 1, "python3", "127.0.0.1")])
    remote = CONFIG.machine("mini")
    assert remote is not None
    elsewhere = kill_guard(CONFIG, remote, node_ports=NODE, minis=[], node_pid=os.getpid())
    # On another machine the same number is some other process: not refused for that.
    elsewhere.check_holders([Listener(8080, os.getpid(), "node", "10.0.0.7")])


# -- the process tree ---------------------------------------------------------------------------


async def test_a_child_is_a_descendant_of_its_parent_in_the_live_tree():
    code = "import subprocess,sys; subprocess.run(['sleep', '30'])"
    parent = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
    here = CONFIG.machine("here")
    assert here is not None
    try:
        for _ in range(100):
            tree = await process_tree(here, LocalExecutor(here))
            children = [pid for pid, ppid in tree.items() if ppid == parent.pid]
            if children:
                break
            await asyncio.sleep(0.05)
        (child,) = children
        below = descendants(tree, {parent.pid: "svc"})
        assert below[child] == "svc" and os.getpid() not in below
        lines = await command_lines(here, LocalExecutor(here), [child, parent.pid])
        assert lines[child] == "sleep 30" and "subprocess.run" in lines[parent.pid]
    finally:
        parent.kill()
        await parent.wait()


def test_a_nested_root_keeps_its_subtree_and_a_cycle_ends():
    tree = {10: 1, 11: 10, 12: 11, 13: 12, 20: 21, 21: 20}
    assert descendants(tree, {10: "a", 12: "b", 20: "c"}) == {
        10: "a",
        11: "a",
        12: "b",
        13: "b",
        20: "c",
        21: "c",
    }


def test_windows_process_lists_come_from_win32_process_json():
    tree = '[{"ProcessId":4,"ParentProcessId":0},{"ProcessId":8812,"ParentProcessId":4}]'
    assert parse_tree("windows", tree) == {4: 0, 8812: 4}
    one = '{"ProcessId":8812,"CommandLine":"C:\\\\ollama\\\\ollama.exe serve"}'
    assert parse_lines("windows", one) == {8812: "C:\\ollama\\ollama.exe serve"}
    assert parse_lines("windows", '{"ProcessId":4,"CommandLine":null}') == {4: ""}


def test_secrets_in_a_command_line_are_redacted_before_anyone_sees_it():
    bot = "123456789:" + "A" * 35
    listed = (
        f"7 python3 bot.py --token s3cr3t-value --api-key=k3y PASSWORD=pw1 {bot} "
        "postgresql://app:hunter2@db/app --port 8080 --token-file /run/t --secret -v"
    )
    (line,) = parse_lines("linux", listed).values()
    for secret in ("s3cr3t-value", "k3y", "pw1", bot, "hunter2"):
        assert secret not in line, line
    assert "--port 8080" in line and "python3 bot.py --token " in line
    assert "--secret -v" in line  # a flag followed by another flag has no value to hide


def test_a_long_command_line_is_cut_for_the_screen():
    (line,) = parse_lines("linux", "42 node " + "x" * 1000).values()
    assert len(line) == 300 and line.endswith("…")
