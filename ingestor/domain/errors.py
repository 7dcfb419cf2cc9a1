"""Errors of the domain: input that cannot become rows."""

from __future__ import annotations


class DecodeError(ValueError):
    """A data event that cannot be stored; ``reason`` is a short stable label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.payload: bytes = b""  # the offending odd, when one odd of an event is at fault


class EntryIdError(ValueError):
    """An entry id that is not ``<milliseconds>-<sequence>``."""
