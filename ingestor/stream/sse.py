"""Incremental, bytes-level Server-Sent-Events parser (WHATWG "Interpreting an event stream").

Works on raw bytes: lines are split with ``bytes.split`` and partial lines are kept in a
growing ``bytearray``, so an event arriving in many small chunks is never re-scanned.
Event data stays ``bytes`` (verbatim, for orjson); only field values for ``event`` and ``id``
are decoded (UTF-8, ``errors="replace"``).

Size limit: an event is too large when its data (as dispatched) would exceed
``max_event_bytes``, or when its buffered data plus the current line (complete or still
unfinished) exceeds ``max_event_bytes`` plus a small allowance for the field name.  The
parser then frees the buffered data, drops the rest of that line without buffering it, and
ignores the rest of that event's ``data`` lines up to its dispatching blank line (other
fields, e.g. ``id``, are still applied); the event is never dispatched.  ``feed`` still
consumes the whole chunk and raises :class:`EventTooLarge` at its end; the exception's
``events`` holds every event completed by that chunk (before and after the oversized one),
so nothing is lost and the next ``feed`` simply continues the stream.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

__all__ = ["EventTooLarge", "SSEError", "SSEEvent", "SSEParser"]

_BOM = b"\xef\xbb\xbf"
_FIELD_ALLOWANCE = 64  # room for "data: " (or another field name) on top of max_event_bytes


class SSEEvent(NamedTuple):
    """One dispatched event (a named tuple: made 4x faster than a frozen dataclass, which
    sets each field through object.__setattr__; one is made per event)."""

    event: str
    data: bytes
    id: str


class SSEError(Exception):
    """Base class for SSE parsing errors."""


class EventTooLarge(SSEError):
    """An event exceeded ``max_event_bytes``; ``events`` holds the chunk's other events."""

    def __init__(self, limit: int, size: int, events: list[SSEEvent] | None = None) -> None:
        super().__init__(
            f"SSE event too large: at least {size} bytes exceeds max_event_bytes={limit}"
        )
        self.limit = limit
        self.size = size
        self.events: list[SSEEvent] = events if events is not None else []


