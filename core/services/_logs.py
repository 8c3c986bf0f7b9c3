"""What ``/logs`` shows: the tail of each stream a service writes, each marked with its source.

A crash is usually explained on stderr, so every manager returns both streams when it has two
(PM2's out and error files, launchd's StandardOutPath and StandardErrorPath), or its one mixed
log with the error lines marked (the systemd journal). ``render`` makes the plain text that a
document or a terminal shows::

    ── stdout (/Users/me/.pm2/logs/aphos-out.log) ──
    listening on 2567
    ── stderr (/Users/me/.pm2/logs/aphos-error.log) ──
    Error: connect ECONNREFUSED 127.0.0.1:5432
"""

from __future__ import annotations

from dataclasses import dataclass

# Bytes read from the end of each file: ``tail -c`` bounds what crosses the link whatever the
# line lengths are; the last N lines are cut from that chunk.
TAIL_BYTES = 256 * 1024


@dataclass(frozen=True)
class LogStream:
    """One stream's tail: ``name`` (stdout, stderr, journal, log), where it was read from, its
    text, and why it could not be read (``error``) or that only its end was read (``cut``)."""

    name: str
    source: str
    text: str = ""
    error: str = ""
    cut: bool = False

    @property
    def title(self) -> str:
        return f"{self.name} ({self.source})"

    @property
    def body(self) -> str:
        """The text, or a line that says why there is none."""
        if self.error:
            return f"(cannot read it: {self.error})"
        note = f"(only the last {TAIL_BYTES // 1024} KiB were read)\n" if self.cut else ""
        return note + (self.text or "(empty)")


@dataclass(frozen=True)
class ServiceLogs:
    """The tails of one service's streams, in the order they are shown."""

    service: str
    machine: str
    lines: int
    streams: tuple[LogStream, ...]

    def render(self) -> str:
        return "\n".join(f"── {s.title} ──\n{s.body}" for s in self.streams) + "\n"

    def text_of(self, name: str) -> str:
        """The text of the stream called ``name`` ("" when there is none)."""
        return next((s.text for s in self.streams if s.name == name), "")


def last_lines(chunk: str, lines: int) -> tuple[str, bool]:
    """The last ``lines`` lines of a chunk read with ``tail -c TAIL_BYTES``, and whether the
    chunk was cut (then its first line may be a fragment and is dropped)."""
    cut = len(chunk.encode()) >= TAIL_BYTES
    rows = chunk.splitlines()
    if cut and rows:
        rows = rows[1:]
    kept = rows[-lines:]
    return "\n".join(kept), cut and len(kept) < lines
