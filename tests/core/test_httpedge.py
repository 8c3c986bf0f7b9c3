"""The shared HTTP edge (core.httpedge, core.httplimits) on a small real app over raw sockets."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from core.errors import Conflict, InputError, NotFound, RemoteError, StorageError, Unreachable
from core.httpedge import Edge, install_edge, nesting_depth, parse_json, read_object, status_for
from core.httplimits import EdgeServer, Limits

RELEASE = web.AppKey("release", asyncio.Event)
Serve = Callable[..., Awaitable[EdgeServer]]


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def echo(request: web.Request) -> web.Response:
    return web.json_response(await read_object(request))


async def wait(request: web.Request) -> web.Response:
    await request.app[RELEASE].wait()
    return web.json_response({"released": True})


async def fail(request: web.Request) -> web.Response:
    raise {"input": InputError("bad"), "gone": NotFound("no such thing")}[request.match_info["k"]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[EdgeServer] = []

    async def start(edge: Edge | None = None, **limits: float) -> EdgeServer:
        app = web.Application()
        install_edge(app, edge or Edge())
        app[RELEASE] = asyncio.Event()
        app.router.add_get("/healthz", healthz)
        app.router.add_post("/echo", echo)
        app.router.add_get("/wait", wait)
        app.router.add_get("/fail/{k}", fail)
        server = EdgeServer(app, "127.0.0.1", 0, Limits(**limits))  # type: ignore[arg-type]
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.app[RELEASE].set()
        await server.stop()


async def connect(server: EdgeServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def request(server: EdgeServer, raw: bytes) -> tuple[int, dict[str, object]]:
    """Send ``raw`` on a new connection; the status and JSON body of the answer."""
    reader, writer = await connect(server)
    writer.write(raw)
    answer = await asyncio.wait_for(reader.read(), 10)  # Connection: close below
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"not true within {timeout} s")


def get(path: str, host: str = "127.0.0.1") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def post(path: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def half_open(server: EdgeServer, count: int) -> list[Conn]:
    """``count`` connections that each sent half a request and then nothing."""
    conns = [await connect(server) for _ in range(count)]
    for _, writer in conns:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: loc")
    await asyncio.gather(*(w.drain() for _, w in conns))
    return conns


async def first_answer(conns: list[Conn]) -> bytes:
    """What the first of ``conns`` to be answered and closed by the server received."""
    reads = [asyncio.create_task(reader.read()) for reader, _ in conns]
    done, pending = await asyncio.wait(reads, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return done.pop().result()


async def test_300_half_sent_requests_do_not_stop_healthz_from_answering_within_2_s(serve):
    server = await serve(read_timeout=60)
    slow = await half_open(server, 300)
    await until(lambda: server.connections == 300)
    started = time.monotonic()
    assert await request(server, get("/healthz")) == (200, {"ok": True})
    assert time.monotonic() - started < 2.0
    for _, writer in slow:
        writer.close()


async def test_at_the_cap_a_half_sent_request_is_evicted_so_a_whole_one_gets_in(serve):
    server = await serve(max_connections=20, read_timeout=60)
    slow = await half_open(server, 20)
    await until(lambda: server.connections == 20)
    assert await request(server, get("/healthz")) == (200, {"ok": True})
    assert server.tracker.evicted == 1
    evicted = await first_answer(slow)
    assert b"503 Service Unavailable" in evicted and b"too many connections" in evicted


async def test_when_every_slot_is_busy_a_new_connection_is_answered_503(serve):
    server = await serve(max_connections=16)
    busy = [asyncio.create_task(request(server, get("/wait"))) for _ in range(16)]
    await until(lambda: sum(c.busy for c in server.tracker.conns) == 16)
    reader, _ = await connect(server)
    answer = await asyncio.wait_for(reader.read(), 10)
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Connection: close" in answer
    assert answer.endswith(b'{"error": "too many connections"}')
    server.app[RELEASE].set()
    assert [await b for b in busy] == [(200, {"released": True})] * 16


async def test_a_trickled_body_is_cut_after_the_read_timeout_with_408(serve):
    server = await serve(read_timeout=0.3)
    reader, writer = await connect(server)
    writer.write(post("/echo", b'{"a": 1}' + b" " * 92)[:-90])  # 10 of 100 body bytes
    answer = await asyncio.wait_for(reader.read(), 10)
    assert b"408 Request Timeout" in answer and b"not received within 0.3 s" in answer
    writer.close()


async def test_a_connection_that_sends_nothing_is_closed_after_the_read_timeout(serve):
    server = await serve(read_timeout=0.3)
    reader, writer = await connect(server)
    assert b"408" in await asyncio.wait_for(reader.read(), 10)
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed(serve):
    server = await serve(read_timeout=30, keepalive_timeout=0.3)
    reader, writer = await connect(server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)  # EOF once idle for 0.3 s
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"ok": true}')
    writer.close()


async def test_a_whole_request_is_not_cut_by_the_read_timeout_while_its_handler_runs(serve):
    server = await serve(read_timeout=0.2)
    pending = asyncio.create_task(request(server, get("/wait")))
    await until(lambda: any(c.busy for c in server.tracker.conns))
    # A half-sent request opened after the handler started is cut at the read timeout: once
    # its 408 is in, the read timeout has passed for the running request too.
    late = await half_open(server, 1)
    assert b"408 Request Timeout" in await first_answer(late)
    server.app[RELEASE].set()
    assert await pending == (200, {"released": True})


async def test_a_host_that_is_not_allowed_is_answered_421(serve):
    server = await serve(edge=Edge(hosts=frozenset({"ops.example.com", "10.0.0.7"})))
    allowed = ["127.0.0.1:9010", "127.0.0.2", "localhost", "app.localhost", "[::1]:1"]
    for host in [*allowed, "10.0.0.7:9010", "ops.example.com:443", "OPS.example.com."]:
        assert (await request(server, get("/healthz", host)))[0] == 200, host
    for host in ("evil.example.net", "10.0.0.8", "[fe80::1]:9010", "localhost.evil.example"):
        status, body = await request(server, get("/healthz", host))
        assert status == 421 and _strip(host) in str(body["error"]), host


def _strip(host: str) -> str:
    return host.rpartition(":")[0].strip("[]") if host.endswith(":9010") else host


async def test_a_server_bound_to_a_wildcard_address_answers_any_ip_literal(serve):
    server = await serve(edge=Edge(any_ip=True))
    for host in ("10.0.0.8", "192.168.1.20:9010", "[fd00::5]:9010"):
        assert (await request(server, get("/healthz", host)))[0] == 200, host
    assert (await request(server, get("/healthz", "evil.example.net")))[0] == 421


async def test_a_state_changing_request_with_a_non_json_body_is_answered_415(serve):
    server = await serve()
    body = b'{"mode": "emergency"}'
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        assert await request(server, post("/echo", body, kind)) == (
            415,
            {"error": "Content-Type must be application/json"},
        )
    assert await request(server, post("/echo", body)) == (200, {"mode": "emergency"})


async def test_30000_nested_brackets_are_a_400_json_error_not_a_500(serve):
    server = await serve(edge=Edge(max_body=10**6))
    for deep in (b"[" * 30000, b'{"a":' * 30000, b"[" * 33 + b"]" * 33):
        status, body = await request(server, post("/echo", deep))
        assert status == 400 and "nested deeper than 32" in str(body["error"])


def test_brackets_inside_strings_do_not_count_as_nesting():
    assert nesting_depth(b'{"a": "[[[[\\"[[[", "b": [[1]]}') == 3
    assert parse_json(b'["' + b"[" * 100 + b'"]') == ["[" * 100]
    with pytest.raises(InputError, match="not valid JSON"):
        parse_json(b"\xff")


async def test_core_errors_answer_their_status_as_json_with_the_edge_fields(serve):
    server = await serve(edge=Edge(error_fields={"ok": False}))
    assert await request(server, get("/fail/input")) == (400, {"ok": False, "error": "bad"})
    assert await request(server, get("/fail/gone")) == (
        404,
        {"ok": False, "error": "no such thing"},
    )
    assert (await request(server, get("/nope")))[0] == 404


def test_the_error_tree_maps_to_http_statuses_once():
    statuses = [status_for(e("x")) for e in (InputError, NotFound, Conflict, StorageError)]
    assert statuses == [400, 404, 409, 503]
    assert status_for(RemoteError("x")) == status_for(Unreachable("x")) == 502


async def test_a_bearer_token_is_checked_and_a_loopback_peer_is_trusted_only_where_listed(serve):
    edge = Edge(token="t" * 32, trust_loopback=True, loopback_routes=frozenset({("POST", "/echo")}))
    server = await serve(edge=edge)
    assert (await request(server, get("/healthz")))[0] == 401
    assert (await request(server, post("/echo", b"{}")))[0] == 200
    token = f"\r\nAuthorization: bearer {'t' * 32}\r\n\r\n".encode()
    auth = get("/healthz").replace(b"\r\n\r\n", token)
    assert (await request(server, auth))[0] == 200
