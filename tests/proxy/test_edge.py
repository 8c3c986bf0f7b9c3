"""The sidecar's edge: what a hostile page or a slow client can no longer do.

The slow-client tests run a real sidecar in a child process started with launchd's default soft
limit of 256 open files, and hold 300 half-sent requests open against it.
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from core.accounts import Accounts, EmergencyWatch
from core.db import Database
from core.state import StateStore
from core.statuslog import StatusLog
from proxy.sidecar import Sidecar, SidecarState, create_app
from tests.auxil.net import free_port

ROOT = Path(__file__).resolve().parents[2]
CHILD = ROOT / "tests" / "auxil" / "edgesidecar.py"
GOOD = {"jobId": "cleaner", "status": "ok", "message": "Cleaned 5 orphans"}


@pytest.fixture
async def open_sidecar(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """A sidecar with no token (loopback), holding LLM accounts: what a web page could reach."""
    statuslog = StatusLog(db, "test-node")
    await statuslog.start()
    watch = EmergencyWatch(Accounts(StateStore(db)), ["claude-main"], _announce)
    state = SidecarState(statuslog=statuslog, node="test-node", emergency=watch)
    sidecar = Sidecar(create_app(state), "127.0.0.1", 0)
    await sidecar.start()
    async with httpx.AsyncClient(base_url=sidecar.url, timeout=10) as client:
        yield client
    watch.stop()
    await sidecar.stop()
    await statuslog.stop()


async def _announce(text: str) -> None:
    return None


async def test_a_cross_site_text_plain_post_cannot_switch_on_emergency_mode(open_sidecar):
    # What <form enctype="text/plain"> or fetch(..., {mode: "no-cors"}) sends without a preflight.
    body = b'{"until": "2099-01-01T00:00:00Z"}'
    for kind in ("text/plain", "application/x-www-form-urlencoded"):
        answer = await open_sidecar.post(
            "/api/accounts/claude-main/limited", content=body, headers={"Content-Type": kind}
        )
        assert answer.status_code == 415, answer.text
    assert (await open_sidecar.get("/api/mode")).json()["mode"] == "normal"


async def test_deeply_nested_json_is_a_400_not_a_500(open_sidecar):
    for path in ("/api/log", "/api/accounts/claude-main/limited"):
        answer = await open_sidecar.post(
            path, content=b"[" * 30000, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 400 and "nested deeper" in answer.json()["error"]


async def test_a_rebound_dns_name_is_refused_with_421(open_sidecar):
    answer = await open_sidecar.post("/api/log", json=GOOD, headers={"Host": "evil.example.net"})
    assert answer.status_code == 421
    assert (await open_sidecar.get("/healthz", headers={"Host": "localhost:9010"})).is_success


async def test_sign_out_takes_a_form_from_its_own_origin_only(open_sidecar):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    url = open_sidecar.base_url
    own = {**form, "Origin": f"http://{url.host}:{url.port}"}
    assert (await open_sidecar.post("/logout", content=b"x=1", headers=own)).status_code == 200
    foreign = {**form, "Origin": "https://evil.example.net"}
    answer = await open_sidecar.post("/logout", content=b"x=1", headers=foreign)
    assert answer.status_code == 403


def _limit(soft: int, hard: int | None) -> None:
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (soft, hard or resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    )


@pytest.fixture(params=["soft-256", "hard-256"])
def child(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    """The child sidecar's URL, its soft limit after start and its connection cap; started
    with a soft limit of 256 (launchd's default), or a hard one too (nothing to raise)."""
    port = free_port()
    hard = 256 if request.param == "hard-256" else None
    argv = [sys.executable, str(CHILD), str(port), str(tmp_path / "child.db")]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, preexec_fn=lambda: _limit(256, hard), cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        words = proc.stdout.readline().split()
        assert words[:1] == [b"ready"], "the child sidecar did not start"
        yield f"http://127.0.0.1:{port}", int(words[1]), int(words[2])
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
async def test_300_half_sent_requests_leave_healthz_and_post_log_answering_within_2_s(child):
    url, soft, cap = child
    if soft == 256:
        assert cap == 256 - 64  # nothing to raise: the cap stays below the open-file limit
    else:
        assert soft > 1000  # raised toward the hard limit
    port = int(url.rsplit(":", 1)[1])
    slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(300)]
    for _, writer in slow:
        writer.write(b"POST /api/log HTTP/1.1\r\nHost: localhost\r\nContent-Le")
    await asyncio.gather(*(w.drain() for _, w in slow))
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        started = time.monotonic()
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.post("/api/log", json=GOOD)).status_code == 201
        elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"{elapsed:.2f} s"
    for _, writer in slow:
        writer.close()
