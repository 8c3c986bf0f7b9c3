"""Replies for Telegram's HTML parse mode: escaping, and splitting past the 4096-char limit."""

from __future__ import annotations

import html
import re

LIMIT = 4096
# Past this many messages a reply goes out as a document instead.
MAX_PARTS = 3
_TAG = re.compile(r"<(/?)(b|i|u|s|code|pre)(?:\s[^>]*)?>")


def esc(value: object) -> str:
    """Escape anything user-supplied (or remote-supplied) for HTML parse mode."""
    return html.escape(str(value), quote=False)


def split_html(text: str, limit: int = LIMIT) -> list[str]:
    """Split on line boundaries into parts of at most ``limit`` chars.

    Tags open at a boundary (``<pre>`` around a long log, say) are closed at the end of one part
    and reopened at the start of the next, so every part is valid HTML on its own. A single line
    longer than a part is cut, never inside a tag or an entity.
    """
    if len(text) <= limit:
        return [text]
    budget = limit - 64  # room to close and reopen tags
    pieces: list[str] = []
    for line in text.splitlines(keepends=True):
        while len(line) > budget:
            cut = _safe_cut(line, budget)
            pieces.append(line[:cut])
            line = line[cut:]
        pieces.append(line)
    parts: list[str] = []
    current = ""
    open_tags: list[str] = []
    for piece in pieces:
        if current and len(current) + len(piece) > budget:
            parts.append(current + _close(open_tags))
            current = "".join(f"<{t}>" for t in open_tags)
        current += piece
        _track(piece, open_tags)
    if current.strip():
        parts.append(current + _close(open_tags))
    return parts


def _close(open_tags: list[str]) -> str:
    return "".join(f"</{t}>" for t in reversed(open_tags))


def _safe_cut(line: str, at: int) -> int:
    """A cut position <= at that is not inside ``<...>`` or ``&...;``."""
    for opener, closer in (("<", ">"), ("&", ";")):
        start = line.rfind(opener, 0, at)
        if start != -1 and line.find(closer, start, at) == -1 and start > 0:
            at = start
    return at


def _track(fragment: str, open_tags: list[str]) -> None:
    for closing, tag in _TAG.findall(fragment):
        if closing:
            if tag in open_tags:
                open_tags.remove(tag)
        else:
            open_tags.append(tag)


def plain(text: str) -> str:
    """HTML reply -> plain text (for a document attachment)."""
    return html.unescape(re.sub(r"<[^>]+>", "", text))
