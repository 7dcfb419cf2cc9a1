"""The compiled decoder's scanner (``domain/_fast.pyx``) against the pure path: an odds event's
text, in every shape JSON allows and some it does not, gives the same rows (or the same refusal)
whether the scanner took it, left it to msgspec's path, or the pure path decoded it."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestor.domain import fast
from ingestor.domain.events import Kind
from ingestor.stream.sse import SSEParser
from tests.support.fakefeed import SEED_EVENTS

pytestmark = pytest.mark.skipif(
    os.environ.get("BUILD_PURE_PYTHON") == "1", reason="a build without the compiled twins"
)
NOW = datetime(2026, 12, 3, tzinfo=UTC)
ODDS_TYPES = {"copilot-odds": Kind.ODDS, "copilot-locked-odds": Kind.LOCKED}
ODDS_TYPES["copilot-settled-odds"] = Kind.SETTLED


def _scanned(data: bytes, event_id: str = "1-0") -> bool:
    from ingestor.domain import _fast

    return bool(_fast.scanned(data, event_id))


def _both(data: bytes, kind: Kind = Kind.ODDS, sse_id: str = "1-0") -> tuple[str, str]:
    got, want = (
        decode("g", "copilot", "copilot-odds", kind, data, sse_id, NOW)
        for decode in (fast.fast_odds, fast.pure_fast_odds)
    )
    return repr(got), repr(want)


VENDOR = orjson.loads(
    b'{"fixture_id": "D86AB59E8025", "game_id": "19370-30354-2024-10-23", "grouping_key":'
    b' "miami_heat:105.5", "id": "1:-1:D86AB59E8025:team_total:miami_heat_over_105_5",'
    b' "is_live": false, "is_main": true, "league": "NBA", "market": "Team Total", "name":'
    b' "Miami Heat Over 105.5", "odd_id": "D86AB59E8025:team_total:miami_heat_over_105_5",'
    b' "player_id": "", "points": 105.5, "price": -103, "selection": "Miami Heat",'
    b' "selection_line": "over", "sport": "basketball", "team_id": "26BB4DC5722F",'
    b' "timestamp": 1729646600, "version_id": -1}'
)


def _text(odd: dict[str, Any], head: bytes = b'"entry_id": "1682600339900-0", ') -> bytes:
    return b"{" + head + b'"data": [' + orjson.dumps(odd) + b'], "type": "copilot-odds"}'


def test_the_scanner_takes_the_vendors_own_events() -> None:
    events = [e for e in SSEParser().feed(SEED_EVENTS.read_bytes()) if e.event in ODDS_TYPES]
    assert events
    for e in events:
        assert _scanned(e.data, e.id), e.data[:80]


@pytest.mark.parametrize(
    "text",
    [
        _text(VENDOR),
        _text(VENDOR).replace(b", ", b",\n  ").replace(b": ", b" :\t"),  # white space
        _text({**VENDOR, "name": "Nikola Jokić Over 4.5"}),  # UTF-8
        _text({"deep_link": None, "limits": 5, "note": "x", **VENDOR}),  # unknown scalars
        _text(dict(reversed(VENDOR.items()))),  # every key out of the vendor's order
        _text({**VENDOR, "team_id": None, "points": 0.1, "price": 2.5}),
        _text(VENDOR, b'"entry_id": null, '),  # the SSE id stands in
    ],
)
def test_the_scanner_takes_the_shapes_it_is_sure_of(text: bytes) -> None:
    assert _scanned(text)
    got, want = _both(text)
    assert got == want != "None"


@pytest.mark.parametrize(
    "text",
    [
        _text({**VENDOR, "name": 'Miami "Heat"'}),  # an escape
        _text({**VENDOR, "points": 1e21}),  # an exponent
        _text({**VENDOR, "price": 12345678901234567}),  # past 2**53
        _text({**VENDOR, "deep_link": {"desktop": "x"}}),  # an unknown object
        _text(VENDOR).replace(b'"league":"NBA"', b'"league":"NBA","league":"WNBA"'),
        _text(VENDOR).replace(b'"data"', b'"entry_id": "1-1", "data"'),  # a second entry id
        b'{"data": [' + orjson.dumps(VENDOR) + b'], "entry_id": "1682600339900-0"}',
        _text(VENDOR) + b" x",  # junk after the event
        _text({**VENDOR, "id": ""}),  # an odd the careful path must judge
        _text(VENDOR, b'"entry_id": "99999999999999-0", '),  # a future entry id
    ],
)
def test_the_scanner_leaves_what_it_is_not_sure_of_to_msgspec(text: bytes) -> None:
    assert not _scanned(text)
    got, want = _both(text)
    assert got == want


# Raw JSON texts of a field's value: right and wrong types, edges of the number parse.
TEXTS = ['"NBA"', '""', '"Ünïcødé"', '"a\\"b"', '"tab\there"', '"\x7f"', "null", "1", "true"]
NUMBERS = ["105.5", "-103", "106", "-0", "-0.0", "0.1", "0.30000000000000004", "1e2", "1E400"]
NUMBERS += ["12345678901234567890", "9007199254740993", "9007199254740992", "01", "1.", "-"]
NUMBERS += ["2.50", "0.000001", "123456789012345678", "null", '"1.5"', "true", "0.3", "-110.7"]
NUMBERS += ["0.3333333333333333", "1.9100000000000001", "0.00000000000000001", "7.000000000000001"]
FLAGS = ["true", "false", "null", "1", '"true"', "tru"]
WHOLES = ["-1", "7", "-0", "1.0", "9223372036854775807", "123456789012345678", "null", "1e3"]
WHOLES += ["1234567890123456789", "-9223372036854775808", '"7"']
STAMPS = ["1729646600", "1729646525.801", "1796520467.0000005", "-5", "1e10", "null", '"x"']
SETTLED_AT = ['"2024-07-16T22:00:00+00:00"', '"2024-07-16T22:00:00"', '"nonsense"', '""']
UNKNOWN = ['"deep_link": null', '"limits": 5', '"x": {"a": 1}', '"x": [1]', '"x": "y"']


def _values(name: str) -> st.SearchStrategy[str]:
    if name in ("points", "price"):
        return st.sampled_from(NUMBERS) | st.floats(allow_nan=False).map(
            lambda f: orjson.dumps(f).decode()
        )
    if name == "timestamp":
        return st.sampled_from(STAMPS) | st.floats(0, 2e9).map(lambda f: repr(round(f, 3)))
    if name in ("is_main", "is_live"):
        return st.sampled_from(FLAGS)
    if name == "version_id":
        return st.sampled_from(WHOLES) | st.integers(-(2**64), 2**64).map(str)
    if name == "settled_at":
        return st.sampled_from(SETTLED_AT + TEXTS)
    if name == "id":
        return st.sampled_from(['"1:-1:a"', '"1:-1:b"', '"Ünï:d"', '""', "null", "5"])
    return st.sampled_from([*TEXTS, '"basketball"', '"Team Total"'])


@st.composite
def odds_texts(draw: st.DrawFn) -> str:
    """One odd: the vendor's keys (some left out, some shuffled), values of any shape."""
    names = [n for n in fast._Odd.__struct_fields__ if draw(st.integers(0, 9)) > 0]
    if draw(st.booleans()):
        names = draw(st.permutations(names))
    pairs = [f'"{n}":{draw(_values(n))}' for n in names]
    if draw(st.integers(0, 4)) == 0:
        pairs.insert(draw(st.integers(0, len(pairs))), draw(st.sampled_from(UNKNOWN)))
    if pairs and draw(st.integers(0, 9)) == 0:  # a duplicate key
        pairs.append(draw(st.sampled_from(pairs)))
    return "{" + draw(st.sampled_from([",", ", ", " ,\n "])).join(pairs) + "}"


