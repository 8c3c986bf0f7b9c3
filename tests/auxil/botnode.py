"""A real node whose bot talks to a test's local Bot API: the users, chats and config base that
the bot tests share; each test adds the config sections it is about."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from bot.commands import Command
from bot.node import Node
from core.config import LoadedConfig, parse_config
from core.localtelegram import LocalTelegram
from tests.auxil.net import free_port

ADMIN, OTHER_ADMIN, VIEWER, STRANGER = 100, 101, 200, 300
GROUP, OTHER_GROUP = -500, -600
HERE = {"name": "here", "os": "linux", "address": "127.0.0.1", "local": True}


async def start_test_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tg: LocalTelegram, *,
    telegram: dict[str, Any] | None = None, commands: Iterable[Command] = (), **sections: Any,
) -> Node:  # fmt: skip
    """Start a node named "test" polling ``tg``: GROUP allowed, ADMIN an admin, VIEWER a viewer,
    this machine as "here" (unless ``machines`` is given); ``telegram`` keys and other config
    sections are added on top."""
    monkeypatch.setenv("TEST_BOT_TOKEN", "123456:test-token")
    raw: dict[str, Any] = {
        "node": {"name": "test", "data_dir": str(tmp_path / "data")},
        "telegram": {"token_env": "TEST_BOT_TOKEN", "api_base_url": tg.base_url,
                     "allowed_chats": [GROUP], "admins": [ADMIN], "viewers": [VIEWER],
                     **(telegram or {})},
        "sidecar": {"port": free_port()},
        "machines": [HERE],
        **sections,
    }  # fmt: skip
    node = Node(LoadedConfig(parse_config(raw), None))
    node.registry.extend(commands)
    await node.start()
    return node
