"""The compiled twins of the write path against their pure-Python references, on generated
batches: the same rows, records, stubs and encodings (the property the fallback rests on).
``test_pgcopy.py`` does the same for the COPY encoder."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestor.domain import events, fast
from ingestor.domain.events import DecodedEvent, Kind, OddRow, PyOddRow, order_key
from ingestor.storage.write import batch, history
from ingestor.storage.write.state import HistoryContext
from ingestor.storage.write.statements import CHANGES, ODDS
from ingestor.stream import sse

PURE_BUILD = os.environ.get("BUILD_PURE_PYTHON") == "1"
if PURE_BUILD:  # pragma: no cover - a build without a C compiler (setup.py)
    compiled_key = history.odd_key
else:
    from ingestor.domain._rows import md5_key as compiled_key
FIELDS = list(PyOddRow.__dataclass_fields__)


def test_the_daemon_runs_every_compiled_twin_unless_built_without_them() -> None:
    twins = {events.ROWS_COMPILED, fast.COMPILED, batch.COMPILED, history.COMPILED, sse.COMPILED}
    assert twins == {not PURE_BUILD}


texts = st.none() | st.sampled_from(["", "NBA", "DraftKings", "Ünïcødé"])
prices = (
    st.none()
    | st.sampled_from([-110.0, 2.5, 1 / 3, 1e39, 0.1, float("nan"), 2.0**20 - 0.25, 2.0**20])
    | st.floats()
    | st.integers(-(2**23), 2**23).map(lambda q: q / 4)  # the compiled twin's C path and past it
)
moments = st.integers(0, 10**6).map(lambda s: datetime(2026, 1, 1, tzinfo=UTC) + timedelta(s))
moments |= st.integers(0, 10**6).map(  # another zone: the compiled twins' Python paths
    lambda s: datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2))) + timedelta(s)
)


@st.composite
def rows(draw: st.DrawFn) -> list[Any]:
    """The constructor's arguments of one odd, drawn from a small world of ids and fixtures."""
    kind = draw(st.sampled_from(list(Kind)))
    micros = draw(st.integers(0, 2**40))
    entry = (draw(st.integers(0, 2**40)), draw(st.integers(0, 5)))
    return [
        draw(st.sampled_from(["a", "b", "c", "Ünï:d"])),
        kind,
        draw(st.sampled_from(["copilot", "odds"])),
        *(draw(texts) for _ in range(3)),  # odd_id, sportsbook, fixture_id
        *(draw(texts) for _ in range(9)),  # game_id ... team_id
        draw(st.none() | st.integers(-(2**63), 2**63 - 1)),
        draw(prices),
        draw(prices),
        draw(st.none() | st.booleans()),
        draw(st.none() | st.booleans()),
        draw(texts),
        draw(st.none() | st.sampled_from(["won", "lost", "void"])),
        draw(st.none() | moments),
        draw(moments),
        draw(st.none() | st.just(f"{entry[0]}-{entry[1]}")),
        draw(st.sampled_from(["1-0", "snapshot", "repair"])),
        order_key(micros, entry, kind),
        draw(st.booleans()),
    ]


def _outcome(encode: Callable[[], bytes]) -> bytes | type[Exception]:
    """The COPY bytes, or the class of the error (a value the column refuses: the twins must
    refuse it with the same class)."""
    try:
        return encode()
    except (TypeError, ValueError) as exc:
        return type(exc)


def _event(odds: list[OddRow]) -> DecodedEvent:
    return DecodedEvent("g", "copilot-odds", "1-0", "1-0", datetime.now(UTC), odds=odds)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rows(), max_size=6))
def test_the_compiled_row_is_the_dataclass_in_all_but_speed(args: list[list[Any]]) -> None:
    for a in args:
        twin, ref = OddRow(*a), PyOddRow(*a)
        assert [getattr(twin, f) for f in FIELDS] == [getattr(ref, f) for f in FIELDS]
        assert repr(twin).partition("(")[2] == repr(ref).partition("(")[2]
        assert twin == OddRow(**dict(zip(FIELDS, a, strict=True)))
        assert (twin == OddRow(*a)) == (ref == PyOddRow(*a))  # NaN prices are unequal in both
        with pytest.raises(AttributeError):
            twin.nonsense = 1  # type: ignore[attr-defined]
        with pytest.raises(TypeError):
            hash(twin)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(rows(), min_size=1, max_size=5), max_size=6))
