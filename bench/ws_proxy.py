"""The claw proxy against a direct connection and against nginx, to the same echo upstream.

    .venv/bin/python bench/ws_proxy.py [--messages 20000] [--rounds 2000] [--idle 1000]

Three processes besides this one, all on 127.0.0.1: an echo "gateway" (aiohttp: the protocol 4
challenge, a hello-ok for any connect, then every frame echoed), the sidecar with the real claw
proxy (a SQLite database with one org, one member, one active claw pointing at the echo server,
and an API token for the bench), and nginx (Debian's package, a generated config, no daemon, pid
and logs in a temp dir; installed with `apt-get install -y nginx` when missing and run as root).
This process is the client for all three paths:

- throughput: ``--messages`` small JSON frames sent back to back while another task reads the
  echoes; messages per second.
- latency: ``--rounds`` sequential round trips (send, wait for the echo); p50 and p99.
- idle: ``--idle`` sockets opened through the proxy and held; the proxy's RSS delta per socket.

Prints the ratios (targets: proxy >= 0.5x direct throughput; proxy's added p50 <= 2x nginx's).
Everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KEY_ENV = "CLAWOPS_BENCH_CLAWS_KEY"
GATEWAY_TOKEN = "bench-gateway-" + "t" * 32


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the child processes ---------------------------------------------------------------------


async def serve_echo(port: int) -> None:
    from aiohttp import WSMsgType, web

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=8 << 20)
        await ws.prepare(request)
        challenge = {"nonce": secrets.token_hex(8), "ts": int(time.time() * 1000)}
        await ws.send_str(json.dumps({"type": "event", "event": "connect.challenge",
                                      "payload": challenge}))  # fmt: skip
        first = await ws.receive()
        frame = json.loads(first.data)
        hello = {
            "type": "hello-ok", "protocol": 4, "server": {"version": "echo"},
            "snapshot": {"sessionDefaults": {"mainSessionKey": "agent:main:main"}},
            "auth": {"role": "operator", "scopes": frame["params"]["scopes"]},
        }  # fmt: skip
        await ws.send_str(json.dumps({"type": "res", "id": frame["id"], "ok": True,
                                      "payload": hello}))  # fmt: skip
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/", socket)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def serve_proxy(port: int, db_url: str, data_dir: str) -> None:
    from core.claws import Claws
    from core.crypto import Keyring
    from core.db import Database
    from core.statuslog import StatusLog
    from proxy.sidecar import Sidecar, SidecarState, create_app

    db = Database(db_url)
    log = StatusLog(db, "bench")
    await log.start()
    claws = Claws(db, Keyring.from_env(KEY_ENV))
    state = SidecarState(
        statuslog=log, node="bench", claws=lambda: claws, data_dir=Path(data_dir),
        ws_max_per_user=100_000,
    )  # fmt: skip
    sidecar = Sidecar(create_app(state), "127.0.0.1", port)
    await sidecar.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def prepare_database(db_url: str, echo_port: int, key: str) -> str:
    """One org, one member, one active claw on the echo server; returns an API token."""
    from sqlalchemy import insert

    from core.config import OrgConfig
    from core.crypto import Keyring
    from core.db import Database
    from core.minis import Minis
    from core.orgs import sync_orgs
    from core.provision import token_context
    from core.tables import claws, utcnow
    from core.websessions import WebAuth

    db = Database(db_url)
    await db.upgrade()
    await sync_orgs(db, [OrgConfig(slug="bench", name="Bench", members=[1])])
    mini = await Minis(db).add(
        "mini-bench", "http://127.0.0.1:9", ports=f"{echo_port}-{echo_port}", capacity=1,
        agent_token_env="UNUSED", gateway_host="127.0.0.1",
    )  # fmt: skip
    sealed = Keyring.parse(key).seal(GATEWAY_TOKEN, token_context("bench", "echo"))
    now = utcnow()
    async with db.begin() as conn:
        await conn.execute(insert(claws).values(
            org="bench", slug="echo", status="active", mini_id=mini.id, mini_port=echo_port,
            gateway_token_sealed=sealed, steps="[]", error="", created_at=now, updated_at=now,
        ))  # fmt: skip
    token = await WebAuth(db).create_token(1, "bench")
    await db.close()
    return token


# -- the client ------------------------------------------------------------------------------


class Path_:
    """How to open a socket that is ready for echo frames on one of the three paths."""

    def __init__(self, name: str, url: str, headers: dict[str, str], handshake: bool) -> None:
        self.name, self.url, self.headers, self.handshake = name, url, headers, handshake

    async def open(self, session: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
        ws = await session.ws_connect(self.url, headers=self.headers, max_msg_size=8 << 20)
        msg = await ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise SystemExit(f"{self.name}: closed before ready ({ws.close_code} {msg.extra})")
        first = json.loads(msg.data)
        if self.handshake:  # direct and nginx: the client does the gateway handshake itself
            assert first["event"] == "connect.challenge", first
            await ws.send_str(json.dumps({"type": "req", "id": "c", "method": "connect",
                                          "params": {"scopes": ["operator.read"]}}))  # fmt: skip
            first = json.loads((await ws.receive()).data)
            assert first.get("ok"), first
        else:
            assert first["event"] == "proxy.ready", first
        return ws


def frame(i: int) -> str:
    params = {"text": "hello from the bench, a short chat-sized message"}
    return json.dumps({"type": "req", "id": str(i), "method": "bench.echo", "params": params})


async def throughput(path: Path_, messages: int) -> float:
    async with aiohttp.ClientSession() as session:
        ws = await path.open(session)
        frames = [frame(i) for i in range(messages)]

        async def send() -> None:
            for text in frames:
                await ws.send_str(text)

        started = time.perf_counter()
        sender = asyncio.create_task(send())
        for _ in range(messages):
            await ws.receive()
        elapsed = time.perf_counter() - started
        await sender
        await ws.close()
    return messages / elapsed


async def latency(path: Path_, rounds: int) -> tuple[float, float]:
    samples: list[float] = []
    async with aiohttp.ClientSession() as session:
        ws = await path.open(session)
        for i in range(rounds + 100):
            started = time.perf_counter()
            await ws.send_str(frame(i))
            await ws.receive()
            if i >= 100:  # warm-up rounds are not counted
                samples.append((time.perf_counter() - started) * 1e6)
        await ws.close()
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49], cuts[98]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def idle_memory(path: Path_, count: int, pid: int) -> tuple[float, int]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        warm = await path.open(session)  # the first socket pays for lazy set-up (device key...)
        await asyncio.sleep(0.5)
        before = rss_kib(pid)
        gate = asyncio.Semaphore(32)

        async def one() -> aiohttp.ClientWebSocketResponse:
            async with gate:
                return await path.open(session)

        held = await asyncio.gather(*(one() for _ in range(count)))
        await asyncio.sleep(1.0)
        after = rss_kib(pid)
        opened = sum(1 for ws in held if not ws.closed)
        for ws in [*held, warm]:
            await ws.close()
    return (after - before) / count, opened


# -- nginx -----------------------------------------------------------------------------------


def nginx_binary() -> str | None:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found or os.geteuid() != 0:
        return found
    print("nginx is not installed: apt-get install -y nginx", flush=True)
    subprocess.run(["apt-get", "install", "-y", "nginx"], check=False,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


def nginx_config(workdir: Path, port: int, upstream: int) -> Path:
    temp = {name: workdir / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for directory in temp.values():
        directory.mkdir()
    config = workdir / "nginx.conf"
    config.write_text(f"""
