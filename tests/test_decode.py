"""Decoding the vendor's payloads: the seed page's examples, and strictness on types."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from ingestor.domain.decode import decode_event
from ingestor.domain.errors import DecodeError
from ingestor.domain.events import Kind
from ingestor.stream.sse import SSEParser
from tests.fakefeed import SEED_EVENTS, odd

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _decode(event_type: str, payload: object, event_id: str = "1-0") -> object:
    return decode_event("g", "copilot", event_type, orjson.dumps(payload), event_id, NOW)


def test_seed_page_events_decode() -> None:
    events = SSEParser().feed(SEED_EVENTS.read_bytes())
    assert [e.event for e in events] == [
        "connected", "ping", "copilot-odds", "copilot-locked-odds", "copilot-settled-odds",
        "fixture-status", "fixture-status",
    ]  # fmt: skip
    odds, locked, settled, moved, status = (
        decode_event("g", "copilot", e.event, e.data, e.id, NOW) for e in events[2:]
    )
    (o,) = odds.odds
    assert (o.kind, o.price, o.points, o.is_main, o.player_id) == (
        Kind.ODDS,
        -196,
        104.5,
        False,
        None,
    )
    assert odds.entry_id == "1678113258940-2" and odds.event_id == "1730079534820-2"
    assert o.source_ts == datetime.fromtimestamp(1729646525, UTC)
    (s,) = settled.odds
    assert (s.kind, s.price, s.settlement) == (Kind.SETTLED, None, "Won")
    assert s.order_key > locked.odds[0].order_key  # same time and entry: settlement wins
    (f,) = moved.fixtures
    assert f.new_start_date == datetime(2024, 8, 28, 20, 30, tzinfo=UTC) and f.new_status is None
    assert status.fixtures[0].new_status == "cancelled"
    assert status.entry_id == "1724761586216-0"


def test_nested_fixture_status_payload() -> None:
    body = {"fixture_id": "F", "new_status": "live", "timestamp": 5}
    ev = _decode("fixture-status", {"entry_id": "5-0", "data": {"data": body}})
    assert ev.fixtures[0].new_status == "live"  # type: ignore[attr-defined]


def test_unknown_fields_are_ignored_and_timestamp_may_be_missing() -> None:
    ev = _decode("copilot-odds", {"entry_id": "7000-1", "data": [{"id": "x", "surprise": [1]}]})
    (row,) = ev.odds  # type: ignore[attr-defined]
    assert row.source_ts == datetime.fromtimestamp(7, UTC)  # the entry id's milliseconds


def test_naive_settled_at_is_utc() -> None:
    item = odd("x", settlement="Half Won", settled_at="2024-07-16T22:00:00")
    (row,) = _decode("copilot-settled-odds", {"entry_id": "1-0", "data": [item]}).odds  # type: ignore[attr-defined]
    assert row.settled_at == datetime(2024, 7, 16, 22, tzinfo=UTC)


@pytest.mark.parametrize(
    ("payload", "reason", "names"),
    [
        (b"{not json", "invalid_json", ""),
        (b"[1]", "wrong_type", "JSON object"),
        ({"entry_id": "1-0", "data": {"id": "x"}}, "wrong_type", "array"),
        ({"entry_id": "1-0", "data": [{"price": -110}]}, "missing_id", "odd has no id"),
        ({"entry_id": "1-0", "data": [{"id": "x", "price": "-110"}]}, "wrong_type", "price"),
        ({"entry_id": "1-0", "data": [{"id": "x", "is_main": 1}]}, "wrong_type", "is_main"),
        (
            {"entry_id": "1-0", "data": [{"id": "x", "league": "N\u0000BA"}]},
            "nul_in_text",
            "league",
        ),
        ({"entry_id": "abc", "data": [{"id": "x"}]}, "bad_entry_id", "abc"),
        ({"entry_id": "1-0", "data": [{"id": "x", "timestamp": 1e20}]}, "bad_timestamp", ""),
        ({"data": [{"id": "x"}]}, "missing_id", "entry_id"),
    ],
)
def test_bad_payloads_raise_a_labelled_error(payload: object, reason: str, names: str) -> None:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    with pytest.raises(DecodeError) as err:
        decode_event("g", "copilot", "copilot-odds", data, "", NOW)
    assert err.value.reason == reason
    assert names in str(err.value)
