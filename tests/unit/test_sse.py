"""The SSE parser against the WHATWG rules: every split, every line ending, every limit."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestor.domain.decode import DATA_EVENTS, decode_event
from ingestor.domain.errors import DecodeError
from ingestor.stream import sse
from ingestor.stream.sse import EventTooLarge, SSEError, SSEEvent, SSEParser

BOM = b"\xef\xbb\xbf"
SCANNER = sse.feed_lines  # the compiled one, but in a build without its C twins


@pytest.fixture(autouse=True, params=["compiled", "pure"])
def line_scanner(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs against the compiled line scanner and its pure-Python reference."""
    saved = sse.feed_lines
    sse.feed_lines = saved if request.param == "compiled" else sse.pure_feed_lines
    yield str(request.param)
    sse.feed_lines = saved


SAMPLE = (
    b"event: connected\n"
    b"retry: 5000\n"
    b"data: ok go\n"
    b"\n"
    b"event: ping\n"
    b"retry: 5000\n"
    b"data: 2024-08-28T18:57:49Z\n"
    b"\n"
    b"event: copilot-odds\n"
    b"id: 1730079534820-2\n"
    b"retry: 5000\n"
    b'data: { "entry_id": "1678113258940-2", "data": [ { "fixture_id": "4825158B6424", '
    b'"id": "1:-1:4825158B6424:1st_half_total_points:over_104_5", "price": -196, '
    b'"timestamp": 1729646525 } ], "type": "copilot-odds" }\n'
    b"\n"
    b"event: copilot-locked-odds\n"
    b"id: 1730079527180-0\n"
    b"retry: 5000\n"
    b'data: { "entry_id": "1682600339900-0", "data": [ { "id": '
    b'"1:-1:D86AB59E8025:team_total:miami_heat_over_105_5", "price": -103 } ], '
    b'"type": "copilot-locked-odds" }\n'
    b"\n"
)


SAMPLE_EVENTS = [
    SSEEvent("connected", b"ok go", ""),
    SSEEvent("ping", b"2024-08-28T18:57:49Z", ""),
    SSEEvent(
        "copilot-odds",
        b'{ "entry_id": "1678113258940-2", "data": [ { "fixture_id": "4825158B6424", '
        b'"id": "1:-1:4825158B6424:1st_half_total_points:over_104_5", "price": -196, '
        b'"timestamp": 1729646525 } ], "type": "copilot-odds" }',
        "1730079534820-2",
    ),
    SSEEvent(
        "copilot-locked-odds",
        b'{ "entry_id": "1682600339900-0", "data": [ { "id": '
        b'"1:-1:D86AB59E8025:team_total:miami_heat_over_105_5", "price": -103 } ], '
        b'"type": "copilot-locked-odds" }',
        "1730079527180-0",
    ),
]


def parse(*chunks: bytes, max_event_bytes: int = 16 * 1024 * 1024) -> list[SSEEvent]:
    """Feed chunks to a fresh parser and return all events (no size errors expected)."""
    parser = SSEParser(max_event_bytes)
    return [ev for chunk in chunks for ev in parser.feed(chunk)]


def feed_collect(parser: SSEParser, chunks: Iterable[bytes]) -> tuple[list[SSEEvent], int]:
    """Feed chunks, collecting events also from EventTooLarge; return (events, n_errors)."""
    events: list[SSEEvent] = []
    errors = 0
    for chunk in chunks:
        try:
            events.extend(parser.feed(chunk))
        except EventTooLarge as exc:
            errors += 1
            events.extend(exc.events)
    return events, errors


def msg(data: bytes, event: str = "message", id: str = "") -> SSEEvent:
    return SSEEvent(event, data, id)


def test_sample_whole() -> None:
    parser = SSEParser()
    assert parser.retry_ms is None
    assert parser.feed(SAMPLE) == SAMPLE_EVENTS
    assert parser.retry_ms == 5000
    assert parser.last_event_id == "1730079527180-0"