daemon off;
master_process on;
worker_processes 1;
user root;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 3600s;
            proxy_buffering off;
        }}
    }}
}}
""")
    return config


# -- the run ---------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_child(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise SystemExit(f"bench child {args[0]} did not start: {line!r}")
    return proc


def spawn(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(list(argv), stderr=subprocess.DEVNULL)


async def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


async def run(args: argparse.Namespace) -> None:
    from core.crypto import generate_key

    raise_fd_limit()
    procs: list[subprocess.Popen[Any]] = []
    with tempfile.TemporaryDirectory(prefix="clawops-bench-ws-") as tmp:
        work = Path(tmp)
        try:
            echo_port, proxy_port, nginx_port = free_port(), free_port(), free_port()
            key = generate_key()
            db_url = f"sqlite+aiosqlite:///{work / 'bench.db'}"
            api_token = await prepare_database(db_url, echo_port, key)
            procs.append(start_child(["--serve-echo", str(echo_port)]))
            proxy = start_child(
                ["--serve-proxy", str(proxy_port), db_url, str(work / "data")], {KEY_ENV: key}
            )
            procs.append(proxy)
            paths = [
                Path_("direct", f"ws://127.0.0.1:{echo_port}/", {}, True),
                Path_("proxy", f"ws://127.0.0.1:{proxy_port}/api/ws/claws/bench/echo",
                      {"Authorization": f"Bearer {api_token}"}, False),
            ]  # fmt: skip
            nginx = nginx_binary()
            if nginx is None:
                print("nginx: not available (install it with `apt-get install -y nginx`)")
            else:
                config = nginx_config(work, nginx_port, echo_port)
                procs.append(spawn(nginx, "-p", str(work), "-c", str(config)))
                await wait_port(nginx_port)
                paths.append(Path_("nginx", f"ws://127.0.0.1:{nginx_port}/", {}, True))
            results: dict[str, tuple[float, float, float]] = {}
            for path in paths:
                await throughput(path, min(2000, args.messages))  # warm-up
                rate = await throughput(path, args.messages)
                p50, p99 = await latency(path, args.rounds)
                results[path.name] = (rate, p50, p99)
                print(f"{path.name:>6}: {rate:9.0f} msg/s   p50 {p50:7.0f} us   p99 {p99:7.0f} us",
                      flush=True)  # fmt: skip
            report(results)
            per_socket, opened = await idle_memory(paths[1], args.idle, proxy.pid)
            print(f"idle: {opened}/{args.idle} sockets held through the proxy, "
                  f"{per_socket:.1f} KiB RSS per connection (browser side + upstream)")  # fmt: skip
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.send_signal(
                        signal.SIGTERM if proc.args[0] != sys.executable else signal.SIGKILL
                    )
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def report(results: dict[str, tuple[float, float, float]]) -> None:
    direct, proxy = results["direct"], results["proxy"]
    ratio = proxy[0] / direct[0]
    verdict = "ok" if ratio >= 0.5 else "BELOW TARGET"
    print(f"throughput proxy/direct: {ratio:.2f}x (target >= 0.5x: {verdict})")
    if "nginx" in results:
        nginx = results["nginx"]
        print(f"throughput nginx/direct: {nginx[0] / direct[0]:.2f}x")
        added_proxy, added_nginx = proxy[1] - direct[1], nginx[1] - direct[1]
        ratio = added_proxy / added_nginx if added_nginx > 0 else float("inf")
        verdict = "ok" if ratio <= 2.0 else "ABOVE TARGET"
        print(f"added p50: proxy {added_proxy:.0f} us, nginx {added_nginx:.0f} us -> "
              f"{ratio:.2f}x nginx's (target <= 2x: {verdict})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--serve-echo", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-proxy", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        raise_fd_limit()
        asyncio.run(serve_echo(args.serve_echo))
    elif args.serve_proxy:
        raise_fd_limit()
        port, db_url, data_dir = args.serve_proxy
        asyncio.run(serve_proxy(int(port), db_url, data_dir))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
