"""Property tests (hypothesis): chunking, hostile bytes, and newest-wins for any event order."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestor.domain.decode import DATA_EVENTS, decode_event
from ingestor.domain.errors import DecodeError
from ingestor.stream.sse import EventTooLarge, SSEParser
from tests.fakefeed import SEED_EVENTS, odd
from tests.helpers import event, write_batches

SAMPLE = SEED_EVENTS.read_bytes()
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _parse(chunks: list[bytes], limit: int = 1 << 20) -> list[tuple[str, bytes, str]]:
    parser = SSEParser(limit)
    out = []
    for chunk in chunks:
        try:
            events = parser.feed(chunk)
        except EventTooLarge as exc:
            events = exc.events
        out += [(e.event, e.data, e.id) for e in events]
    return out


@given(st.lists(st.integers(min_value=0, max_value=len(SAMPLE)), max_size=12), st.booleans())
def test_any_chunking_gives_the_same_events(cuts: list[int], crlf: bool) -> None:
    stream = SAMPLE.replace(b"\n", b"\r\n") if crlf else SAMPLE
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert _parse(chunks) == _parse([stream])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=8), st.sampled_from(sorted(DATA_EVENTS)))
def test_no_bytes_make_parser_or_decoder_raise_unhandled(chunks: list[bytes], etype: str) -> None:
    for name, data, eid in _parse(chunks, limit=256):
        assert isinstance(name, str) and isinstance(data, bytes) and isinstance(eid, str)
    for blob in chunks:
        with contextlib.suppress(DecodeError):
            decode_event("g", "copilot", etype, blob, "1-0", NOW)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["id", "price", "timestamp", "settled_at", "is_main",
                                        "league", "points", "version_id", "player_id"]),
                       json_values, max_size=9), st.sampled_from(sorted(DATA_EVENTS)))  # fmt: skip
def test_odd_shaped_garbage_is_a_decode_error_or_a_row(item: dict[str, Any], etype: str) -> None:
    payload = orjson.dumps(
        {"entry_id": "5-1", "data": [item] if etype != "fixture-status" else item}
    )
    try:
        decoded = decode_event("g", "copilot", etype, payload, "5-1", NOW)
    except DecodeError:
        return
    for row in decoded.odds:
        assert isinstance(row.id, str) and row.order_key


KINDS = ["copilot-odds", "copilot-locked-odds", "copilot-settled-odds"]
events_for_one_odd = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(1, 5), st.integers(0, 3),
              st.integers(-300, 300)),
    min_size=1, max_size=8,
)  # fmt: skip


def _truth(seq: list[tuple[str, int, int, int]]) -> tuple[str, float | None, str | None]:
    """Status from the newest event; price from the newest priced; settlement likewise."""
    rank = {k: i for i, k in enumerate(KINDS)}
    key = lambda e: (e[1], e[2], rank[e[0]])  # noqa: E731
    newest = max(seq, key=key)
    priced = [e for e in seq if e[0] != "copilot-settled-odds"]
    settled = [e for e in seq if e[0] == "copilot-settled-odds"]
    status = {"copilot-odds": "open", "copilot-locked-odds": "locked"}.get(newest[0], "settled")
    price = float(max(priced, key=key)[3]) if priced else None
    settlement = f"S{max(settled, key=key)[3]}" if settled else None
    return status, price, settlement


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(seq=events_for_one_odd, split=st.integers(0, 8))
def test_any_order_of_events_for_one_odd_ends_newest(
    database_url: str, seq: list[tuple[str, int, int, int]], split: int
) -> None:
    def build(e: tuple[str, int, int, int]) -> Any:
        etype, ts, seq_no, value = e
        item = odd("x", ts=ts, price=value)
        if etype == "copilot-settled-odds":
            for k in ("price", "points", "is_main", "is_live", "grouping_key"):
                item.pop(k)
            item.update(settlement=f"S{value}", settled_at="2024-01-01T00:00:00+00:00")
        return event(etype, f"{ts}000-{seq_no}", [item])

    async def run() -> tuple[str, float | None, str | None]:
        import asyncpg

        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("TRUNCATE odds, odds_history, stream_cursors")
            evs = [build(e) for e in seq]
            await write_batches(database_url, *[b for b in (evs[:split], evs[split:]) if b])
            row = await conn.fetchrow("SELECT status, price, settlement FROM odds WHERE id='x'")
        finally:
            await conn.close()
        return row["status"], row["price"], row["settlement"]

    # Equal keys are one event told twice; keep the first such event so the truth is defined.
    unique: dict[tuple[str, int, int], tuple[str, int, int, int]] = {}
    for e in seq:
        unique.setdefault((e[0], e[1], e[2]), e)
    seq = list(unique.values())
    assert asyncio.run(run()) == _truth(seq)