def test_the_compiled_collapse_gives_the_pure_states_stubs_copy_bytes_and_lags(
    evs: list[list[list[Any]]],
) -> None:
    batch_events = [_event([OddRow(*a) for a in odds]) for odds in evs]
    (newest, stubs), (pure_newest, pure_stubs) = (
        batch.collapse(batch_events),
        batch.pure_collapse(batch_events),
    )
    assert stubs == pure_stubs
    now = datetime(2026, 1, 20, tzinfo=UTC)
    bounds = [*(2.0**k for k in range(-3, 22, 2)), math.inf]
    (lags, lag_total), (pure_lags, pure_total) = (
        batch.lag_counts(batch_events, now, bounds),
        batch.pure_lag_counts(batch_events, now, bounds),
    )
    assert lags == pure_lags and lag_total == pytest.approx(pure_total, rel=1e-12)
    assert batch.current_records(newest) == batch.current_records(pure_newest)
    want = _outcome(lambda: batch.pure_current_payload(pure_newest, ODDS.codes))
    got = _outcome(lambda: batch.current_payload(newest, ODDS.codes))
    assert got == want


def test_the_compiled_odd_key_holds_at_every_length_md5_pads_differently() -> None:
    for n in range(300):  # one and two padding blocks, and several blocks before them
        for uid in ("k" * n, ("ü" * n)[: n // 2 + 1]):
            assert compiled_key(uid) == history.odd_key(uid), (n, uid)


@settings(max_examples=500)
@given(st.text(max_size=200) | st.binary(max_size=130).map(lambda b: b.decode("latin-1")))
def test_the_compiled_odd_key_is_md5_as_hashlib_computes_it(uid: str) -> None:
    def outcome(f: Any) -> int | str:
        try:
            return int(f(uid))
        except UnicodeEncodeError as exc:  # a lone surrogate: no UTF-8 form in either
            return type(exc).__name__

    assert outcome(compiled_key) == outcome(history.odd_key)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(rows(), min_size=1, max_size=8),
    st.integers(0, 2**55) | st.integers(2**58 - 2, 2**62),  # the C path of ev, and past it
    st.none()
    | st.tuples(st.integers(0, 2**62), st.none() | st.just("x-y"), st.sampled_from([0, 3, 4])),
    st.dictionaries(st.sampled_from(["won", "lost"]), st.integers(1, 9)),
)
def test_the_compiled_history_records_are_the_pure_ones(
    args: list[list[Any]],
    event: int,
    staged: tuple[int, str | None, int] | None,
    settlements: dict[str, int],
) -> None:
    odds = [OddRow(*a) for a in args]
    got: tuple[list[Any], list[tuple[list[Any], str]]] = ([], [])
    want: tuple[list[Any], list[tuple[list[Any], str]]] = ([], [])
    history.records(odds, event, settlements, staged, *got)
    history.pure_records(odds, event, settlements, staged, *want)
    assert repr(got) == repr(want)  # repr: NaN prices compare unequal to themselves
    assert [type(r) for r in got[0]] == [type(r) for r in want[0]]
    # An unsettled record is the very row appended: the flush fills its code in there.
    appended = {id(r) for r in got[0]}
    assert all(id(record) in appended for record, _ in got[1])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**55) | st.integers(2**58 - 2, 2**59),  # ev in C, and past it
            st.lists(rows(), min_size=1, max_size=5),
        ),
        max_size=5,
    ),
    st.integers(1, 2**15 - 1) | st.integers(2**15, 2**16),  # a code past smallint: refused
)
def test_the_compiled_history_copy_of_the_rows_that_go_straight_in_is_the_pure_one(
    changes: list[tuple[int, list[list[Any]]]], code: int
) -> None:
    h = history.HistoryBatch(3)
    h.changes = [(event, [OddRow(*a) for a in odds]) for event, odds in changes]
    h.codes = {"won": 1, "lost": code, "void": 3}
    want = _outcome(lambda: history.pure_changes_payload(h, CHANGES.codes))
    got = _outcome(lambda: history.changes_payload(h, CHANGES.codes))
    assert got == want


def test_a_row_that_goes_straight_in_without_its_settlement_code_is_refused_by_both() -> None:
    # The flush fills in every text's code first: a missing one is its bug, named.
    at = datetime(2026, 1, 1, tzinfo=UTC)
    args: list[Any] = ["a", Kind.SETTLED, "copilot", *[None] * 13, 2.5, -110.0, None, None]
    args += [None, "void", at, at, "1-0", "1-0", order_key(0, (1, 0), Kind.SETTLED)]
    row = OddRow(*args)
    h = history.HistoryBatch(3)
    h.changes = [(1, [row])]
    h.codes = {"won": 1}
    for payload in (history.pure_changes_payload, history.changes_payload):
        with pytest.raises(KeyError, match="void"):
            payload(h, CHANGES.codes)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(rows(), st.sampled_from(["b", "Ünï:e", "x" * 70]))
