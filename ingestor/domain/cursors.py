"""A group's committed stream position (the writer keeps them; workers resume from them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a group's stream was last committed: the vendor's entry id and the SSE id."""

    entry_id: str
    event_id: str | None = None
