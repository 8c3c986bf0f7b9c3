"""Fixtures of the bot tests: the local Bot API server the bot talks to over HTTP, and an SSH
server for a machine reached over SSH."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.localtelegram import LocalTelegram
from tests.auxil.sshd import SSHServer, start_sshd


@pytest.fixture
async def tg() -> AsyncIterator[LocalTelegram]:
    async with LocalTelegram() as server:
        yield server


@pytest.fixture
async def sshd(tmp_path: Path) -> AsyncIterator[SSHServer]:
    server = await start_sshd(tmp_path)
    yield server
    await server.close()
