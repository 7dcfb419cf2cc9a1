"""Decoding of the vendor's SSE payloads into rows (strict on types, lenient on extras)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from ingestor.domain.errors import DecodeError, EntryIdError
from ingestor.domain.events import (
    REPAIR_EVENT_ID,
    SNAPSHOT_EVENT_ID,
    DecodedEvent,
    FixtureRow,
    Kind,
    OddRow,
    order_key,
    parse_entry_id,
)
from ingestor.domain.fast import MAX_FUTURE_MS, fast_odds, utc_micros

ODDS_EVENTS: dict[str, Kind] = {
    "copilot-odds": Kind.ODDS,
    "odds": Kind.ODDS,
    "copilot-locked-odds": Kind.LOCKED,
    "locked-odds": Kind.LOCKED,
    "copilot-settled-odds": Kind.SETTLED,
}
FIXTURE_EVENT = "fixture-status"
CONTROL_EVENTS = frozenset({"connected", "ping"})
DATA_EVENTS = frozenset({*ODDS_EVENTS, FIXTURE_EVENT})


# Every reason a DecodeError (or the SSE size bound) can carry: metrics start them at zero.
REJECT_REASONS = (
    "invalid_json",
    "wrong_type",
    "missing_id",
    "nul_in_text",
    "bad_datetime",
    "bad_timestamp",
    "bad_entry_id",
    "missing_timestamp",
    "too_large",
)


def _text(obj: Mapping[str, Any], key: str, *, blank_is_null: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DecodeError("wrong_type", f"{key} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL; refusing here keeps one odd from failing a batch.
        raise DecodeError("nul_in_text", f"{key} contains a NUL character")
    if blank_is_null and not value:
        return None
    return value


def _number(obj: Mapping[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError("wrong_type", f"{key} must be a number, got {type(value).__name__}")
    return float(value)


def _flag(obj: Mapping[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise DecodeError("wrong_type", f"{key} must be a boolean, got {type(value).__name__}")


def _integer(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= 2**63:
        raise DecodeError("wrong_type", f"{key} must be a 64-bit integer")
    return value


def _when(obj: Mapping[str, Any], key: str) -> datetime | None:
    """ISO date-time; one without an offset is taken as UTC (the vendor omits it at times)."""
    value = _text(obj, key, blank_is_null=True)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        parsed.astimezone(UTC)  # year 1 with a positive offset has no UTC form
    except (ValueError, OverflowError):
        raise DecodeError(
            "bad_datetime", f"{key} is not an ISO date-time: {value[:40]!r}"
        ) from None
    if not 1900 <= parsed.year <= 2200:
        raise DecodeError("bad_datetime", f"{key} is out of range: {value[:40]!r}")
    return parsed


def _source_time(obj: Mapping[str, Any], entry_ms: int) -> tuple[datetime, int]:
    """The odd's ``timestamp`` (Unix seconds) as datetime and µs; the entry id's time if absent."""
    seconds = _number(obj, "timestamp")
    micros = entry_ms * 1000 if seconds is None else round(seconds * 1_000_000)
    if not 0 <= micros < 253_402_300_800_000_000:  # year 10000
        raise DecodeError("bad_timestamp", f"timestamp {seconds!r} is out of range")
    return utc_micros(micros), micros


def _payload(data: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("invalid_json", str(exc)) from None
    if not isinstance(payload, dict):
        raise DecodeError("wrong_type", "event data must be a JSON object")
    return payload


def _entry_id(payload: Mapping[str, Any], event_id: str) -> tuple[str, tuple[int, int]]:
    entry = _text(payload, "entry_id", blank_is_null=True) or event_id
    if not entry:
        raise DecodeError("missing_id", "event has neither entry_id nor an SSE id")
    try:
        parsed = parse_entry_id(entry)
    except EntryIdError as exc:
        raise DecodeError("bad_entry_id", str(exc)) from None
    # A cursor only moves forward: one id far in the future would pin the group for good.
    if parsed[0] > time.time() * 1000 + MAX_FUTURE_MS:
        raise DecodeError("bad_entry_id", f"entry_id {entry!r} is more than a day ahead")
    return entry, parsed


# Text fields of an odd, in OddRow's order; the second group stores "" as null.
_TEXTS = (
    "odd_id",
    "sportsbook",
    "fixture_id",
    "game_id",
    "sport",
    "league",
    "market",
    "name",
    "selection",
    "selection_line",
    "player_id",
    "team_id",
)
_BLANK_IS_NULL = frozenset({"sportsbook", "player_id", "team_id"})
_NUMBER = (float, int)


def _odd_texts(item: dict[str, Any]) -> list[str | None]:
    """The text fields at once: this runs for every odd, so the common case is one pass and
    the exact error comes from ``_text`` only when a value is not a clean string."""
    values = [item.get(key) for key in _TEXTS]
    for i, value in enumerate(values):
        if value is None:
            continue
        if value.__class__ is not str or "\x00" in value:
            _text(item, _TEXTS[i])  # raises the precise DecodeError
        if not value and _TEXTS[i] in _BLANK_IS_NULL:
            values[i] = None
    return values


def _price_fields(item: dict[str, Any]) -> tuple[float | None, float | None]:
    points, price = item.get("points"), item.get("price")
    # int covers American prices (-110); bool, also an int, has its own class and is refused.
    points = float(points) if points.__class__ in _NUMBER else _number(item, "points")
    price = float(price) if price.__class__ in _NUMBER else _number(item, "price")
    return points, price


def decode_odd(
    item: Any, kind: Kind, stream: str, entry_id: str | None, entry: tuple[int, int], event_id: str
) -> OddRow:
    """One element of an odds event's ``data`` array."""
    if not isinstance(item, dict):
        raise DecodeError("wrong_type", "each element of data must be an object")
    odd_uid = _text(item, "id", blank_is_null=True)
    if odd_uid is None:
        raise DecodeError("missing_id", "odd has no id")
    source_ts, micros = _source_time(item, entry[0])
    (
        odd_id,
        sportsbook,
        fixture_id,
        game_id,
        sport,
        league,
        market,
        name,
        selection,
        selection_line,
        player_id,
        team_id,
    ) = _odd_texts(item)
    points, price = _price_fields(item)
    settled = kind is Kind.SETTLED
    # Positional: this constructor runs for every odd, and keywords cost a third more.
    return OddRow(
        odd_uid,
        kind,
        stream,
        odd_id,
        sportsbook,
        fixture_id,
        game_id,
        sport,
        league,
        market,
        name,
        selection,
        selection_line,
        player_id,
        team_id,
        _integer(item, "version_id"),
        points,
        price,
        _flag(item, "is_main"),
        _flag(item, "is_live"),
        _text(item, "grouping_key"),
        _text(item, "settlement") if settled else None,
        _when(item, "settled_at") if settled else None,
        source_ts,
        entry_id,
        event_id,
        order_key(micros, entry, kind),
        # A settlement carries no price (the vendor omits it); it must not null a stored one.
        not settled,
    )


