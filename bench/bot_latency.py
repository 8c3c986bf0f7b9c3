"""Time from an injected /status to the bot's reply, against the local server's echo baseline.

    .venv/bin/python bench/bot_latency.py [--rounds 200]
    .venv/bin/python bench/bot_latency.py --busy [--rounds 200]

Everything runs in one event loop, as in `clawops run`: the local Bot API server, the node
(SQLite in a temp dir) and its bot, long-polling the server over real HTTP. The baseline is a
bare python-telegram-bot handler that echoes at once (same server, same polling, no clawops
layer); the measured command is /status through the whole command layer (allowlist gate, role
check, the status summary's database reads, the HTML reply, the audit row). Both are measured
in this one run, interleaved, and the script prints medians, p95s and the ratio of medians.

``--busy``: /status from a second chat, first alone, then while a 20 s command (one run of it)
holds another chat; prints both and the ratio of medians (1 means the long command costs the
other chat nothing; before the bot handled updates concurrently, the first /status waited out the
whole 20 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from core.localtelegram import LocalTelegram

ADMIN = 100
VIEWER = 200  # --busy: the second chat (the viewer's private chat)
BUSY = 20.0  # seconds the long command of --busy runs
CHAT = ADMIN  # the admin's private chat: a group chat would hit the rate limiter's 20/min cap
# The bot's AIORateLimiter allows 30 messages/s overall; pacing the rounds below that keeps the
# limiter out of the figures (it is Telegram's limit, not the bot's latency).
PACE = 0.04


async def status_round(tg: LocalTelegram, chat: int, user: int) -> float:
    """One /status from ``user`` in ``chat``: milliseconds until the reply is recorded."""
    after = tg.sent[-1].seq if tg.sent else 0
    started = time.perf_counter()
    await tg.inject_message(chat, user, "/status")
    if not await tg.wait_sent(after, 30.0, chat_id=chat):
        raise SystemExit("no reply to /status")
    return (time.perf_counter() - started) * 1000


async def busy(rounds: int) -> None:
    from bot.commands import Command, Context, Reply
    from bot.node import Node
    from core.config import LoadedConfig, parse_config
    from core.localtelegram import LocalTelegram
    from tests.auxil.net import free_port

    async def long_command(ctx: Context) -> Reply:
        await asyncio.sleep(BUSY)
        return Reply("done")

    with tempfile.TemporaryDirectory() as tmp:
        async with LocalTelegram() as tg:
            os.environ["BENCH_BOT_TOKEN"] = "123456:bench"
            telegram = {"token_env": "BENCH_BOT_TOKEN", "api_base_url": tg.base_url}
            here = {"name": "here", "os": "linux", "address": "127.0.0.1", "local": True}
            raw = {
                "node": {"name": "bench", "data_dir": tmp},
                "telegram": {**telegram, "admins": [ADMIN], "viewers": [VIEWER]},
                "sidecar": {"port": free_port()},
                "machines": [here],
            }
            node = Node(LoadedConfig(parse_config(raw), None))
            node.registry.add(Command("long", f"runs {BUSY:g} s", long_command))
            await node.start()
            try:
                alone: list[float] = []
                for i in range(rounds + 10):
                    elapsed = await status_round(tg, VIEWER, VIEWER)
                    if i >= 10:  # the first rounds warm caches and connections
                        alone.append(elapsed)
                    await asyncio.sleep(PACE)
                after = tg.sent[-1].seq
                await tg.inject_message(ADMIN, ADMIN, "/long")
                started = time.perf_counter()
                during: list[float] = []
                # Within the long command's run, leaving a margin for its own reply.
                while len(during) < rounds and time.perf_counter() - started < BUSY - 2:
                    during.append(await status_round(tg, VIEWER, VIEWER))
                    await asyncio.sleep(PACE)
                overlap = not [s for s in tg.sent if s.seq > after and s.text == "done"]
                if not await tg.wait_sent(after, BUSY + 10, chat_id=ADMIN):
                    raise SystemExit("no reply to the long command")
            finally:
                await node.stop()

    def p95(values: list[float]) -> float:
        return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]

    print(f"/status from a second chat; one {BUSY:g} s command in another chat, one event loop")
    for label, values in (("alone", alone), ("while it runs", during)):
        print(
            f"/status {label} ({len(values)} rounds): median {statistics.median(values):6.2f} ms, "
            f"p95 {p95(values):6.2f} ms, max {max(values):6.2f} ms"
        )
    ratio = statistics.median(during) / statistics.median(alone)
    print(f"ratio of medians while busy : alone: {ratio:6.2f}")
    if not overlap:
        print("note: the long command ended before the last /status: they waited for it")


async def main(rounds: int) -> None:
    from telegram import Update
    from telegram.ext import CommandHandler, ContextTypes

    from bot.node import Node
    from core.config import LoadedConfig, parse_config
    from core.localtelegram import LocalTelegram
    from tests.auxil.net import free_port

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text("echo")

    with tempfile.TemporaryDirectory() as tmp:
        async with LocalTelegram() as tg:
            os.environ["BENCH_BOT_TOKEN"] = "123456:bench"
            config = parse_config({
                "node": {"name": "bench", "data_dir": tmp},
                "telegram": {"token_env": "BENCH_BOT_TOKEN", "api_base_url": tg.base_url,
                             "allowed_chats": [CHAT], "admins": [ADMIN]},
                "sidecar": {"port": free_port()},
                "machines": [{"name": "here", "os": "linux", "address": "127.0.0.1",
                              "local": True}],
            })  # fmt: skip
            node = Node(LoadedConfig(config, None))
            await node.start()
            assert node.bot is not None
            node.bot.app.add_handler(CommandHandler("echo", echo), group=-2)
            try:
                timings: dict[str, list[float]] = {"/echo": [], "/status": []}
                for i in range(rounds + 10):
                    for command, samples in timings.items():
                        after = tg.sent[-1].seq if tg.sent else 0
                        started = time.perf_counter()
                        await tg.inject_message(CHAT, ADMIN, command)
                        if not await tg.wait_sent(after, 10.0, chat_id=CHAT):
                            raise SystemExit(f"no reply to {command}")
                        elapsed = (time.perf_counter() - started) * 1000
                        if i >= 10:  # the first rounds warm caches and connections
                            samples.append(elapsed)
                        await asyncio.sleep(PACE)
            finally:
                await node.stop()

    def p95(values: list[float]) -> float:
        return statistics.quantiles(values, n=20)[-1]

    base, status = timings["/echo"], timings["/status"]
    print(f"{rounds} rounds each, interleaved, one event loop")
    print(f"baseline /echo (bare PTB handler): median {statistics.median(base):6.2f} ms, "
          f"p95 {p95(base):6.2f} ms")  # fmt: skip
    print(f"/status through clawops:          median {statistics.median(status):6.2f} ms, "
          f"p95 {p95(status):6.2f} ms")  # fmt: skip
    ratio = statistics.median(status) / statistics.median(base)
    print(f"ratio of medians /status : /echo: {ratio:6.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--busy", action="store_true", help="/status while a 20 s command runs")
    args = parser.parse_args()
    asyncio.run(busy(args.rounds) if args.busy else main(args.rounds))