def test_a_row_keyed_once_is_keyed_again_when_its_id_changes(args: list[Any], new: str) -> None:
    # The compiled row keeps its odd key after the first use (history and current state
    # both need it): a row whose id changed since must not write the old id's key.
    row = OddRow(*args)
    made: list[Any] = []
    history.records([row], 1, {}, None, made, [])
    assert made[0][0] == history.odd_key(row.id)
    row.id = new
    newest, _ = batch.collapse([_event([row])])
    got = _outcome(lambda: batch.current_payload(newest, ODDS.codes))
    pure_newest, _ = batch.pure_collapse([_event([PyOddRow(*[new, *args[1:]])])])
    want = _outcome(lambda: batch.pure_current_payload(pure_newest, ODDS.codes))
    assert got == want
    again: list[Any] = []
    history.records([row], 1, {}, None, again, [])
    assert again[0][0] == history.odd_key(new)


odd_values = {
    "id": st.sampled_from(["", "a", "Ünï:d"]),
    "sportsbook": texts,
    "player_id": texts,
    "price": prices,
    "is_main": st.none() | st.booleans(),
    "settlement": texts,
    "settled_at": st.none()
    | st.sampled_from(["", "2026-01-01T00:00:00", "nonsense", "0001-01-01"]),
    # Around the C path's bounds (2**53 µs), halves of a µs (rounded to even), negatives.
    "timestamp": st.none()
    | st.floats(-10, 2e10, allow_nan=False)
    | st.sampled_from([0.0000005, 0.0000015, 1_700_000_000.0000025, 8.99e9, 9.01e9, 1e300]),
}


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.fixed_dictionaries({}, optional=odd_values), min_size=1, max_size=6),
    st.sampled_from(list(Kind)),
    st.tuples(st.integers(0, 2**43), st.integers(0, 9)),
)
def test_the_compiled_decoder_rows_are_the_pure_ones(
    odds: list[dict[str, Any]], kind: Kind, entry: tuple[int, int]
) -> None:
    payload = fast._DECODER.decode(orjson.dumps({"data": odds}))
    outcomes = []
    for fill in (fast.rows, fast.pure_rows):
        event = _event([])
        outcomes.append((fill(payload.data, event, kind, "copilot", entry), repr(event.odds)))
    assert outcomes[0] == outcomes[1]


def test_the_compiled_decoder_reads_each_field_of_an_odd_from_its_own_slot() -> None:
    texts = [f for f, t in fast._Odd.__annotations__.items() if t == "str | None"]
    odd: dict[str, Any] = {f: f"{f}-value" for f in texts}
    odd |= {"version_id": 7, "points": 1.5, "price": -110.0, "is_main": True, "is_live": False}
    odd |= {"timestamp": 1_700_000_000.25, "settled_at": "2026-01-01T00:00:00+00:00"}
    payload = fast._DECODER.decode(orjson.dumps({"data": [odd]}))
    for kind in Kind:
        got, want = _event([]), _event([])
        assert fast.rows(payload.data, got, kind, "copilot", (1, 0))
        assert fast.pure_rows(payload.data, want, kind, "copilot", (1, 0))
        assert repr(got.odds) == repr(want.odds)
    if not PURE_BUILD:  # the slots are read directly, not through getattr
        from ingestor.domain import _fast

        assert _fast.READS_SLOTS


def test_the_compiled_decoder_makes_each_event_as_its_constructor_does() -> None:
    odd = {"id": "o1", "price": -110.0, "timestamp": 1_700_000_000.25}
    data = orjson.dumps({"entry_id": "1700000000000-1", "data": [odd]})
    now = datetime(2026, 12, 3, tzinfo=UTC)
    first, second, want = (
        decode("g", "copilot", "copilot-odds", Kind.ODDS, data, "1-0", now)
        for decode in (fast.fast_odds, fast.fast_odds, fast.pure_fast_odds)
    )
    assert first is not None and second is not None and want is not None
    assert repr(first) == repr(want) and first.gaps == () and first.epoch == 0
    # Every event has lists of its own: one filled later never fills another.
    for name in ("odds", "fixtures", "rejected", "dead_letters"):
        assert getattr(first, name) is not getattr(second, name), name
    if not PURE_BUILD:  # its slots are written in C, not through the dataclass's __init__
        from ingestor.domain import _fast

        assert _fast.MAKES_EVENTS


