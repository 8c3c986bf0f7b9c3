"""A tiny OpenAI-compatible model server on loopback that echoes the last user message.

``POST /v1/chat/completions`` with ``stream: true`` answers Server-Sent Events (one
``chat.completion.chunk`` per few words, then a ``finish_reason: "stop"`` chunk and
``data: [DONE]``); without ``stream`` one ``chat.completion``. The reply is ``"echo: <text>"``.
``requests`` keeps every body received, for assertions.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

from aiohttp import web

MODEL = "echo-1"
# The gateway may add its own context to the user's turn, fenced by these markers.
INTERNAL = re.compile(
    r"<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>.*?<<<END_OPENCLAW_INTERNAL_CONTEXT>>>", re.S
)


def last_user_text(body: dict[str, Any]) -> str:
    """The user's own words in the last user turn that has any.

    The gateway adds a turn of internal context, a ``[timestamp]`` prefix and a
    ``Runtime: ...`` trailer; those are dropped.
    """
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        text = INTERNAL.sub("", str(content or "")).split("\n\nRuntime:")[0]
        text = re.sub(r"^\[[^\]]*\]\s*", "", text.strip())
        if text:
            return text
    return ""


def _chunk(cid: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
        "model": MODEL, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }  # fmt: skip
    return f"data: {json.dumps(chunk)}\n\n".encode()


class FakeModel:
    def __init__(self, word_delay: float = 0.02) -> None:
        self.word_delay = word_delay
        self.requests: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.completions)
        self.app.router.add_get("/v1/models", self.models)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        reply = f"echo: {last_user_text(body)}"
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        if not body.get("stream"):
            return web.json_response({
                "id": cid, "object": "chat.completion", "created": int(time.time()),
                "model": MODEL,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": reply}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            })  # fmt: skip
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_chunk(cid, {"role": "assistant", "content": ""}))
        words = reply.split(" ")
        for i, word in enumerate(words):
            await asyncio.sleep(self.word_delay)
            await response.write(_chunk(cid, {"content": word if i == 0 else " " + word}))
        await response.write(_chunk(cid, {}, "stop"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