def decode_fixture(
    payload: Mapping[str, Any], entry_id: str, entry: tuple[int, int], event_id: str
) -> FixtureRow:
    """The body of a ``fixture-status`` event (``data``, or ``data.data`` in some specs)."""
    body = payload.get("data")
    if isinstance(body, dict) and "fixture_id" not in body and isinstance(body.get("data"), dict):
        body = body["data"]
    if not isinstance(body, dict):
        raise DecodeError("wrong_type", "fixture-status data must be an object")
    fixture = body.get("fixture") or {}
    if not isinstance(fixture, dict):
        raise DecodeError("wrong_type", "fixture must be an object")
    fixture_id = _text(body, "fixture_id", blank_is_null=True) or _text(fixture, "id")
    if not fixture_id:
        raise DecodeError("missing_id", "fixture-status has no fixture_id")
    source_ts, micros = _source_time(body, entry[0])
    new_start = _when(body, "new_start_date")
    return FixtureRow(
        fixture_id=fixture_id,
        game_id=_text(body, "game_id") or _text(fixture, "game_id"),
        sport=_text(body, "sport"),
        league=_text(body, "league"),
        home_team_display=_text(fixture, "home_team_display"),
        away_team_display=_text(fixture, "away_team_display"),
        start_date=new_start or _when(fixture, "start_date"),
        old_status=_text(body, "old_status"),
        new_status=_text(body, "new_status"),
        old_start_date=_when(body, "old_start_date"),
        new_start_date=new_start,
        source_ts=source_ts,
        entry_id=entry_id,
        event_id=event_id,
        order_key=order_key(micros, entry, 0),
    )