# Escapes the NUL check must find (or pass over) wherever they sit in the event's text.
escapes = st.sampled_from(["", "\\u0000", "\\\\u0000", "\\n", "\\u00001", "\\"])
# Plain ones, the C parse's limits (18 digits a part) and past them, and what is no id.
odd_entry_ids = st.none() | st.sampled_from(
    [
        *("", "1-0", "1700000000000-3", "01-2", "5", "5-", "-5", "5--1", "٣-1", "1-0\x00"),
        *("123456789012345678-123456789012345678", "1" * 19 + "-0", "1-9223372036854775808"),
    ]
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.fixed_dictionaries({}, optional=odd_values), max_size=4),
    odd_entry_ids,
    st.sampled_from(["1-0", "", "1700000000000-1", "x"]),
    st.sampled_from(list(Kind)),
    escapes,
)
def test_the_compiled_fast_path_decodes_an_event_as_the_pure_one(
    odds: list[dict[str, Any]], entry_id: str | None, sse_id: str, kind: Kind, escape: str
) -> None:
    body: dict[str, Any] = {"data": odds, "note": escape}
    if entry_id is not None:
        body["entry_id"] = entry_id
    data = orjson.dumps(body).replace(b'"note":"', b'"note":"' + escape.encode())
    now = datetime(2026, 12, 3, tzinfo=UTC)
    got, want = (
        decode("g", "copilot", "copilot-odds", kind, data, sse_id, now)
        for decode in (fast.fast_odds, fast.pure_fast_odds)
    )
    assert repr(got) == repr(want)


# Canonical, at and past the packed limits, leading zeros, not digits, a lone surrogate.
entry_ids = st.sampled_from(
    [
        *("1-0", "1700000000000-3", "0-0", "01-2", "5-07", "9999999999999-1"),
        *("8796093022207-1048575", "8796093022208-0", "5-1048576", "123456789012345678901-1"),
        *("x-1", "5", "5-", "-5", "5-1-2", "٣-1", "\udc80-1", ""),
    ]
)
received = st.sampled_from(
    [
        datetime(2026, 12, 3, 14, 0, 0, 1, tzinfo=UTC),
        datetime(2019, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2026, 12, 3, 16, 0, tzinfo=timezone(timedelta(hours=2))),
    ]
)


@st.composite
def history_events(draw: st.DrawFn) -> DecodedEvent:
    entry = draw(entry_ids)
    sse_id = draw(st.sampled_from([entry, "", "1-0", "07-1", "snapshot"]))
    event_id = draw(st.sampled_from([sse_id, sse_id, "snapshot", "repair"]))
    kind = draw(st.sampled_from(list(Kind)))
    odds = []
    for a in draw(st.lists(rows(), max_size=4)):
        a[1] = kind if event_id not in ("snapshot", "repair") else a[1]
        odds.append(OddRow(*a))
    group = draw(st.sampled_from(["g1", "g2"]))
    return DecodedEvent(group, "copilot-odds", entry, event_id, draw(received), odds=odds)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(history_events(), max_size=8),
    st.booleans(),
    st.dictionaries(st.sampled_from([1, 2]), st.integers(-1, 2**63 - 1)),
    st.sampled_from([frozenset(), frozenset({2})]),
    st.dictionaries(
        st.sampled_from(["a", "b", "Ünï:d"]),
        st.tuples(st.sampled_from([0.0, 50.0, 200.0]), moments),
    ),
    st.integers(0, 2**52),
)
def test_the_compiled_history_encoding_is_the_pure_one(
    evs: list[DecodedEvent],
    check_all: bool,
    marks: dict[int, int],
    checked: frozenset[int],
    from_rest: dict[str, tuple[float, datetime]],
    last_us: int,
) -> None:
    newest = max((t for _, t in from_rest.values()), default=None)
    encoded = []
    for bound in (None, newest):  # the newest time known, or not: the same rows either way
        ctx = HistoryContext(
            3,
            MappingProxyType({"g1": 1, "g2": 2}),
            MappingProxyType({"won": 1}),
            MappingProxyType(marks),
            checked,
            last_us,
            MappingProxyType(from_rest),
            100.0,
            bound,
        )
        got, want = history.HistoryBatch(3, last_us), history.HistoryBatch(3, last_us)
        history.encode_into(ctx, evs, check_all, got)
        history.pure_encode_into(ctx, evs, check_all, want)
        assert repr(got) == repr(want)
        encoded.append(repr(got))
    assert encoded[0] == encoded[1]
