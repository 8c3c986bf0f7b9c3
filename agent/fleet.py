"""The agent's claws: create, restart, delete, back up, and the state file that survives restarts.

``state_dir/claws.json`` (mode 600) lists each claw's id, port, bucket, last pid and that
process's identity (start time and command line, agent/claw.py); the tokens live only in each
claw's config file (mode 600 in a home of mode 700). When the agent starts it stops what a
previous agent left running (SIGKILL to the process group) — only when the live process with
that pid still has the recorded identity: a reused pid, or a row with no identity, is logged and
left alone — and starts every claw again.
Changes are serialized by one lock, so two requests can never take one port or exceed capacity.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
from typing import Any

from agent.backup import BadArchive, Made, backup, restore_newest
from agent.claw import Claw, ProcessIdentity, identify, kill_group, write_private
from agent.config import AgentConfig
from core.buckets import Buckets, S3Settings
from core.errors import ClawopsError, StartupRefused

log = logging.getLogger("clawops.agent")


class Refused(ClawopsError):
    """A request the agent refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        # as a server would bind: a port with only TIME_WAIT connections left is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Fleet:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.claws: dict[str, Claw] = {}
        self.lock = asyncio.Lock()
        self.state_file = config.state_dir / "claws.json"
        self.drop_env = {config.token_env}
        if config.s3:
            self.drop_env |= {config.s3.access_key_id_env, config.s3.secret_access_key_env}

    def buckets(self) -> Buckets:
        s3 = self.config.s3
        if s3 is None:
            raise Refused(400, "this agent has no [agent.s3]: backups are off")
        try:
            settings = S3Settings.from_env(
                s3.endpoint_url, s3.access_key_id_env, s3.secret_access_key_env, s3.region
            )
        except ClawopsError as exc:
            raise Refused(503, str(exc)) from None
        return Buckets(settings)

    def _claw(self, claw_id: str, port: int, token: str, bucket: str | None) -> Claw:
        root = self.config.state_dir
        claw = Claw(claw_id, port, token, bucket, root / "homes" / claw_id,
                    root / "logs" / f"{claw_id}.log")  # fmt: skip
        claw.on_change = self.save
        return claw

    def save(self) -> None:
        rows = []
        for c in self.claws.values():
            row: dict[str, Any] = {
                "clawId": c.claw_id,
                "port": c.port,
                "bucket": c.bucket,
                "pid": c.pid,
            }
            if c.pid is not None and c.identity is not None:
                row |= {"started": c.identity.started, "command": c.identity.command}
            rows.append(row)
        write_private(self.state_file, json.dumps(rows, indent=2))

    @staticmethod
    async def end_leftover(row: dict[str, Any]) -> bool:
        """SIGKILL the process group a previous agent left for this row, only if the live
        process with its pid still has the recorded identity. Whether it was signalled."""
        claw_id, pid = row.get("clawId"), row.get("pid")
        if not isinstance(pid, int) or pid <= 1:
            return False
        live = await identify(pid)
        if live is None:
            return False  # gone: nothing to stop
        recorded = ProcessIdentity(str(row.get("started") or ""), str(row.get("command") or ""))
        if live != recorded:
            # Name the program only: another process's command line may hold its secrets.
            program = os.path.basename(live.command.split(maxsplit=1)[0])[:60]
            log.warning(
                "claw %s: pid %d is now another process (%s, started %s UTC), not the gateway "
                "recorded (started %s UTC): not signalled",
                claw_id,
                pid,
                program,
                live.started,
                recorded.started or "unknown",
            )
            return False
        log.info("claw %s: stopping gateway pid %d left by a previous agent", claw_id, pid)
        return kill_group(pid, signal.SIGKILL)

    def _start(self, claw: Claw) -> None:
        claw.start(self.config.gateway_command, self.drop_env)

    async def load(self) -> None:
        """Re-adopt the claws of a previous run: stop leftovers, start each claw again."""
        self.config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.config.state_dir, 0o700)
        try:
            rows: list[dict[str, Any]] = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise StartupRefused(
                f"the agent's state file {self.state_file} is unreadable ({exc}); "
                "fix or move it away (the claws' homes are kept)"
            ) from None
        for row in rows:
            await self.end_leftover(row)
            claw = self._claw(row["clawId"], int(row["port"]), "", row.get("bucket"))
            try:
                gateway = json.loads(claw.config_path.read_text())["gateway"]
                claw.token = gateway["auth"]["token"]
            except (OSError, ValueError, KeyError, TypeError):
                log.error("claw %s: config file unreadable; not started", claw.claw_id)
                claw.error = "config file missing or unreadable"
                self.claws[claw.claw_id] = claw
                continue
            self.claws[claw.claw_id] = claw
            self._start(claw)
        self.save()

    async def create(
        self, claw_id: str, port: int, token: str, bucket: str | None, restore: bool
    ) -> tuple[Claw, bool]:
        """The claw and whether it is new; an identical repeat returns the existing claw."""
        async with self.lock:
            existing = self.claws.get(claw_id)
            if existing is not None:
                if existing.port != port:
                    raise Refused(409, f"claw {claw_id} exists on port {existing.port}")
                return existing, False
            if port not in self.config.ports:
                raise Refused(409, f"port {port} is outside this agent's range "
                                   f"{self.config.port_range}")  # fmt: skip
            if any(c.port == port for c in self.claws.values()) or not port_free(port):
                raise Refused(409, f"port {port} is in use")
            if len(self.claws) >= self.config.max_claws:
                raise Refused(507, f"this agent is full ({self.config.max_claws} claws)")
            claw = self._claw(claw_id, port, token, bucket)
            if claw.home.exists():
                shutil.rmtree(claw.home)
            try:
                if restore and bucket:
                    restored = await restore_newest(
                        self.buckets(),
                        bucket,
                        claw.home,
                        cli=self.config.cli,
                        env=claw.environment(self.drop_env),
                        timeout=self.config.backup_timeout,
                    )
                    log.info("claw %s: restored %s", claw_id, restored or "nothing (no backup)")
                claw.write_config(self.config.gateway_config)
            except BadArchive as exc:
                shutil.rmtree(claw.home, ignore_errors=True)
                raise Refused(422, f"claw {claw_id} not created: {exc}") from None
            except BaseException:  # a failed create leaves nothing behind
                shutil.rmtree(claw.home, ignore_errors=True)
                raise
            self.claws[claw_id] = claw
            self.save()
            self._start(claw)
            return claw, True

    def get(self, claw_id: str) -> Claw:
        claw = self.claws.get(claw_id)
        if claw is None:
            raise Refused(404, f"no claw {claw_id} on this agent")
        return claw

    async def restart(self, claw_id: str) -> Claw:
        async with self.lock:
            claw = self.get(claw_id)
            await claw.stop(self.config.stop_timeout)
            claw.error = ""
            self._start(claw)
            return claw

    async def delete(self, claw_id: str) -> None:
        async with self.lock:
            claw = self.get(claw_id)
            await claw.stop(self.config.stop_timeout)
            del self.claws[claw_id]
            self.save()
            await asyncio.to_thread(shutil.rmtree, claw.home, True)
            claw.log_path.unlink(missing_ok=True)

    async def backup(self, claw_id: str, keep: int | None = None) -> Made:
        """Back ``claw_id`` up into its bucket; with ``keep``, only the newest ``keep`` stay."""
        claw = self.get(claw_id)
        if not claw.bucket:
            raise Refused(400, f"claw {claw_id} has no bucket")
        return await backup(
            self.buckets(),
            claw.bucket,
            claw.home,
            cli=self.config.cli,
            env=claw.environment(self.drop_env),
            timeout=self.config.backup_timeout,
            keep=keep,
        )

    async def shutdown(self) -> None:
        """Stop every gateway (the state file keeps them for the next start)."""
        await asyncio.gather(*(c.stop(self.config.stop_timeout) for c in self.claws.values()))
        self.save()
