"""A light stand-in for the OpenClaw gateway: the protocol 4 connect handshake, and a chat.

After hello-ok it answers ``chat.history``, ``chat.send`` (the reply echoes the message, streamed
as a few ``chat`` delta events then a final; a message starting with ``/fail`` ends in an
``error`` event instead) and ``chat.abort``, as the real gateway's chat methods do.

Run as a process, like the real one::

    OPENCLAW_GATEWAY_TOKEN=... python tests/auxil/fakegateway.py [--port N] [--delay S]

The token comes from env ``OPENCLAW_GATEWAY_TOKEN`` (never argv), else from
``$HOME/.openclaw/openclaw.json`` (``gateway.auth.token``), as does the port when ``--port`` is
not given — so the agent can run it exactly as it runs ``openclaw gateway run``. ``--delay`` waits
before listening; ``--unavailable`` answers a retryable UNAVAILABLE (close 1013) for that many
seconds after listening, as the real gateway does while its sidecars start. Without a token
and a port it exits with 78 like the real gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

CLIENT_IDS = {"webchat", "webchat-ui", "cli", "gateway-client", "test", "openclaw-control-ui"}
MODES = {"webchat", "cli", "ui", "backend", "node", "worker", "probe", "test"}
PARAMS = {
    "minProtocol", "maxProtocol", "client", "role", "scopes", "auth",
    "device", "locale", "userAgent", "caps", "commands", "permissions",
}  # fmt: skip


def error(request_id: Any, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "res", "id": request_id, "ok": False,
        "error": {"code": code, "message": message, **extra},
    }  # fmt: skip


def check_connect(frame: Any, token: str) -> tuple[dict[str, Any] | None, int]:
    """The error frame and close code for a bad connect, or (None, 0) when it is good."""
    if (
        not isinstance(frame, dict)
        or frame.get("type") != "req"
        or frame.get("method") != "connect"
    ):
        return error(None, "INVALID_REQUEST", "first frame must be connect"), 1008
    rid, params = frame.get("id"), frame.get("params")
    if not isinstance(params, dict) or set(params) - PARAMS:
        return error(rid, "INVALID_REQUEST", "invalid connect params"), 1008
    if not (params.get("minProtocol", 0) <= 4 <= params.get("maxProtocol", 0)):
        return error(rid, "PROTOCOL_MISMATCH", "protocol 4 required"), 1002
    client = params.get("client") or {}
    if client.get("id") not in CLIENT_IDS or client.get("mode") not in MODES:
        return error(rid, "INVALID_REQUEST", "invalid client"), 1008
    if params.get("role") != "operator":
        return error(rid, "INVALID_REQUEST", "invalid role"), 1008
    if (params.get("auth") or {}).get("token") != token:
        details = {"code": "AUTH_TOKEN_MISMATCH"}
        return error(rid, "INVALID_REQUEST", "unauthorized: token mismatch", details=details), 1008
    return None, 0


class Chat:
    """One connection's chat: the gateway's session histories and this socket's running replies."""

    def __init__(self, history: dict[str, list[dict[str, Any]]], stream_delay: float) -> None:
        self.stream_delay = stream_delay
        self.history = history
        self.runs: dict[str, asyncio.Task[None]] = {}

    async def handle(self, ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        rid, method, params = frame.get("id"), frame.get("method"), frame.get("params") or {}
        key = params.get("sessionKey")
        if frame.get("type") != "req" or not isinstance(key, str):
            await ws.send_json(error(rid, "INVALID_REQUEST", "invalid request"))
            return
        messages = self.history.setdefault(key, [])
        if method == "chat.history":
            payload: dict[str, Any] = {"sessionKey": key, "messages": messages}
        elif method == "chat.send" and isinstance(params.get("message"), str):
            run_id = uuid.uuid4().hex
            messages.append({"role": "user", "content": params["message"]})
            await ws.send_json(
                {"type": "res", "id": rid, "ok": True,
                 "payload": {"runId": run_id, "status": "started"}}
            )  # fmt: skip
            self.runs[run_id] = asyncio.create_task(self.reply(ws, key, run_id, params["message"]))
            return
        elif method == "chat.abort":
            aborted = [r for r in self.runs if params.get("runId") in (None, r)]
            for run_id in aborted:
                self.runs.pop(run_id).cancel()
                await ws.send_json(chat_event(key, run_id, 0, "aborted"))
            payload = {"ok": True, "aborted": bool(aborted), "runIds": aborted}
        else:
            await ws.send_json(error(rid, "INVALID_REQUEST", f"unknown method {method}"))
            return
        await ws.send_json({"type": "res", "id": rid, "ok": True, "payload": payload})

    async def reply(self, ws: web.WebSocketResponse, key: str, run_id: str, text: str) -> None:
        words, so_far, seq = f"You said: {text}".split(" "), "", 0
        try:
            for seq, word in enumerate(words, start=1):
                await asyncio.sleep(self.stream_delay)
                if text.startswith("/fail") and seq == 3:
                    failed = {"errorMessage": "the model failed <on purpose>", "errorKind": "model"}
                    await ws.send_json(chat_event(key, run_id, seq, "error", **failed))
                    return
                delta = word if seq == 1 else " " + word
                so_far += delta
                await ws.send_json(
                    chat_event(key, run_id, seq, "delta", deltaText=delta, message=said(so_far))
                )
            self.history[key].append(said(so_far))
            await ws.send_json(
                chat_event(key, run_id, seq + 1, "final", stopReason="stop", message=said(so_far))
            )
        except ConnectionResetError:
            pass
        finally:
            self.runs.pop(run_id, None)


def said(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def chat_event(key: str, run_id: str, seq: int, state: str, **extra: Any) -> dict[str, Any]:
    payload = {"runId": run_id, "sessionKey": key, "seq": seq, "state": state, **extra}
    return {"type": "event", "event": "chat", "payload": payload}


def make_app(
    token: str, unavailable_until: float = 0.0, stream_delay: float = 0.15
) -> web.Application:
    history: dict[str, list[dict[str, Any]]] = {}

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        challenge = {"nonce": uuid.uuid4().hex, "ts": int(time.time() * 1000)}
        await ws.send_json({"type": "event", "event": "connect.challenge", "payload": challenge})
        msg = await ws.receive(timeout=15)
        if msg.type != WSMsgType.TEXT:
            await ws.close(code=1008)
            return ws
        frame = json.loads(msg.data)
        if time.monotonic() < unavailable_until:
            details = {"reason": "startup-sidecars"}
            await ws.send_json(
                error(frame.get("id"), "UNAVAILABLE", "starting", retryable=True,
                      retryAfterMs=200, details=details)
            )  # fmt: skip
            await ws.close(code=1013)
            return ws
        bad, code = check_connect(frame, token)
        if bad is not None:
            await ws.send_json(bad)
            await ws.close(code=code)
            return ws
        scopes = frame["params"].get("scopes") or []
        payload = {
            "type": "hello-ok", "protocol": 4,
            "server": {"version": "fake", "connId": uuid.uuid4().hex},
            "features": {"methods": ["chat.send", "chat.history", "chat.abort"],
                         "events": ["chat"]},
            "snapshot": {"sessionDefaults": {"mainSessionKey": "agent:main:main"}},
            "auth": {"role": "operator", "scopes": scopes},
            "policy": {"maxPayload": 26214400, "maxBufferedBytes": 52428800,
                       "tickIntervalMs": 30000},
        }  # fmt: skip
        await ws.send_json({"type": "res", "id": frame["id"], "ok": True, "payload": payload})
        chat = Chat(history, stream_delay)
        async for msg in ws:  # the chat methods, until the client leaves
            if msg.type == WSMsgType.TEXT:
                await chat.handle(ws, json.loads(msg.data))
        for run in list(chat.runs.values()):
            run.cancel()
        return ws

    app = web.Application()
    app.router.add_get("/", socket)
    return app


def from_config_file() -> dict[str, Any]:
    path = Path(os.environ.get("HOME", "/nonexistent")) / ".openclaw" / "openclaw.json"
    try:
        gateway: dict[str, Any] = json.loads(path.read_text()).get("gateway", {})
        return gateway
    except (OSError, ValueError):
        return {}


async def serve(port: int, token: str, delay: float, unavailable: float) -> None:
    await asyncio.sleep(delay)
    app = make_app(token, time.monotonic() + unavailable)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before listening")
    parser.add_argument("--unavailable", type=float, default=0.0, help="seconds of UNAVAILABLE")
    args, _ = parser.parse_known_args(argv)  # ignore the real gateway's `gateway run`
    gateway = from_config_file()
    token = os.environ.get("OPENCLAW_GATEWAY_TOKEN") or (gateway.get("auth") or {}).get("token")
    port = args.port or gateway.get("port")
    if not token or not port:
        print("fakegateway: no token or no port configured", file=sys.stderr)
        return 78
    asyncio.run(serve(int(port), str(token), args.delay, args.unavailable))
    return 0


if __name__ == "__main__":
    sys.exit(main())
