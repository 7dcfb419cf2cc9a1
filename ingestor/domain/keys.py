"""The compact encodings of the packed history: odd keys, entry keys, event ids, flags.

All pure; the SQL side of each is in alembic/versions/0005 (``odd_key(text)`` and the
``odds_history`` view), and a test holds the two sides equal.
"""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime

from ingestor.domain.events import Kind

ORIGIN = datetime(2020, 1, 1, tzinfo=UTC)  # event ids count microseconds from here
SEQ_BITS = 20  # entry key = ms << 20 | seq
_SEQ_MASK = (1 << SEQ_BITS) - 1
_MS_LIMIT = 1 << 43
SLOTS = 15  # writer slots 0-14; 15 is the migration's
_F4 = struct.Struct("<f")
CACHE_MAX = 200_000  # odd keys and float checks kept; past it the cache starts again


class _Bounded(dict[object, object]):
    """A dict that forgets everything once it holds ``CACHE_MAX`` entries (cheap, bounded)."""

    def remember(self, key: object, value: object) -> None:
        if len(self) >= CACHE_MAX:
            self.clear()
        self[key] = value


_ODD_KEYS = _Bounded()
_EXACT = _Bounded()


def odd_key(uid: str) -> int:
    """The first 8 bytes of md5(id), signed: SQL ``odd_key(id)``."""
    key = _ODD_KEYS.get(uid)
    if key is None:
        key = int.from_bytes(hashlib.md5(uid.encode()).digest()[:8], "big", signed=True)
        _ODD_KEYS.remember(uid, key)
    return key  # type: ignore[return-value]


def entry_key(entry_id: str) -> tuple[int, str | None]:
    """``'<ms>-<seq>'`` as ms << 20 | seq, ordered like the id; the text too when it is not in
    that canonical form or does not fit (its key is then clamped, and only the text is exact)."""
    ms, sep, seq = entry_id.partition("-")
    if sep and ms.isdigit() and seq.isdigit() and ms.isascii() and seq.isascii():
        m, s = int(ms), int(seq)
        if m < _MS_LIMIT and s <= _SEQ_MASK and f"{m}-{s}" == entry_id:
            return (m << SEQ_BITS) | s, None
        return (min(m, _MS_LIMIT - 1) << SEQ_BITS) | min(s, _SEQ_MASK), entry_id
    return 0, entry_id


def float4_exact(value: float | None) -> bool:
    """Whether float4 keeps ``value``: its shortest float4 text reads back as ``value``, as
    ``price::text::float8`` does in PostgreSQL. True for American and decimal prices and for
    points; a probability format (1/3 ...) is not, and goes into ``exact``."""
    if value is None:
        return True
    hit = _EXACT.get(value)
    if hit is None:
        f4 = _F4.unpack(_F4.pack(value))[0] if abs(value) < 3.4e38 else None
        hit = False
        if f4 is not None:
            for digits in range(1, 10):
                text = f"{f4:.{digits}g}"
                if _F4.unpack(_F4.pack(float(text)))[0] == f4:  # the shortest text of f4
                    hit = float(text) == value
                    break
        _EXACT.remember(value, hit)
    return bool(hit)


def received_us(at: datetime) -> int:
    """Microseconds since ``ORIGIN``."""
    delta = at - ORIGIN
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def event_id(us: int, slot: int, n: int = 0) -> int:
    """``change_events.id``: received microseconds << 8 | writer slot << 4 | n."""
    return (us << 8) | (slot << 4) | n


def main_code(is_main: bool | None) -> int:
    """0 unknown, 1 false, 2 true."""
    return 0 if is_main is None else 2 if is_main else 1


def ev(event: int, kind: Kind, is_main: bool | None) -> int:
    """``odds_changes.ev``: the event id, the kind and the main flag in one bigint."""
    return (event << 4) | (int(kind) << 2) | main_code(is_main)


def day_event_range(day: datetime) -> tuple[int, int]:
    """The ``change_events.id`` range of the events received on ``day`` (a UTC midnight)."""
    lo = received_us(day) << 8
    return lo, lo + (86_400_000_000 << 8)
