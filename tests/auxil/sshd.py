"""A real SSH server on loopback (asyncssh's server) that runs real commands with /bin/sh.

Key-only authentication, a fresh host key per server, and a known_hosts file for clients, so
tests exercise host-key checking as production does. For simulating a fleet (bench/), a server
can also wait ``delay`` seconds before answering each command (a slow link or a busy machine),
answer given command lines with canned stdout instead of running them (a recorded real output),
and counts the SSH connections it accepted and the most commands it answered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh


@dataclass
class SSHServer:
    host: str
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    server: asyncssh.SSHAcceptor
    commands: list[str]
    processes: list[asyncio.subprocess.Process]
    delay: float = 0.0  # seconds before each command is answered
    canned: Mapping[str, str] = field(default_factory=dict)  # command line -> stdout, exit 0
    connections: int = 0  # SSH connections accepted
    running: int = 0  # commands being answered now
    most_running: int = 0  # the most at any one time

    async def close(self) -> None:
        self.server.close()
        for proc in self.processes:
            if proc.returncode is None:
                _kill_group(proc)
                await proc.wait()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _run_command(process: asyncssh.SSHServerProcess[str], server: SSHServer) -> None:
    server.running += 1
    server.most_running = max(server.most_running, server.running)
    try:
        await _answer(process, server)
    finally:
        server.running -= 1


async def _answer(process: asyncssh.SSHServerProcess[str], server: SSHServer) -> None:
    command = process.command or ""
    server.commands.append(command)
    data = await process.stdin.read()
    if server.delay:
        await asyncio.sleep(server.delay)
    if command in server.canned:
        process.stdout.write(server.canned[command])
        process.exit(0)
        return
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    server.processes.append(proc)
    # Like sshd, end the command when the client closes its channel (a timed-out command).
    output = asyncio.ensure_future(proc.communicate(data.encode() if data else None))
    closed = asyncio.ensure_future(process.channel.wait_closed())
    await asyncio.wait({output, closed}, return_when=asyncio.FIRST_COMPLETED)
    if not output.done():
        _kill_group(proc)
        await output
        return
    closed.cancel()
    out, err = output.result()
    process.stdout.write(out.decode(errors="replace"))
    process.stderr.write(err.decode(errors="replace"))
    process.exit(proc.returncode or 0)


class _Counting(asyncssh.SSHServer):
    def __init__(self, server: SSHServer) -> None:
        self._server = server

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._server.connections += 1


async def start_sshd(
    tmp: Path, host: str = "127.0.0.1", user: str = "ops", *, delay: float = 0.0,
    canned: Mapping[str, str] | None = None,
) -> SSHServer:  # fmt: skip
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = tmp / "id_ed25519"
    client_key.write_private_key(str(key_path))
    key_path.chmod(0o600)
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    state: list[SSHServer] = []
    acceptor = await asyncssh.listen(
        host, 0, server_host_keys=[host_key], authorized_client_keys=authorized,
        server_factory=lambda: _Counting(state[0]),
        process_factory=lambda process: _run_command(process, state[0]),
        allow_scp=False,
    )  # fmt: skip
    port = acceptor.sockets[0].getsockname()[1]
    known_hosts = tmp / "known_hosts"
    known_hosts.write_text(f"[{host}]:{port} {host_key.export_public_key().decode().strip()}\n")
    server = SSHServer(host, port, user, key_path, known_hosts, acceptor, [], [], delay=delay)
    server.canned = dict(canned or {})
    state.append(server)
    return state[0]
