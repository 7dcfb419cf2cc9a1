"""The binary COPY encoder: the compiled twin writes the pure-Python module's bytes exactly,
and refuses what it refuses with the same error class (the property the fallback rests on)."""

from __future__ import annotations

import os
import struct
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestor.storage.write import pgcopy

PURE_BUILD = os.environ.get("BUILD_PURE_PYTHON") == "1"

if PURE_BUILD:  # pragma: no cover - a build without a C compiler (setup.py)
    compiled_payload = pgcopy.pure_payload
else:
    from ingestor.storage.write._pgcopy import payload as compiled_payload

CODES = "".join(pgcopy.CODES.values())
offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=13, minutes=45))]
)
moments = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
)
floats = st.floats(allow_nan=False) | st.integers(-(2**70), 2**70)
VALID: dict[str, st.SearchStrategy[Any]] = {
    "q": st.integers(-(2**63), 2**63 - 1) | st.booleans(),
    "h": st.integers(-(2**15), 2**15 - 1),
    "f": st.floats(width=32) | st.integers(-(2**40), 2**40),
    "d": floats,
    "t": st.text(),
    "b": st.booleans(),
    "T": moments,
    "y": st.binary(),
    "D": st.lists(st.none() | floats, max_size=4) | st.tuples(floats, st.none()),
}
ANYTHING = (
    st.integers(-(2**80), 2**80)
    | st.floats()
    | st.text(max_size=3)
    | st.binary(max_size=3)
    | st.booleans()
    | st.datetimes()
    | moments
    | st.lists(st.floats() | st.text(max_size=2), max_size=2)
    | st.sampled_from([3.5e38, -1e39, 2**63, -(2**63) - 1, 2**15, float("inf"), "\udc80"])
)


@st.composite
def layouts(draw: st.DrawFn) -> tuple[str, list[tuple[Any, ...]]]:
    codes = draw(st.text(alphabet=CODES, min_size=1, max_size=12))
    rows = draw(
        st.lists(
            st.tuples(*(st.none() | VALID[c] for c in codes)),
            max_size=5,
        )
    )
    return codes, rows


def _outcome(encode: Any, records: Any, codes: str) -> bytes | type[BaseException]:
    try:
        return bytes(encode(records, codes))
    except (TypeError, ValueError) as exc:
        return ValueError if isinstance(exc, ValueError) else TypeError


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(layouts())
def test_the_compiled_twin_writes_the_bytes_of_the_pure_module(
    layout: tuple[str, list[tuple[Any, ...]]],
) -> None:
    codes, rows = layout
    expected = pgcopy.pure_payload(rows, codes)
    assert compiled_payload(rows, codes) == expected
    assert expected.startswith(pgcopy.HEADER) and expected.endswith(pgcopy.TRAILER)


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CODES), ANYTHING)
def test_the_twins_accept_and_refuse_the_same_values_alike(code: str, value: Any) -> None:
    pure = _outcome(pgcopy.pure_payload, [(value,)], code)
    assert _outcome(compiled_payload, [(value,)], code) == pure


def test_the_daemon_runs_the_compiled_twin_unless_built_without_it() -> None:
    # scripts/venv and the Dockerfile build it: a silent fall back to Python would double
    # the CPU per odd of the COPYs without a failing test.
    assert pgcopy.COMPILED is not PURE_BUILD


def test_values_postgres_cannot_hold_are_refused_as_data_not_as_bugs() -> None:
    for code, value in [("f", 1e39), ("h", 40_000), ("q", 2**63), ("t", "\udc80")]:
        for encode in (pgcopy.pure_payload, compiled_payload):
            with pytest.raises(ValueError):
                encode([(value,)], code)
    for code, value in [("f", "-110"), ("T", datetime(2026, 1, 1)), ("b", 1), ("t", 5)]:
        for encode in (pgcopy.pure_payload, compiled_payload):
            with pytest.raises(TypeError):
                encode([(value,)], code)


def test_a_timestamp_is_microseconds_since_2000_in_utc() -> None:
    at = datetime(2026, 12, 3, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    data = compiled_payload([(at,)], "T")
    (micros,) = struct.unpack("!q", data[len(pgcopy.HEADER) + 2 + 4 : -2])
    assert datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros) == at


def test_a_type_without_an_encoder_is_named() -> None:
    with pytest.raises(ValueError, match="'numeric'"):
        pgcopy.codes(["bigint", "numeric"])


def test_a_stream_many_times_its_first_allocation_is_written_whole_or_refused_whole() -> None:
    # The compiled writer sizes its bytes object from the row count and grows it by doubling:
    # rows far longer than it expects pass through several growths, and a refusal after them
    # frees what was written (the same error as the pure module).
    rows = [(i, "x" * (i * 997 % 50_000), b"\x00" * (i % 7)) for i in range(400)]
    assert len(pgcopy.pure_payload(rows, "qty")) > 64 * (1 << 16)
    assert compiled_payload(rows, "qty") == pgcopy.pure_payload(rows, "qty")
    for encode in (pgcopy.pure_payload, compiled_payload):
        with pytest.raises(TypeError):
            encode([*rows, (1, 2, b"")], "qty")