def test_sample_every_two_way_split() -> None:
    for i in range(len(SAMPLE) + 1):
        assert parse(SAMPLE[:i], SAMPLE[i:]) == SAMPLE_EVENTS, i


def test_sample_byte_by_byte() -> None:
    assert parse(*(SAMPLE[i : i + 1] for i in range(len(SAMPLE)))) == SAMPLE_EVENTS


def test_sample_three_way_splits() -> None:
    n = len(SAMPLE)
    for i in range(0, n + 1, 7):
        for j in range(i, n + 1, 11):
            assert parse(SAMPLE[:i], SAMPLE[i:j], SAMPLE[j:]) == SAMPLE_EVENTS, (i, j)


@pytest.mark.parametrize("eol", [b"\r", b"\r\n"])
def test_sample_other_line_endings_every_split(eol: bytes) -> None:
    stream = BOM + SAMPLE.replace(b"\n", eol)
    assert parse(stream) == SAMPLE_EVENTS
    for i in range(len(stream) + 1):
        assert parse(stream[:i], stream[i:]) == SAMPLE_EVENTS, i


def test_bom_stripped_once() -> None:
    assert parse(BOM + b"data: x\n\n") == [msg(b"x")]


def test_bom_split_over_chunks() -> None:
    assert parse(b"\xef", b"\xbb", b"\xbfdata: x\n\n") == [msg(b"x")]
    assert parse(b"", b"\xef\xbb", b"", b"\xbf", b"data: x\n\n") == [msg(b"x")]


def test_second_bom_is_kept() -> None:
    # the second BOM becomes part of the field name, which is then unknown
    assert parse(BOM + BOM + b"data: x\n\n") == []
    assert parse(BOM + b"data: " + BOM + b"x\n\n") == [msg(BOM + b"x")]


def test_bom_only_at_stream_start() -> None:
    assert parse(b"data: a\n\n", BOM + b"data: b\n\n") == [msg(b"a")]


def test_partial_bom_prefix_is_not_dropped() -> None:
    # EF BB followed by something else is not a BOM: the bytes stay in the line
    assert parse(b"\xef\xbb", b"\xbcdata: x\n\n") == []
    assert parse(b"\xef", b"data: x\n\n") == []


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_line_endings(eol: bytes) -> None:
    stream = b"data: a" + eol + b"data: b" + eol + eol + b"data: c" + eol + eol
    assert parse(stream) == [msg(b"a\nb"), msg(b"c")]


def test_mixed_line_endings() -> None:
    assert parse(b"data: a\rdata: b\r\ndata: c\n\r\n") == [msg(b"a\nb\nc")]
    assert parse(b"data: a\n\rdata: b\n\n") == [msg(b"a"), msg(b"b")]


def test_cr_at_chunk_end_then_lf() -> None:
    chunks = [b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]
    assert parse(*chunks) == [msg(b"a\nb")]


def test_cr_at_chunk_end_survives_empty_chunk() -> None:
    assert parse(b"data: a\r", b"", b"\n", b"data: b\n\n") == [msg(b"a\nb")]


def test_cr_at_chunk_end_then_cr() -> None:
    assert parse(b"data: a\r", b"\r", b"data: b\r\r") == [msg(b"a"), msg(b"b")]


def test_comments_ignored() -> None:
    assert parse(b": hello\ndata: x\n:another:one\n\n") == [msg(b"x")]
    assert parse(b":only a comment\n\n") == []


def test_field_without_colon() -> None:
    assert parse(b"data\n\n") == [msg(b"")]
    assert parse(b"data\ndata\n\n") == [msg(b"\n")]
    assert parse(b"event: x\nevent\ndata: y\n\n") == [msg(b"y")]


