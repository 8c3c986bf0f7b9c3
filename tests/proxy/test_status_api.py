"""The status API over real HTTP against a running sidecar, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import httpx
import pytest
from sqlalchemy import func, select

from core.alerts import Alerts
from core.alerts.mirror import AlertMirror, parse_report
from core.db import Database
from core.errors import StorageError
from core.state import StateStore
from core.statuslog import StatusLog
from core.tables import status_log
from proxy.sidecar import Sidecar, SidecarState, create_app


@dataclass
class Running:
    url: str
    state: SidecarState
    client: httpx.AsyncClient


@pytest.fixture
async def start_sidecar(db: Database) -> AsyncIterator[Callable[..., object]]:
    started: list[tuple[Sidecar, StatusLog, httpx.AsyncClient]] = []

    async def start(token: str | None = None, **fields: object) -> Running:
        log = StatusLog(db, "test-node")
        await log.start()
        state = SidecarState(statuslog=log, node="test-node", token=token, **fields)  # type: ignore[arg-type]
        sidecar = Sidecar(create_app(state), "127.0.0.1", 0)
        await sidecar.start()
        client = httpx.AsyncClient(base_url=sidecar.url, timeout=10)
        started.append((sidecar, log, client))
        return Running(sidecar.url, state, client)

    yield start
    for sidecar, log, client in started:
        await client.aclose()
        await sidecar.stop()
        await log.stop()


@pytest.fixture
async def sidecar(start_sidecar) -> Running:
    return await start_sidecar()


async def stored(db: Database) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(status_log))).scalar_one())


GOOD = {"jobId": "cleaner", "message": "Cleaned 5 orphans", "status": "ok"}


async def test_a_valid_post_is_stored_and_answered_201_with_its_id(sidecar, db):
    response = await sidecar.client.post("/api/log", json=GOOD)
    assert response.status_code == 201
    entry_id = response.json()["id"]
    listing = (await sidecar.client.get("/api/log")).json()["entries"]
    assert [(e["id"], e["jobId"], e["message"]) for e in listing] == [
        (entry_id, "cleaner", "Cleaned 5 orphans")
    ]
    assert await stored(db) == 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_the_seeds_curl_example_works_unchanged(sidecar):
    body = '{"jobId":"cleaner","message":"Cleaned 5 orphans","status":"ok"}'
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sf", f"{sidecar.url}/api/log", "-X", "POST",
        "-H", "Content-Type: application/json", "-d", body,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert isinstance(json.loads(out)["id"], int)


BAD_REQUESTS = [
    ("not json", b"{jobId: cleaner", "application/json", 400, "not valid JSON"),
    ("json array", b"[1, 2]", "application/json", 400, "JSON object"),
    ("jobId not a string", json.dumps({**GOOD, "jobId": 7}).encode(), "application/json", 400,
     "jobId"),
    ("empty jobId", json.dumps({**GOOD, "jobId": ""}).encode(), "application/json", 400, "jobId"),
    ("jobId too long", json.dumps({**GOOD, "jobId": "j" * 129}).encode(), "application/json", 400,
     "128"),
    ("unknown status", json.dumps({**GOOD, "status": "fine"}).encode(), "application/json", 400,
     "status must be one of ok, warning, critical"),
    ("message missing", json.dumps({"jobId": "a", "status": "ok"}).encode(), "application/json",
     400, "message"),
    ("message a list", json.dumps({**GOOD, "message": ["x"]}).encode(), "application/json", 400,
     "message"),
    ("unknown field", json.dumps({**GOOD, "level": 3}).encode(), "application/json", 400,
     "unknown field"),
    ("wrong content type", json.dumps(GOOD).encode(), "text/plain", 415, "application/json"),
    ("form encoded", b"jobId=a&status=ok&message=m", "application/x-www-form-urlencoded", 415,
     "application/json"),
    ("body over 64 KiB", json.dumps({**GOOD, "message": "x" * 70_000}).encode(),
     "application/json", 413, "larger than 65536"),
    ("invalid utf-8", b'{"jobId": "\xff", "status": "ok", "message": ""}', "application/json",
     400, "not valid JSON"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_a_malformed_post_gets_a_json_4xx_and_stores_nothing(
    sidecar, db, body, content_type, status, error
):
    await sidecar.client.post("/api/log", json=GOOD)
    response = await sidecar.client.post(
        "/api/log", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == status
    assert error in response.json()["error"]
    assert await stored(db) == 1


async def test_a_token_is_required_when_one_is_configured(start_sidecar, db):
    running = await start_sidecar(token="s3cret", trust_loopback=False)
    client = running.client
    missing = await client.post("/api/log", json=GOOD)
    wrong = await client.post("/api/log", json=GOOD, headers={"Authorization": "Bearer nope"})
    basic = await client.post("/api/log", json=GOOD, headers={"Authorization": "Basic s3cret"})
    assert [r.status_code for r in (missing, wrong, basic)] == [401, 401, 401]
    assert "bearer token" in missing.json()["error"]
    assert (await client.get("/api/log")).status_code == 401
    assert (await client.get("/metrics")).status_code == 401
    assert await stored(db) == 0
    ok = await client.post("/api/log", json=GOOD, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 201
    assert (await client.get("/healthz")).status_code == 200  # the peer's watchdog needs no token


async def test_a_loopback_cron_script_may_post_a_log_entry_without_the_token(start_sidecar, db):
    client = (await start_sidecar(token="s3cret")).client  # trust_loopback is on by default
    assert (await client.post("/api/log", json=GOOD)).status_code == 201
    wrong = await client.post("/api/log", json=GOOD, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401  # a token that is given must be right
    assert (await client.get("/api/log")).status_code == 401  # reading still needs it
    assert (await client.get("/api/status")).status_code == 401
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):  # a local reverse proxy
        proxied = await client.post("/api/log", json=GOOD, headers={header: "203.0.113.9"})
        assert proxied.status_code == 401, header
    assert await stored(db) == 1


async def test_get_log_filters_limits_and_returns_newest_first(sidecar):
    for i in range(5):
        await sidecar.client.post(
            "/api/log", json={"jobId": f"j{i % 2}", "status": "ok" if i else "critical",
                              "message": str(i)}
        )  # fmt: skip
    get = sidecar.client.get
    assert [e["message"] for e in (await get("/api/log")).json()["entries"]] == list("43210")
    only_j1 = (await get("/api/log", params={"jobId": "j1"})).json()["entries"]
    assert [e["message"] for e in only_j1] == ["3", "1"]
    critical = (await get("/api/log", params={"status": "critical"})).json()["entries"]
    assert [e["message"] for e in critical] == ["0"]
    assert len((await get("/api/log", params={"limit": "2"})).json()["entries"]) == 2
    for params in ({"limit": "x"}, {"limit": "0"}, {"limit": "501"}, {"status": "bad"}):
        response = await get("/api/log", params=params)
        assert response.status_code == 400 and response.json()["error"]


async def test_unknown_routes_and_methods_answer_json_errors(sidecar):
    assert (await sidecar.client.get("/nope")).json() == {"error": "Not Found"}
    response = await sidecar.client.delete("/api/log")
    assert response.status_code == 405 and "error" in response.json()


async def test_status_and_healthz_answer_json(sidecar):
    sidecar.state.status = _fixed_status
    status = (await sidecar.client.get("/api/status")).json()
    assert status == {"node": "test-node", "machines": [{"name": "m"}]}
    assert (await sidecar.client.get("/healthz")).json() == {"ok": True, "node": "test-node"}


async def _fixed_status() -> dict[str, object]:
    return {"machines": [{"name": "m"}]}


async def test_metrics_count_requests_and_entries_in_prometheus_format(sidecar):
    await sidecar.client.post("/api/log", json=GOOD)
    await sidecar.client.post("/api/log", json={**GOOD, "status": "critical"})
    await sidecar.client.post("/api/log", content=b"nope", headers={"Content-Type": "text/plain"})
    response = await sidecar.client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = response.text.splitlines()
    assert "# TYPE clawops_http_requests_total counter" in lines
    assert 'clawops_http_requests_total{method="POST",route="/api/log",status="201"} 2' in lines
    assert 'clawops_http_requests_total{method="POST",route="/api/log",status="415"} 1' in lines
    assert 'clawops_status_log_entries_total{status="critical"} 1' in lines


async def test_a_failing_hook_does_not_lose_the_entry_or_the_201(sidecar, db):
    seen = []

    async def broken(entry) -> None:
        seen.append(entry.job_id)
        raise RuntimeError("alerting is down")

    sidecar.state.on_entry.append(broken)
    response = await sidecar.client.post("/api/log", json=GOOD)
    assert response.status_code == 201 and seen == ["cleaner"]
    assert await stored(db) == 1


async def test_fifty_concurrent_posters_lose_nothing_and_store_nothing_twice(sidecar, db):
    # aiohttp's client: httpx's pool is too slow for 50 busy connections (~250 req/s here).
    connector = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(sidecar.url, connector=connector) as session:

        async def poster(n: int) -> list[int]:
            ids = []
            for i in range(100):
                body = {"jobId": f"poster-{n}", "status": "ok", "message": f"{n}:{i}"}
                async with session.post("/api/log", json=body) as response:
                    assert response.status == 201, await response.text()
                    ids.append((await response.json())["id"])
            return ids

        results = await asyncio.gather(*(poster(n) for n in range(50)))
    ids = [i for r in results for i in r]
    assert len(ids) == len(set(ids)) == 5000
    async with db.connect() as conn:
        rows = (await conn.execute(select(status_log.c.id, status_log.c.message))).all()
    assert sorted(r.id for r in rows) == sorted(ids)
    assert len({r.message for r in rows}) == 5000
    # Each poster got back the id of its own entry, not just some id.
    by_id = {r.id: r.message for r in rows}
    for n, poster_ids in enumerate(results):
        assert [by_id[i] for i in poster_ids] == [f"{n}:{i}" for i in range(100)]


async def test_get_alerts_needs_the_token_and_answers_what_the_node_provides(start_sidecar, db):
    mirror = AlertMirror(Alerts(db), StateStore(db))
    await mirror.alerts.observe("machine:mini", "critical", "<unreachable>")

    async def provide() -> dict[str, object]:
        return {"active": True, **(await mirror.report())}

    running = await start_sidecar(token="s3cret", trust_loopback=False, alerts=provide)
    assert (await running.client.get("/api/alerts")).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await running.client.get("/api/alerts", headers=wrong)).status_code == 401
    answer = await running.client.get("/api/alerts", headers={"Authorization": "Bearer s3cret"})
    assert answer.status_code == 200
    report = parse_report(answer.json())
    assert (report.node, report.active) == ("test-node", True)
    assert [(a.key, a.message, a.announced) for a in report.alerts] == [
        ("machine:mini", "<unreachable>", False)
    ]

    async def broken() -> dict[str, object]:
        raise StorageError("database is locked")

    running.state.alerts = broken
    failed = await running.client.get("/api/alerts", headers={"Authorization": "Bearer s3cret"})
    assert failed.status_code == 503 and "locked" in failed.json()["error"]