class SSEParser:
    """Feed raw stream bytes, get completed :class:`SSEEvent` objects back."""

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        """Create a parser for a new stream."""
        if max_event_bytes < 1:
            raise ValueError("max_event_bytes must be positive")
        self.max_event_bytes = max_event_bytes
        self._line_limit = max_event_bytes + _FIELD_ALLOWANCE
        # The spec's "last event ID string": set only when an event is dispatched, so an event
        # cut off by a dropped connection never lends its id to the next one.
        self.last_event_id: str = ""
        # Whether a dispatched event carried an id field (even an empty one, which clears
        # the id: the spec's way for a server to say "send no Last-Event-ID").
        self.id_dispatched = False
        self.retry_ms: int | None = None
        self.reset()

    def reset(self) -> None:
        """Drop any partial line/event (e.g. on reconnect); keep last_event_id and retry_ms."""
        self._id_buffer = self.last_event_id  # the spec's "last event ID buffer"
        self._id_field = False  # the event being read has an id field
        self._bom_check = True
        self._bom_buf = b""
        self._cr_pending = False
        self._partial = bytearray()
        self._skip_line = False  # dropping the rest of an oversized line
        self._skip_event = False  # ignoring data until the oversized event's blank line
        self._data: list[bytes] = []
        self._data_len = 0  # spec data buffer length: sum of len(value) + 1
        self._event_type = ""
        self._error: EventTooLarge | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse a chunk and return the events it completed, in order.

        Raises :class:`EventTooLarge` after consuming the whole chunk if an event in it was
        too large; ``exc.events`` then carries the chunk's completed events and the parser
        remains usable.
        """
        chunk = self._normalise(chunk)
        out: list[SSEEvent] = []
        if chunk:
            self._feed_lines(chunk, out)
        err = self._error
        if err is not None:
            self._error = None
            err.events = out
            raise err
        return out

    def _normalise(self, chunk: bytes) -> bytes:
        """Strip the stream's leading BOM and turn CR / CRLF into LF (also across chunks)."""
        if self._bom_check:
            chunk = self._bom_buf + chunk
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._bom_buf = chunk
                return b""
            self._bom_check = False
            self._bom_buf = b""
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        if not chunk:
            return chunk
        if self._cr_pending:
            self._cr_pending = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._cr_pending = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return chunk

    def _feed_lines(self, chunk: bytes, out: list[SSEEvent]) -> None:
        """The chunk's complete lines, then its unfinished tail (compiled: ``_sse.pyx``)."""
        feed_lines(self, chunk, out)

    def _lines(self, lines: list[bytes], out: list[SSEEvent]) -> None:
        """Process complete lines (without terminators)."""
        start = 0
        if self._skip_line:
            self._skip_line = False
            start = 1  # the tail end of an oversized line
        elif self._partial:
            lines[0] = b"".join((self._partial, lines[0]))
            self._partial = bytearray()
        limit = self._line_limit
        for i in range(start, len(lines)):
            line = lines[i]
            if not line:
                self._dispatch(out)
            elif self._data_len + len(line) > limit:
                self._oversize(self._data_len + len(line))
            # The stream's usual lines, inline (the cases of _field): its split and name
            # slice were 40% of the parse on the bench's stream.
            elif line.startswith(b"data: ") and not self._skip_event:
                self._data_line(line[6:])
            elif line.startswith(b"event: "):
                self._event_type = line[7:].decode("utf-8", "replace")
            elif line.startswith(b"id: ") and b"\x00" not in line:
                self._id_buffer = line[4:].decode("utf-8", "replace")
                self._id_field = True
            elif line[0] != 0x3A:  # not a ':' comment
                self._field(line)

    def _buffer_tail(self, tail: bytes) -> None:
        """Keep an unfinished line, unless it grows beyond the size limit."""
        if self._skip_line:
            return
        self._partial += tail
        size = self._data_len + len(self._partial)
        if size > self._line_limit:
            self._partial = bytearray()
            self._skip_line = True
            self._oversize(size)

    def _oversize(self, size: int) -> None:
        """Discard the current event; record the error once per oversized event."""
        self._data = []
        self._data_len = 0
        if not self._skip_event:
            self._skip_event = True
            if self._error is None:
                self._error = EventTooLarge(self.max_event_bytes, size)

    def _field(self, line: bytes) -> None:
        """Apply one non-empty, non-comment line to the event buffers."""
        colon = line.find(b":")
        if colon < 0:
            name, value = line, b""
        else:
            name = line[:colon]
            value = line[colon + 2 :] if line.startswith(b" ", colon + 1) else line[colon + 1 :]
        if name == b"data":
            if not self._skip_event:
                self._data_line(value)
        elif name == b"event":
            self._event_type = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:
                self._id_buffer = value.decode("utf-8", "replace")
                self._id_field = True
        elif name == b"retry" and value.isdigit():
            with contextlib.suppress(ValueError):  # beyond Python's int digit limit
                self.retry_ms = int(value)

    def _data_line(self, value: bytes) -> None:
        new_len = self._data_len + len(value) + 1
        if new_len - 1 > self.max_event_bytes:
            self._oversize(new_len - 1)
            return
        self._data.append(value)
        self._data_len = new_len

    def _dispatch(self, out: list[SSEEvent]) -> None:
        """Handle a blank line: emit the buffered event, if any, and reset the buffers."""
        self.last_event_id = self._id_buffer  # also for an event without data (spec step 1)
        if self._id_field:
            self.id_dispatched, self._id_field = True, False
        if self._data and not self._skip_event:
            data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            out.append(SSEEvent(self._event_type or "message", data, self.last_event_id))
        self._skip_event = False
        self._data = []
        self._data_len = 0
        self._event_type = ""


def pure_feed_lines(parser: SSEParser, chunk: bytes, out: list[SSEEvent]) -> None:
    """The reference of ``_sse.feed_lines``: split, every complete line, the tail kept."""
    lines = chunk.split(b"\n")
    tail = lines.pop()
    if lines:
        parser._lines(lines, out)
    if tail:
        parser._buffer_tail(tail)


feed_lines = pure_feed_lines
try:
    from ingestor.stream._sse import feed_lines as _compiled
except ImportError:  # built with BUILD_PURE_PYTHON=1 (setup.py)
    COMPILED = False
else:
    COMPILED = True
    feed_lines = _compiled