def decode_event(
    group_key: str, stream: str, event_type: str, data: bytes, event_id: str, received_at: datetime
) -> DecodedEvent:
    """Decode one data event (a type in ``DATA_EVENTS``) or raise ``DecodeError``."""
    kind = ODDS_EVENTS.get(event_type)
    if kind is not None:
        fast = fast_odds(group_key, stream, event_type, kind, data, event_id, received_at)
        if fast is not None:
            return fast
    return decode_event_carefully(group_key, stream, event_type, data, event_id, received_at)


def decode_event_carefully(
    group_key: str, stream: str, event_type: str, data: bytes, event_id: str, received_at: datetime
) -> DecodedEvent:
    """Field by field in Python: the exact reason for whatever is wrong, odd by odd."""
    payload = _payload(data)
    entry_id, entry = _entry_id(payload, event_id)
    event = DecodedEvent(group_key, event_type, entry_id, event_id, received_at, entry=entry)
    if event_type == FIXTURE_EVENT:
        event.fixtures.append(decode_fixture(payload, entry_id, entry, event_id))
        return event
    kind = ODDS_EVENTS[event_type]
    items = payload.get("data")
    if not isinstance(items, list):
        raise DecodeError("wrong_type", "odds event data must be an array")
    for item in items:
        # One malformed odd must not cost the hundreds of good ones beside it.
        try:
            event.odds.append(decode_odd(item, kind, stream, entry_id, entry, event_id))
        except DecodeError as exc:
            exc.payload = orjson.dumps(item) if isinstance(item, dict | list) else b""
            event.rejected.append(exc)
    if event.rejected and not event.odds:
        raise event.rejected[0]
    return event


def decode_snapshot_odd(item: Any, stream: str, at: datetime) -> OddRow:
    """An odd from a REST odds endpoint, ordered by its own timestamp below any streamed
    event of that time (entry 0-0; it has no entry id); a settled one carries its last price.

    A settled odd is ordered at the request time ``at`` instead: a settlement is final, and
    keyed at its own timestamp it could lose to the streamed update of the same millisecond,
    leaving ``status`` open beside a settlement."""
    if not isinstance(item, dict):
        raise DecodeError("wrong_type", "each odd must be an object")
    seconds = _number(item, "timestamp")
    if seconds is None:
        raise DecodeError("missing_timestamp", "snapshot odd has no timestamp")
    ms = int(seconds * 1000)
    kind = Kind.SETTLED if item.get("settlement") not in (None, "") else Kind.ODDS
    row = decode_odd(item, kind, stream, None, (0, 0), SNAPSHOT_EVENT_ID)
    row.carries_price = row.price is not None
    if kind is Kind.SETTLED:
        at_us = int(at.timestamp() * 1_000_000)
        row.order_key = order_key(max(at_us, ms * 1000), (0, 0), kind)
    return row


HISTORY_EVENTS: dict[str, Kind] = {
    "copilot-odds": Kind.ODDS,
    "copilot-locked-odds": Kind.LOCKED,
    "copilot-settled-odds": Kind.SETTLED,
}