def test_exactly_one_leading_space_removed() -> None:
    assert parse(b"data:  x\n\n") == [msg(b" x")]
    assert parse(b"data:x\n\n") == [msg(b"x")]
    assert parse(b"data: \n\n") == [msg(b"")]
    assert parse(b"data:\tx\n\n") == [msg(b"\tx")]
    assert parse(b"data: a: b\n\n") == [msg(b"a: b")]


def test_field_names_exact() -> None:
    assert parse(b"data : x\nDATA: y\nEvent: z\n\n") == []
    assert parse(b"foo: bar\ndata: x\nbaz\n\n") == [msg(b"x")]


def test_event_type() -> None:
    assert parse(b"event: odds\ndata: x\n\ndata: y\n\n") == [msg(b"x", "odds"), msg(b"y")]
    assert parse(b"event: \xff\ndata: x\n\n") == [msg(b"x", "\ufffd")]


def test_default_type_is_message() -> None:
    assert parse(b"data: x\n\n") == [SSEEvent("message", b"x", "")]
    assert parse(b"event:\ndata: x\n\n") == [msg(b"x")]


def test_multiline_data() -> None:
    assert parse(b'data: {\ndata:  "a": 1\ndata: }\n\n') == [msg(b'{\n "a": 1\n}')]


def test_one_trailing_lf_removed() -> None:
    assert parse(b"data: a\ndata:\n\n") == [msg(b"a\n")]
    assert parse(b"data\ndata\ndata\n\n") == [msg(b"\n\n")]


def test_data_bytes_verbatim() -> None:
    raw = b"\xff\xfe\x00\xc3(" + "é€".encode()
    [ev] = parse(b"data: " + raw + b"\n\n")
    assert ev.data == raw
    assert isinstance(ev.data, bytes)


def test_empty_data_dispatches_nothing_and_resets_type() -> None:
    assert parse(b"event: x\n\n") == []
    assert parse(b"event: x\nid: 1\n\ndata: y\n\n") == [msg(b"y", id="1")]
    assert parse(b"\n\n\n") == []


def test_id_persists_across_events() -> None:
    stream = b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n"
    assert parse(stream) == [msg(b"a", id="1"), msg(b"b", id="1"), msg(b"c", id="2")]


def test_id_with_nul_ignored() -> None:
    parser = SSEParser()
    events = parser.feed(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
    assert events == [msg(b"a", id="1"), msg(b"b", id="1")]
    assert parser.last_event_id == "1"


def test_empty_id_resets() -> None:
    stream = b"id: 1\ndata: a\n\nid\ndata: b\n\nid: 2\ndata: c\n\nid:\ndata: d\n\n"
    assert parse(stream) == [msg(b"a", id="1"), msg(b"b"), msg(b"c", id="2"), msg(b"d")]


def test_id_without_data_still_updates_last_event_id() -> None:
    parser = SSEParser()
    assert parser.feed(b"id: 42\n\n") == []
    assert parser.last_event_id == "42"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"retry: 5000", 5000),
        (b"retry:5000", 5000),
        (b"retry: 0", 0),
        (b"retry:  5000", None),
        (b"retry: 50a0", None),
        (b"retry:5 000", None),
        (b"retry: 5000 ", None),
        (b"retry:", None),
        (b"retry", None),
        (b"retry: -1", None),
        (b"retry: +1", None),
        (b"retry: 1.5", None),
        (b"retry: \xd9\xa5", None),  # ARABIC-INDIC DIGIT FIVE
    ],
)
def test_retry(line: bytes, expected: int | None) -> None:
    parser = SSEParser()
    assert parser.feed(line + b"\ndata: x\n\n") == [msg(b"x")]
    assert parser.retry_ms == expected


def test_invalid_retry_keeps_previous_value() -> None:
    parser = SSEParser()
    parser.feed(b"retry: 100\n\nretry: x\n\n")
    assert parser.retry_ms == 100
    parser.feed(b"retry: " + b"9" * 10_000 + b"\n\n")  # absurd values never crash
    assert isinstance(parser.retry_ms, int)


