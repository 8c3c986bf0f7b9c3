"""``clawops chat``: talk to the running bot from a terminal, through the local Bot API.

Type a command and see the bot's answer; buttons are listed with numbers, and typing a number
presses that button of the last message that had buttons. ``-c "/status"`` sends one message,
prints the answer and exits (for scripts). Works when the node runs without a Telegram token,
which is what ``scripts/run`` does by default. The node writes the server's URL and its control
secret to ``<data_dir>/local-bot-api.json`` (0600); reading that file is what allows a process to
speak as the local operator.
"""

from __future__ import annotations

import html
import re
import sys
import time
from typing import Any

import httpx

from bot.commands import number

QUIET = 0.6  # seconds without a new item after the first one: the answer is complete


def render(item: dict[str, Any]) -> str:
    text = html.unescape(re.sub(r"<[^>]+>", "", item.get("text") or ""))
    prefix = {"edit": "(edited) ", "answer": "(notice) ", "document": "(file) "}.get(
        item["kind"], ""
    )
    lines = [prefix + text if text else prefix.strip()]
    if item["kind"] == "document":
        lines.append(f"  [{item.get('filename')}, {item.get('size')} bytes]")
        lines.append("  " + "\n  ".join(str(item.get("content", "")).splitlines()[:40]))
    buttons = [b for row in item.get("buttons") or [] for b in row]
    if buttons:
        lines.append("  " + "   ".join(f"[{i}] {b['text']}" for i, b in enumerate(buttons, 1)))
    return "\n".join(line for line in lines if line)


class Chat:
    def __init__(self, url: str, secret: str, user_id: int, chat_id: int, username: str) -> None:
        self.client = httpx.Client(
            base_url=url, timeout=40, headers={"Authorization": f"Bearer {secret}"}
        )
        self.user_id, self.chat_id, self.username = user_id, chat_id, username
        answer = self.client.get("/control/sent")
        answer.raise_for_status()
        self.last = answer.json()["last"]
        self.buttons: tuple[int, list[dict[str, Any]]] | None = None

    def send(self, text: str) -> None:
        body = {"chat_id": self.chat_id, "user_id": self.user_id, "text": text,
                "username": self.username}  # fmt: skip
        self.client.post("/control/message", json=body).raise_for_status()

    def press(self, number: int) -> None:
        if self.buttons is None or not 1 <= number <= len(self.buttons[1]):
            raise ValueError("no such button")
        message_id, buttons = self.buttons
        body = {"chat_id": self.chat_id, "user_id": self.user_id, "message_id": message_id,
                "data": buttons[number - 1]["callback_data"]}  # fmt: skip
        self.client.post("/control/press", json=body).raise_for_status()

    def replies(self, first_wait: float = 30.0) -> list[dict[str, Any]]:
        """Everything the bot sends in answer: wait for the first item, then until quiet."""
        items: list[dict[str, Any]] = []
        wait = first_wait
        while True:
            params = {"after": self.last, "timeout": wait, "chat_id": self.chat_id}
            answer = self.client.get("/control/sent", params=params).json()
            new = answer["items"]
            if not new:
                return items
            items += new
            self.last = max(self.last, *(i["seq"] for i in new))
            for item in new:
                if item.get("buttons"):
                    self.buttons = (item["message_id"], [b for r in item["buttons"] for b in r])
            # A progress message ("⏳ …") is not the answer: its edit with the reply is.
            wait = first_wait if str(new[-1].get("text", "")).startswith("⏳") else QUIET


def run_chat(
    url: str, secret: str, user_id: int, chat_id: int, username: str, once: str | None
) -> int:
    try:
        chat = Chat(url, secret, user_id, chat_id, username)
    except httpx.HTTPStatusError as exc:
        answer = f"{exc.response.status_code}: {exc.response.text.strip()[:200]}"
        print(f"clawops chat: the local Bot API at {url} refused us ({answer})", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"clawops chat: no local Bot API at {url} ({exc}). Is `clawops run` running "
              "without a Telegram token?", file=sys.stderr)  # fmt: skip
        return 1
    if once is not None:
        chat.send(once)
        items = chat.replies()
        for item in items:
            print(render(item))
        return 0 if items else 1
    print(f"Chatting with the bot at {url} as user {user_id}. /help lists commands; a number "
          "presses a button; Ctrl-D quits.")  # fmt: skip
    while True:
        try:
            line = input("> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not line:
            continue
        started = time.monotonic()
        try:
            button = number(line)
            if button is not None:
                chat.press(button)
            else:
                chat.send(line)
        except ValueError as exc:
            print(exc)
            continue
        except httpx.HTTPError as exc:
            print(f"(the local Bot API did not answer: {exc})")
            continue
        items = chat.replies()
        for item in items:
            print(render(item))
        if not items:
            print(f"(no answer in {time.monotonic() - started:.0f} s)")
