"""PostgreSQL's binary COPY format, written from records and their columns' types.

Why: asyncpg's ``copy_records_to_table`` was 17-18% of the daemon's CPU in the bench profile
(about 2.5 µs per odd): a codec call per field, and two datetime operations in Python per
timestamp. The compiled twin of this module (``_pgcopy.pyx``, built with the package) writes
the same bytes in one C loop; this pure-Python version is the fallback where no compiler was
at hand, and the reference a property test holds the twin to (byte for byte, and the same
error class for every value it refuses).

The types are PostgreSQL's names (``format_type``), spelled once per COPY target in
``ingestor/storage/sql.py``; a test compares them with the migrated schema.

Errors: a value of the wrong Python type is a bug (``TypeError``: the writer stops, loudly);
a value of the right type that PostgreSQL cannot hold (a real beyond float4, an int beyond
its column) is the feed's (``ValueError``: the writer drops the event alone, as it does a row
PostgreSQL refuses).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import UTC, datetime

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
TRAILER = b"\xff\xff"
NULL = b"\xff\xff\xff\xff"
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
FLOAT8_OID = 701

# One letter per type, the compiled twin's switch.
CODES = {
    "bigint": "q",
    "smallint": "h",
    "real": "f",
    "double precision": "d",
    "text": "t",
    "boolean": "b",
    "timestamp with time zone": "T",
    "bytea": "y",
    "double precision[]": "D",
}

_INT8 = struct.Struct("!iq")
_INT2 = struct.Struct("!ih")
_FLOAT4 = struct.Struct("!if")
_FLOAT8 = struct.Struct("!id")
_LEN = struct.Struct("!i")
_COUNT = struct.Struct("!h")
_ARRAY = struct.Struct("!iiiiii")  # length, ndim, has nulls, element type, size, lower bound


def codes(types: Sequence[str]) -> str:
    """The type letters of a COPY target's columns; a type this module cannot write is named."""
    try:
        return "".join(CODES[t] for t in types)
    except KeyError as exc:
        raise ValueError(f"binary COPY: no encoder for type {exc.args[0]!r}") from None


def pure_payload(records: Sequence[Sequence[object]], codes: str) -> bytes:
    """The whole COPY stream (header, one tuple per record, trailer)."""
    out = [HEADER]
    count = _COUNT.pack(len(codes))
    for record in records:
        if len(record) != len(codes):
            raise TypeError(f"binary COPY: a record of {len(record)} values for {len(codes)}")
        out.append(count)
        for code, value in zip(codes, record, strict=True):
            out.append(NULL if value is None else _field(code, value))
    out.append(TRAILER)
    return b"".join(out)


def _field(code: str, value: object) -> bytes:  # noqa: C901 - one branch per type
    if code == "q":
        return _INT8.pack(8, _int(value, 63))
    if code == "h":
        return _INT2.pack(2, _int(value, 15))
    if code == "f":
        return _FLOAT4.pack(4, _float4(value))
    if code == "d":
        return _FLOAT8.pack(8, _float(value))
    if code == "t":
        if not isinstance(value, str):
            raise TypeError(f"binary COPY: text needs a str, got {type(value).__name__}")
        data = value.encode()
        return _LEN.pack(len(data)) + data
    if code == "b":
        if not isinstance(value, bool):
            raise TypeError(f"binary COPY: boolean needs a bool, got {type(value).__name__}")
        return b"\x00\x00\x00\x01\x01" if value else b"\x00\x00\x00\x01\x00"
    if code == "T":
        return _INT8.pack(8, _micros(value))
    if code == "y":
        if not isinstance(value, bytes):
            raise TypeError(f"binary COPY: bytea needs bytes, got {type(value).__name__}")
        return _LEN.pack(len(value)) + value
    if code == "D":
        return _float8_array(value)
    raise TypeError(f"binary COPY: unknown type letter {code!r}")


def _int(value: object, bits: int) -> int:
    if not isinstance(value, int):
        raise TypeError(f"binary COPY: an integer column needs an int, got {type(value).__name__}")
    if not -(1 << bits) <= value < 1 << bits:
        raise ValueError(f"binary COPY: {value} is out of range for a {bits + 1}-bit integer")
    return value


def _float(value: object) -> float:
    if not isinstance(value, float | int):
        raise TypeError(f"binary COPY: a float column needs a number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError("binary COPY: integer too large for a float") from None


def _float4(value: object) -> float:
    number = _float(value)
    try:
        struct.pack("!f", number)
    except OverflowError:
        raise ValueError(f"binary COPY: {number!r} is out of range for real") from None
    return number


def _micros(value: object) -> int:
    """Microseconds since 2000-01-01 UTC, PostgreSQL's timestamptz."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise TypeError(f"binary COPY: timestamptz needs an aware datetime, got {value!r}")
    delta = value - PG_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _float8_array(value: object) -> bytes:
    if not isinstance(value, list | tuple):
        raise TypeError(f"binary COPY: an array needs a list, got {type(value).__name__}")
    if not value:
        return _LEN.pack(12) + struct.pack("!iii", 0, 0, FLOAT8_OID)
    items = [NULL if v is None else _FLOAT8.pack(8, _float(v)) for v in value]
    body = b"".join(items)
    has_null = int(any(v is None for v in value))
    head = _ARRAY.pack(20 + len(body), 1, has_null, FLOAT8_OID, len(value), 1)
    return head + body


payload = pure_payload
try:
    from ingestor.storage.write._pgcopy import payload as _compiled
except ImportError:  # built with BUILD_PURE_PYTHON=1 (setup.py)
    COMPILED = False
else:
    COMPILED = True
    payload = _compiled
