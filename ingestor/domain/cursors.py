"""Each group's committed stream position: one owner, two verbs, many readers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a group's stream was last committed: the vendor's entry id and the SSE id."""

    entry_id: str
    event_id: str | None = None


class Cursors:
    """Committed cursors by group key.

    Only two things move a cursor: the writer ``advance``s it after the transaction that
    stored the group's events committed (the database keeps it forward-only and hands back
    what it stored), and the coordinator ``adopt``s the one another process committed when it
    takes the group over. Workers only read it, when they connect."""

    def __init__(self, initial: dict[str, Cursor] | None = None) -> None:
        self._by_group: dict[str, Cursor] = dict(initial or {})

    def get(self, group_key: str) -> Cursor | None:
        """The group's committed cursor, if it ever committed."""
        return self._by_group.get(group_key)

    def entry_id(self, group_key: str) -> str | None:
        """The committed entry id, sent as ``last_entry_id``."""
        cursor = self._by_group.get(group_key)
        return cursor.entry_id if cursor else None

    def advance(self, group_key: str, cursor: Cursor) -> None:
        """After a commit: the position the database now holds for the group."""
        self._by_group[group_key] = cursor

    def adopt(self, group_key: str, cursor: Cursor | None) -> None:
        """On takeover: the position another process committed (none: keep what we know)."""
        if cursor is not None:
            self._by_group[group_key] = cursor

    def __len__(self) -> int:
        return len(self._by_group)
