"""Fixtures of the bot tests: the local Bot API server the bot talks to over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.localtelegram import LocalTelegram


@pytest.fixture
async def tg() -> AsyncIterator[LocalTelegram]:
    async with LocalTelegram() as server:
        yield server
