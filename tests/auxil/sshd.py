"""A real SSH server on loopback (asyncssh's server) that runs real commands with /bin/sh.

Key-only authentication, a fresh host key per server, and a known_hosts file for clients, so
tests exercise host-key checking as production does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
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

    async def close(self) -> None:
        self.server.close()
        for proc in self.processes:
            if proc.returncode is None:
                _kill_group(proc)
                await proc.wait()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _run_command(process: asyncssh.SSHServerProcess, server: SSHServer) -> None:
    command = process.command or ""
    server.commands.append(command)
    data = await process.stdin.read()
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


async def start_sshd(tmp: Path, host: str = "127.0.0.1", user: str = "ops") -> SSHServer:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = tmp / "id_ed25519"
    client_key.write_private_key(str(key_path))
    key_path.chmod(0o600)
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    state: list[SSHServer] = []
    acceptor = await asyncssh.listen(
        host, 0, server_host_keys=[host_key], authorized_client_keys=authorized,
        process_factory=lambda process: _run_command(process, state[0]),
        allow_scp=False,
    )  # fmt: skip
    port = acceptor.sockets[0].getsockname()[1]
    known_hosts = tmp / "known_hosts"
    known_hosts.write_text(f"[{host}]:{port} {host_key.export_public_key().decode().strip()}\n")
    state.append(SSHServer(host, port, user, key_path, known_hosts, acceptor, [], []))
    return state[0]