entry_texts = st.sampled_from(
    ['"1700000000000-1"', '"1682600339900-0"', "null", '""', '"x"', '"1-0"', "5"]
)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(odds_texts(), min_size=0, max_size=4),
    st.none() | entry_texts,
    st.sampled_from(["entry first", "data first", "type between"]),
    st.sampled_from(["", " ", "\n", "\r\n\t "]),
    st.sampled_from(list(Kind)),
    st.sampled_from(["1-0", "", "1700000000000-1"]),
)
def test_the_scanner_gives_what_the_pure_path_gives_for_any_text(
    odds: list[str], entry: str | None, layout: str, space: str, kind: Kind, sse_id: str
) -> None:
    data = f'"data":{space}[{space}{(space + "," + space).join(odds)}{space}]'
    parts = [data] if entry is None else [f'"entry_id":{space}{entry}', data]
    if layout == "data first":
        parts.reverse()
    if layout == "type between":
        parts.insert(1, '"type": "copilot-odds"')
    text = (space + "{" + space + ("," + space).join(parts) + space + "}" + space).encode()
    got, want = _both(text, kind, sse_id)
    assert got == want


def test_a_value_repeated_from_the_last_odd_is_equal_and_a_changed_one_is_new() -> None:
    first, second = dict(VENDOR), {**VENDOR, "league": "WNBA", "id": "1:-1:other"}
    rows = []
    for odd in (first, second, first):
        event = fast.fast_odds("g", "copilot", "copilot-odds", Kind.ODDS, _text(odd), "1-0", NOW)
        assert event is not None
        rows.append(event.odds[0])
    assert [r.league for r in rows] == ["NBA", "WNBA", "NBA"]
    assert [r.id for r in rows] == [VENDOR["id"], "1:-1:other", VENDOR["id"]]
    assert rows[0].sport is rows[1].sport  # made once, then reused while equal


