"""Decoding the vendor's payloads: strict on types and ranges, one bad odd costs only itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestor.domain import fast
from ingestor.domain.decode import DATA_EVENTS, ODDS_EVENTS, decode_event
from ingestor.domain.errors import DecodeError
from ingestor.domain.events import Kind
from ingestor.simulator.world import KEY_ORDER, as_sent
from ingestor.stream.sse import SSEParser
from tests.support.fakefeed import SEED_EVENTS, odd

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _decode(event_type: str, payload: object, event_id: str = "1-0") -> object:
    return decode_event("g", "copilot", event_type, orjson.dumps(payload), event_id, NOW)


def test_seed_page_events_decode() -> None:
    events = SSEParser().feed(SEED_EVENTS.read_bytes())
    assert [e.event for e in events] == [
        "connected",
        "ping",
        "copilot-odds",
        "copilot-locked-odds",
        "copilot-settled-odds",
        "fixture-status",
        "fixture-status",
    ]
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


async def test_one_bad_odd_costs_only_itself() -> None:
    payload = {"entry_id": "5-0", "data": [odd("good"), {"id": "bad", "price": "x"}]}
    ev = decode_event(
        "g", "copilot", "copilot-odds", orjson.dumps(payload), "5-0", datetime.now(UTC)
    )
    assert [o.id for o in ev.odds] == ["good"]
    assert [e.reason for e in ev.rejected] == ["wrong_type"]
    with pytest.raises(DecodeError):
        decode_event(
            "g",
            "copilot",
            "copilot-odds",
            orjson.dumps({"entry_id": "5-0", "data": [{"id": "bad", "price": "x"}]}),
            "5-0",
            datetime.now(UTC),
        )


@pytest.mark.parametrize(
    ("entry_id", "item"),
    [
        ("1--1", {}),
        ("1-99999999999999999999", {}),
        ("1-+5", {}),
        ("9223372036854775807-0", {}),  # would pin the cursor for ever
        ("1-0", {"settled_at": "0001-01-01T00:00:00+01:00", "settlement": "Won"}),
        ("1-0", {"settled_at": "9999-12-31T23:00:00-05:00", "settlement": "Won"}),
    ],
)
def test_out_of_range_ids_and_dates_are_rejected(entry_id: str, item: dict[str, Any]) -> None:
    payload = {"entry_id": entry_id, "data": [{**odd("x"), **item}]}
    with pytest.raises(DecodeError):
        decode_event(
            "g", "copilot", "copilot-settled-odds", orjson.dumps(payload), "", datetime.now(UTC)
        )


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
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "id",
                "price",
                "timestamp",
                "settled_at",
                "is_main",
                "league",
                "points",
                "version_id",
                "player_id",
            ]
        ),
        json_values,
        max_size=9,
    ),
    st.sampled_from(sorted(DATA_EVENTS)),
)
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


FIELDS = [
    "id",
    "odd_id",
    "sportsbook",
    "fixture_id",
    "league",
    "market",
    "name",
    "player_id",
    "team_id",
    "version_id",
    "points",
    "price",
    "is_main",
    "is_live",
    "grouping_key",
    "settlement",
    "settled_at",
    "timestamp",
]
ODDS_TYPES = ["copilot-odds", "copilot-locked-odds", "copilot-settled-odds", "odds"]


def _outcome(decode: Any, etype: str, payload: bytes) -> Any:
    try:
        ev = decode("g", "copilot", etype, payload, "7-2", NOW)
    except DecodeError as exc:
        return ("error", exc.reason)
    return (ev.entry_id, ev.odds, [(e.reason, e.payload) for e in ev.rejected])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {
                    "id": st.text(max_size=6),
                    "price": st.integers(-500, 500),
                    "timestamp": st.floats(0, 2e9, allow_nan=False),
                }
            ),
            st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8),
        ),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from(ODDS_TYPES),
    st.one_of(st.none(), st.sampled_from(["9-3", "", "x", "99999999999999999-0"])),
)
def test_the_fast_path_gives_what_the_careful_path_gives(
    items: list[Any], etype: str, entry: str | None
) -> None:
    """Any payload: the same rows, rejections and errors, whichever path decoded it."""
    from ingestor.domain.decode import decode_event_carefully

    body: dict[str, Any] = {"data": items}
    if entry is not None:
        body["entry_id"] = entry
    payload = orjson.dumps(body)
    assert _outcome(decode_event, etype, payload) == _outcome(
        decode_event_carefully, etype, payload
    )


def test_the_fast_path_takes_the_vendors_own_events() -> None:
    from ingestor.domain.decode import decode_event_carefully
    from ingestor.domain.events import Kind
    from ingestor.domain.fast import fast_odds
    from ingestor.stream.sse import SSEParser
    from tests.support.fakefeed import SEED_EVENTS

    events = [e for e in SSEParser().feed(SEED_EVENTS.read_bytes()) if "odds" in e.event]
    assert events
    for e in events:
        kind = {
            "copilot-odds": Kind.ODDS,
            "copilot-locked-odds": Kind.LOCKED,
            "copilot-settled-odds": Kind.SETTLED,
        }[e.event]
        fast = fast_odds("g", "copilot", e.event, kind, e.data, e.id, NOW)
        assert fast is not None, e.event
        careful = decode_event_carefully("g", "copilot", e.event, e.data, e.id, NOW)
        assert (fast.entry_id, fast.odds) == (careful.entry_id, careful.odds)


def test_the_decoder_expects_an_odds_keys_in_the_order_the_vendor_sends_them() -> None:
    # msgspec matches a key by trying the field after the last match first: fields in the
    # vendor's order cost one compare a key (domain/fast.py has the measurement).
    assert fast._Odd.__struct_fields__ == KEY_ORDER
    events = SSEParser().feed(SEED_EVENTS.read_bytes())
    sent = [list(o) for e in events if e.event in ODDS_EVENTS for o in orjson.loads(e.data)["data"]]
    assert len(sent) == 3  # the vendor page's odds, locked and settled samples
    for keys in sent:
        assert keys == sorted(keys, key=KEY_ORDER.index)
    assert [list(as_sent(dict.fromkeys(reversed(keys)))) for keys in sent] == sent