def decode_history_entry(entry: Any, held: Mapping[str, Any]) -> OddRow:
    """One entry of the vendor's history of an odd (``/copilot/fixtures/odds/historical``):
    the change it records, as a row of the odd ``held`` (its stored ``odds`` row, by column).

    An entry has no entry id, points, grouping key or liveness: those come from the stored
    row (the vendor's id embeds the line, so points do not change for one id), and the row is
    ordered below any streamed event of its time (entry 0-0), like a snapshot row."""
    if not isinstance(entry, dict):
        raise DecodeError("wrong_type", "each history entry must be an object")
    kind = HISTORY_EVENTS.get(entry.get("event"))  # type: ignore[arg-type]
    if kind is None:
        raise DecodeError("wrong_type", f"history entry event {str(entry.get('event'))[:40]!r}")
    seconds = _number(entry, "timestamp")
    if seconds is None:
        raise DecodeError("missing_timestamp", "history entry has no timestamp")
    source_ts, micros = _source_time(entry, 0)
    settled = kind is Kind.SETTLED
    price = None if settled else _number(entry, "price")
    is_main = _flag(entry, "is_main")
    return OddRow(
        id=held["id"],
        kind=kind,
        stream=held["stream"],
        odd_id=held["odd_id"],
        sportsbook=held["sportsbook"],
        fixture_id=held["fixture_id"],
        game_id=held["game_id"],
        sport=held["sport"],
        league=held["league"],
        market=held["market"],
        name=held["name"],
        selection=held["selection"],
        selection_line=held["selection_line"],
        player_id=held["player_id"],
        team_id=held["team_id"],
        version_id=held["version_id"],
        points=held["points"],
        price=price,
        is_main=held["is_main"] if is_main is None else is_main,
        is_live=held["is_live"],
        grouping_key=held["grouping_key"],
        settlement=_text(entry, "settlement") if settled else None,
        settled_at=(held["settled_at"] or source_ts) if settled else None,
        source_ts=source_ts,
        entry_id=None,
        event_id=REPAIR_EVENT_ID,
        order_key=order_key(micros, (0, 0), kind),
        carries_price=not settled and price is not None,
    )


def inferred_lock(uid: str, stream: str, source_ts: datetime, stored_key: bytes) -> OddRow:
    """A lock for an odd the snapshot no longer returns (the vendor: not returned = suspended).

    It sits just above the stored state (same time and entry, the lock's rank), so it beats
    the open row it replaces while any later real event still beats it; and it carries no
    price, so the stored price stays."""
    return OddRow(
        id=uid,
        kind=Kind.LOCKED,
        stream=stream,
        odd_id=None,
        sportsbook=None,
        fixture_id=None,
        game_id=None,
        sport=None,
        league=None,
        market=None,
        name=None,
        selection=None,
        selection_line=None,
        player_id=None,
        team_id=None,
        version_id=None,
        points=None,
        price=None,
        is_main=None,
        is_live=None,
        grouping_key=None,
        settlement=None,
        settled_at=None,
        source_ts=source_ts,
        entry_id=None,
        event_id=SNAPSHOT_EVENT_ID,
        order_key=stored_key[:-1] + bytes([Kind.LOCKED]),
        carries_price=False,
    )


def snapshot_fixture(item: Any, at: datetime) -> FixtureRow:
    """A fixture from a REST listing, ordered at the time of the request."""
    if not isinstance(item, dict):
        raise DecodeError("wrong_type", "each fixture must be an object")
    fixture_id = _text(item, "id", blank_is_null=True)
    if fixture_id is None:
        raise DecodeError("missing_id", "fixture has no id")
    micros = int(at.timestamp() * 1_000_000)
    entry_id = f"{micros // 1000}-0"
    entry = (micros // 1000, 0)
    return FixtureRow(
        fixture_id=fixture_id,
        game_id=_text(item, "game_id"),
        sport=_name(item, "sport"),
        league=_name(item, "league"),
        home_team_display=_text(item, "home_team_display"),
        away_team_display=_text(item, "away_team_display"),
        start_date=_when(item, "start_date"),
        old_status=None,
        new_status=_text(item, "status"),
        old_start_date=None,
        new_start_date=None,
        source_ts=at,
        entry_id=entry_id,
        event_id=SNAPSHOT_EVENT_ID,
        order_key=order_key(micros, entry, 0),
    )


def _name(item: Mapping[str, Any], key: str) -> str | None:
    """``league``/``sport`` come as a name, or as an object with ``name`` (REST fixtures)."""
    value = item.get(key)
    if isinstance(value, dict):
        return _text(value, "name") or _text(value, "id")
    return _text(item, key)