GOOD_TEXTS = st.sampled_from(['"NBA"', '""', '"Nikola Jokić"', '"Team Total"', '"\x7f~"', "null"])
GOOD = {
    "id": st.sampled_from(['"1:-1:a"', '"1:-1:Ünï:d"']),
    # Decimals with a few places: a parse that is not correctly rounded differs on them.
    "points": st.integers(-(10**6), 10**6).map(lambda q: f"{q / 100:.2f}") | st.just("null"),
    "price": st.integers(-(10**15), 10**15).map(str)
    | st.integers(101, 10**5).map(lambda q: f"{q / 1000}")
    | st.integers(1, 2**53).map(lambda q: f"0.{q:017d}")  # 17 places, below 2**53
    | st.just("-0.0"),
    "timestamp": st.integers(0, 2 * 10**12).map(lambda ms: f"{ms // 1000}.{ms % 1000:03d}"),
    "is_main": st.sampled_from(["true", "false", "null"]),
    "version_id": st.integers(-(10**17), 10**17).map(str),
    "settled_at": st.just('"2024-07-16T22:00:00+00:00"'),
}


@st.composite
def common_odds(draw: st.DrawFn) -> str:
    """An odd of the shape the scanner takes: plain strings, numbers without exponent."""
    names = draw(st.permutations(fast._Odd.__struct_fields__))
    names = [n for n in names if n == "id" or draw(st.integers(0, 5)) > 0]
    values = {n: GOOD.get(n, GOOD["is_main"] if n == "is_live" else GOOD_TEXTS) for n in names}
    pairs = [f'"{n}": {draw(values[n])}' for n in names]
    if draw(st.booleans()):
        pairs.append(draw(st.sampled_from(['"limits": null', '"rank": -2.5', '"x": "y"'])))
    return "{" + ", ".join(pairs) + "}"


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(common_odds(), min_size=1, max_size=5), st.sampled_from(list(Kind)))
def test_the_scanner_takes_every_event_of_the_common_shape_and_gives_the_pure_rows(
    odds: list[str], kind: Kind
) -> None:
    text = ('{"entry_id": "1700000000000-1", "data": [' + ", ".join(odds) + "]}").encode()
    assert _scanned(text)
    got, want = _both(text, kind)
    assert got == want != "None"
