"""A tiny DevTools-protocol client driving Debian's headless chromium (no Playwright needed).

``async with Chromium.launch(tmp_dir) as page:`` starts ``chromium --headless`` on a DevTools
port it picks itself (read back from ``DevToolsActivePort``), attaches to its first tab over the
page's WebSocket and offers what the page tests need: navigate, evaluate, wait_for, screenshot.
Everything stays on loopback; the profile lives in ``tmp_dir``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--no-default-browser-check",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
]  # fmt: skip


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(RuntimeError):
    pass


class Page:
    """One tab: commands by id over its DevTools WebSocket; events are kept in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            future = self._waiting.pop(frame.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(frame)
            elif "method" in frame:
                self.events.append(frame)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(CDPError("the browser went away"))

    async def send(self, method: str, timeout: float = 15.0, **params: Any) -> dict[str, Any]:
        number = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        await self.ws.send_json({"id": number, "method": method, "params": params})
        frame = await asyncio.wait_for(future, timeout)
        if "error" in frame:
            raise CDPError(f"{method}: {frame['error']}")
        result: dict[str, Any] = frame.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited), or CDPError if it threw."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise CDPError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    async def navigate(self, url: str, timeout: float = 15.0) -> None:
        """Open ``url`` and wait until its document has loaded."""
        await self.send("Page.navigate", url=url)
        await self.wait_for(
            f"location.href.startsWith({json.dumps(url)}) || document.readyState === 'complete'",
            timeout,
        )
        await self.wait_for("document.readyState === 'complete'", timeout)

    async def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        """Poll ``expression`` until it is truthy (a DOM node counts as true); TimeoutError
        names it otherwise."""
        deadline = time.monotonic() + timeout
        value: Any = None
        checked = f"(v => v instanceof Node ? true : v)({expression})"
        while time.monotonic() < deadline:
            with contextlib.suppress(CDPError):
                value = await self.evaluate(checked)
                if value:
                    return value
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{expression!r} still {value!r} after {timeout}s")

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", format="png")
        await asyncio.to_thread(_write, path, base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def launch(profile: Path, binary: str | None = None) -> AsyncIterator[Page]:
    """A headless chromium with its profile in ``profile``; yields its first tab."""
    binary = binary or find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium on PATH")
    await asyncio.to_thread(profile.mkdir, parents=True, exist_ok=True)
    log = await asyncio.to_thread((profile / "chromium.log").open, "wb")
    process = await asyncio.create_subprocess_exec(
        binary, *FLAGS, f"--user-data-dir={profile}", "about:blank",
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    session = aiohttp.ClientSession()
    page: Page | None = None
    try:
        port = await _devtools_port(profile, process)
        page = await _first_tab(session, port)
        yield page
    finally:
        if page is not None:
            await page.close()
        await session.close()
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        log.close()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def _devtools_port(profile: Path, process: asyncio.subprocess.Process) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.returncode is not None:
            tail = (profile / "chromium.log").read_text(errors="replace")[-2000:]
            raise CDPError(f"chromium exited with {process.returncode}: {tail}")
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(marker.read_text().splitlines()[0])
        await asyncio.sleep(0.05)
    raise TimeoutError("chromium did not open its DevTools port within 30 s")


async def _first_tab(session: aiohttp.ClientSession, port: int) -> Page:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{port}/json/list") as answer:
                tabs = [t for t in await answer.json() if t.get("type") == "page"]
            if tabs:
                ws = await session.ws_connect(tabs[0]["webSocketDebuggerUrl"], max_msg_size=0)
                page = Page(ws)
                await page.send("Page.enable")
                await page.send("Runtime.enable")
                await page.send("Log.enable")
                return page
        await asyncio.sleep(0.05)
    raise TimeoutError("chromium showed no page target within 15 s")
