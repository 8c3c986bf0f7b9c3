"""The node's client of a Mini agent (the agent HTTP contract, SPEC 6), over httpx.

Every answer is checked: a non-2xx status, or a 2xx whose JSON body lacks ``"ok": true``, is a
failure, and so is an answer of the wrong shape. Failures are ours, never httpx's::

    RemoteError          the agent answered with a failure (message carries its "error" text)
    ├── NotFound         404: the agent does not hold that claw
    ├── Unauthorized     401: the agent refused the token
    └── Unreachable      no answer at all (refused, timed out, connection dropped)
        └── NotReached   the request never left: nothing can have changed on the agent

Idempotent calls (create, which the contract makes idempotent for one clawId+port, status,
list, delete, health, approve_device) are retried with exponential backoff on transport errors
and on 500, 502, 503 and 504; restart and backup are not. ``delete`` treats 404 as already gone.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from functools import cache
from typing import Any

import httpx

from core.errors import RemoteError, Unreachable

RETRY_STATUSES = frozenset({500, 502, 503, 504})
CLAW_STATUSES = frozenset({"starting", "running", "crashed", "stopped"})


class NotReached(Unreachable):
    """The request never reached the agent (connection refused, connect timeout)."""


class NotFound(RemoteError):
    """The agent does not hold that claw (404)."""


class Unauthorized(RemoteError):
    """The agent refused the bearer token (401)."""


@dataclass(frozen=True)
class ClawInfo:
    claw_id: str
    port: int
    status: str
    pid: int | None
    restarts: int
    ready: bool
    error: str


@dataclass(frozen=True)
class AgentHealth:
    capacity: int
    claws: int
    load1: float
    memory_percent: float
    disk_percent: float
    version: str = "unknown"  # the agent's clawops version (an older agent does not say)
    port_range: str | None = None  # the ports its gateways may use, "3001-3100" (likewise)


@dataclass(frozen=True)
class BackupInfo:
    """One backup the agent made and uploaded: its key in the claw's bucket, its size in bytes,
    how long it took, how (``openclaw``: the gateway's own ``openclaw backup create``;
    ``tarball``: the claw's home, where that command is unavailable), and the older backups it
    deleted to keep the newest ``keep``."""

    key: str
    size: int
    seconds: float
    method: str
    pruned: int = 0


class AgentClient:
    """One agent at ``base_url``; use as an async context manager (or call ``aclose``)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            verify=_tls(),
            trust_env=False,  # never route agent traffic through an environment proxy
        )

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def create(
        self, claw_id: str, port: int, token: str, bucket: str | None, *, restore: bool = False
    ) -> ClawInfo:
        body = {"clawId": claw_id, "port": port, "token": token, "bucket": bucket}
        body["restore"] = restore
        answer = await self._call("POST", "/claws", body, idempotent=True)
        return _claw(answer.get("claw"), "POST /claws")

    async def status(self, claw_id: str) -> ClawInfo:
        path = f"/claws/{claw_id}/status"
        return _claw((await self._call("GET", path, idempotent=True)).get("claw"), path)

    async def list(self) -> list[ClawInfo]:
        claws = (await self._call("GET", "/claws", idempotent=True)).get("claws")
        if not isinstance(claws, list):
            raise RemoteError(f"agent {self.base_url}: GET /claws: answer has no claws list")
        return [_claw(c, "GET /claws") for c in claws]

    async def delete(self, claw_id: str) -> None:
        """Stop and remove ``claw_id``; one the agent does not hold is already deleted."""
        try:
            await self._call("DELETE", f"/claws/{claw_id}", idempotent=True)
        except NotFound:
            return

    async def restart(self, claw_id: str) -> ClawInfo:
        path = f"/claws/{claw_id}/restart"
        return _claw((await self._call("POST", path, {}, idempotent=False)).get("claw"), path)

    async def backup(self, claw_id: str, keep: int | None = None) -> BackupInfo:
        """Back the claw up into its bucket; with ``keep``, delete all but the newest ``keep``."""
        path = f"/claws/{claw_id}/backup"
        body = {} if keep is None else {"keep": keep}
        answer = await self._call("POST", path, body, idempotent=False)
        key = answer.get("key")
        if not isinstance(key, str) or not key:
            raise RemoteError(f"agent {self.base_url}: POST {path}: answer has no backup key")
        try:
            return BackupInfo(
                key=key,
                size=_int(answer.get("size", 0)),
                seconds=float(answer.get("seconds", 0.0)),
                method=str(answer.get("method", "tarball")),
                pruned=_int(answer.get("pruned", 0)),
            )
        except (TypeError, ValueError):
            raise RemoteError(f"agent {self.base_url}: POST {path}: malformed answer") from None

    async def approve_device(self, claw_id: str, device_id: str, public_key: str) -> str:
        """Approve a device on the claw's gateway; ``approved``, or ``paired`` if it already was.

        The device must have tried to connect first (the gateway keeps a pending request); the
        call is idempotent, so it is retried like the other idempotent calls.
        """
        path = f"/claws/{claw_id}/devices"
        body = {"deviceId": device_id, "publicKey": public_key}
        status = (await self._call("POST", path, body, idempotent=True)).get("status")
        if status not in ("approved", "paired"):
            raise RemoteError(f"agent {self.base_url}: POST {path}: answer has no device status")
        return str(status)

    async def health(self) -> AgentHealth:
        answer = await self._call("GET", "/health", idempotent=True)
        try:
            return AgentHealth(
                capacity=_int(answer["capacity"]),
                claws=_int(answer["claws"]),
                load1=float(answer["load1"]),
                memory_percent=float(answer["memoryPercent"]),
                disk_percent=float(answer["diskPercent"]),
                version=str(answer.get("version") or "unknown")[:64],
                port_range=_optional_text(answer.get("portRange")),
            )
        except (KeyError, TypeError, ValueError):
            raise RemoteError(f"agent {self.base_url}: GET /health: malformed answer") from None

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, idempotent: bool
    ) -> dict[str, Any]:
        attempts = 1 + (self.retries if idempotent else 0)
        for attempt in range(attempts):
            try:
                return await self._once(method, path, body)
            except (Unreachable, _Retryable) as exc:
                if attempt == attempts - 1:
                    raise exc.error if isinstance(exc, _Retryable) else exc from None
            await asyncio.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        what = f"agent {self.base_url}: {method} {path}"
        try:
            response = await self._http.request(method, path, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise NotReached(f"{what}: not reachable: {exc or type(exc).__name__}") from None
        except httpx.TimeoutException:
            raise Unreachable(f"{what}: timed out waiting for an answer") from None
        except httpx.TransportError as exc:
            raise Unreachable(f"{what}: {exc or type(exc).__name__}") from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            error = RemoteError(f"{what}: {response.status_code}: answer is not a JSON object")
            if response.status_code in RETRY_STATUSES:
                raise _Retryable(error)
            raise error
        text = answer.get("error")
        reason = text if isinstance(text, str) and text else "no error text"
        if response.status_code == 404:
            raise NotFound(f"{what}: 404: {reason}")
        if response.status_code == 401:
            raise Unauthorized(f"{what}: 401: {reason}")
        if not response.is_success:
            error = RemoteError(f"{what}: {response.status_code}: {reason}")
            if response.status_code in RETRY_STATUSES:
                raise _Retryable(error)
            raise error
        if answer.get("ok") is not True:
            raise RemoteError(f"{what}: {response.status_code} without ok: {reason}")
        return answer


class _Retryable(Exception):
    """Internal: a failure worth another attempt; ``error`` is raised after the last one."""

    def __init__(self, error: RemoteError) -> None:
        super().__init__(str(error))
        self.error = error


@cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every client: loading the CA store costs ~20 ms of CPU each time."""
    return httpx.create_ssl_context()


def _optional_text(value: Any) -> str | None:
    return value[:64] if isinstance(value, str) and value else None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(value)
    return value


def _claw(value: Any, what: str) -> ClawInfo:
    """An INFO object, checked field by field."""
    try:
        if not isinstance(value, dict):
            raise TypeError("not an object")
        pid = value.get("pid")
        status, claw_id, ready = value["status"], value["clawId"], value["ready"]
        error = value.get("error", "")
        if status not in CLAW_STATUSES or not isinstance(claw_id, str):
            raise ValueError(status)
        if not isinstance(ready, bool) or not isinstance(error, str):
            raise TypeError("ready/error")
        return ClawInfo(
            claw_id=claw_id,
            port=_int(value["port"]),
            status=status,
            pid=None if pid is None else _int(pid),
            restarts=_int(value.get("restarts", 0)),
            ready=ready,
            error=error,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RemoteError(f"agent {what}: malformed claw in answer ({exc})") from None