def test_unfinished_event_discarded_by_reset() -> None:
    """The spec buffers an id until its event is dispatched: a drop in the middle of an event
    must not lend the unfinished event's id to the next one (sse-contract-tests: "discards
    partial messages on retry")."""
    parser = SSEParser()
    assert parser.feed(b"id: 8\ndata: done\n\n") == [msg(b"done", id="8")]
    assert parser.feed(b"retry: 7\nevent: e\nid: 9\ndata: partial\ndata: par") == []
    assert parser.last_event_id == "8"  # id 9 is not dispatched yet
    parser.reset()
    assert parser.feed(b"data: x\n\n") == [msg(b"x", id="8")]
    assert parser.retry_ms == 7
    assert parser.last_event_id == "8"


def test_unfinished_event_without_data_does_not_set_the_id_either() -> None:
    parser = SSEParser()
    assert parser.feed(b"id: 5") == []
    assert parser.feed(b"\n") == []
    parser.reset()
    assert parser.last_event_id == ""
    assert parser.feed(b"data: y\n\n") == [msg(b"y")]


def test_reset_discards_pending_cr_and_restarts_bom_check() -> None:
    parser = SSEParser()
    assert parser.feed(BOM + b"data: a\r") == []
    parser.reset()
    assert parser.feed(b"\n" + b"data: b\n\n") == [msg(b"b")]
    parser.reset()
    assert parser.feed(BOM + b"data: c\n\n") == [msg(b"c")]


def test_many_events_in_one_chunk_in_order() -> None:
    stream = b"".join(b"id: %d\ndata: %d\n\n" % (i, i) for i in range(100))
    assert parse(stream) == [msg(b"%d" % i, id=str(i)) for i in range(100)]


def test_event_is_frozen() -> None:
    ev = msg(b"x")
    with pytest.raises(AttributeError):
        ev.data = b"y"  # type: ignore[misc]


def test_large_event_in_small_chunks() -> None:
    payload = b"x" * 300_000
    stream = b"data: " + payload + b"\n\n"
    parser = SSEParser()
    events = [ev for i in range(0, len(stream), 16) for ev in parser.feed(stream[i : i + 16])]
    assert events == [msg(payload)]


def test_invalid_limit() -> None:
    with pytest.raises(ValueError):
        SSEParser(0)


def test_exactly_at_limit_passes() -> None:
    assert parse(b"data: 0123456789\n\n", max_event_bytes=10) == [msg(b"0123456789")]
    assert parse(b"data: 01234\ndata: 5678\n\n", max_event_bytes=10) == [msg(b"01234\n5678")]
    chunks = [bytes([b]) for b in b"data: 0123456789\n\n"]
    assert parse(*chunks, max_event_bytes=10) == [msg(b"0123456789")]


def test_one_byte_over_raises_and_next_event_parsed() -> None:
    parser = SSEParser(10)
    with pytest.raises(EventTooLarge) as info:
        parser.feed(b"data: 0123456789A\n\n")
    assert isinstance(info.value, SSEError)
    assert "max_event_bytes=10" in str(info.value)
    assert "11" in str(info.value)
    assert info.value.limit == 10
    assert info.value.size == 11
    assert info.value.events == []
    assert parser.feed(b"data: next\n\n") == [msg(b"next")]


def test_accumulated_data_over_limit() -> None:
    parser = SSEParser(10)
    with pytest.raises(EventTooLarge):
        parser.feed(b"data: aaaa\ndata: bbbb\ndata: c\n")
    # the rest of the oversized event is ignored up to its blank line
    assert parser.feed(b"data: dddd\nevent: big\n\nevent: small\ndata: ok\n\n") == [
        msg(b"ok", "small")
    ]


def test_events_before_and_after_oversized_in_same_chunk_kept() -> None:
    parser = SSEParser(10)
    chunk = b"data: a\n\ndata: 0123456789AB\ndata: more\n\ndata: b\n\ndata: c"
    with pytest.raises(EventTooLarge) as info:
        parser.feed(chunk)
    assert info.value.events == [msg(b"a"), msg(b"b")]
    assert parser.feed(b"\n\n") == [msg(b"c")]


def test_oversized_event_id_still_applied() -> None:
    parser = SSEParser(10)
    with pytest.raises(EventTooLarge):
        parser.feed(b"id: 5\ndata: 0123456789AB\nid: 6\n\n")
    assert parser.last_event_id == "6"
    assert parser.feed(b"data: x\n\n") == [msg(b"x", id="6")]


def test_oversized_split_across_chunks_raises_once() -> None:
    parser = SSEParser(100)
    with pytest.raises(EventTooLarge):
        parser.feed(b"data: " + b"x" * 200)
    assert parser.feed(b"y" * 200) == []
    assert parser.feed(b"\ndata: z\n") == []
    assert parser.feed(b"\ndata: after\n\n") == [msg(b"after")]


def test_never_ending_line_raises_with_bounded_memory() -> None:
    limit = 1000
    parser = SSEParser(limit)
    raised = 0
    for _ in range(1000):
        try:
            assert parser.feed(b"x" * 100) == []
        except EventTooLarge as exc:
            raised += 1
            assert exc.events == []
        assert len(parser._partial) <= limit + 100
    assert raised == 1
    assert len(parser._partial) == 0
    assert parser.feed(b"\n\ndata: ok\n\n") == [msg(b"ok")]


def test_oversized_is_chunking_invariant() -> None:
    stream = (
        b"data: a\n\n"
        b"id: 1\ndata: " + b"x" * 40 + b"\ndata: more\n\n"
        b"event: e\ndata: b\n\n"
        b":" + b"c" * 100 + b"\ndata: dropped\n\n"
        b"data: c\n\n"
    )
    expected = [msg(b"a"), msg(b"b", "e", "1"), msg(b"c", id="1")]
    events, errors = feed_collect(SSEParser(20), [stream])
    assert (events, errors) == (expected, 1)
    for i in range(len(stream) + 1):
        events, errors = feed_collect(SSEParser(20), [stream[:i], stream[i:]])
        assert events == expected, i
        assert 1 <= errors <= 2, i
    bytewise = [stream[i : i + 1] for i in range(len(stream))]
    assert feed_collect(SSEParser(20), bytewise) == (expected, 2)


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


LINES = st.sampled_from(
    [
        b"",
        b"data: x",
        b"data:y",
        b"data",
        b"data: " + b"z" * 40,
        b"event: copilot-odds",
        b"event:\xff\xfe",
        b"id: 17-1",
        b"id: a\x00b",
        b"id:",
        b"id",
        b"id: ",
        b"retry: 5000",
        b"retry: 0012",
        b"retry: " + b"9" * 19,
        b"retry: x",
        b": comment",
        b"dat: typo",
        b"\xef\xbb\xbfdata: bom",
    ]
)


def _run(scanner: Any, chunks: list[bytes], limit: int) -> list[object]:
    sse.feed_lines = scanner
    parser, seen = SSEParser(max_event_bytes=limit), list[object]()
    for chunk in chunks:
        try:
            seen.append(parser.feed(chunk))
        except EventTooLarge as exc:
            seen.append(("too large", exc.size, exc.events))
    seen.append((parser.last_event_id, parser.id_dispatched, parser.retry_ms))
    return seen


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(LINES, max_size=30),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.lists(st.integers(0, 2000), max_size=8),
    st.sampled_from([16, 45, 1000]),
)
def test_the_compiled_scanner_parses_as_the_pure_one(
    lines: list[bytes], eol: bytes, cuts: list[int], limit: int
) -> None:
    stream = eol.join(lines) + eol
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    chosen = sse.feed_lines
    try:
        assert _run(SCANNER, chunks, limit) == _run(sse.pure_feed_lines, chunks, limit)
    finally:
        sse.feed_lines = chosen
