"""One connection group: connect, parse, decode, hand to the writer, reconnect forever."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
from prometheus_client import Gauge
from yarl import URL

from ingestor.config import StreamSettings
from ingestor.domain.cursors import Cursor
from ingestor.domain.decode import (
    CONTROL_EVENTS,
    DATA_EVENTS,
    ODDS_EVENTS,
    REJECT_REASONS,
    decode_event_carefully,
)
from ingestor.domain.errors import DecodeError
from ingestor.domain.events import DeadLetter, DecodedEvent, EventQueue, GapStart
from ingestor.domain.fast import fast_odds
from ingestor.domain.groups import Group
from ingestor.lifecycle import LogLimit, sleep_or_stop
from ingestor.metrics import Metrics
from ingestor.ports import CommittedCursors, GapLedger
from ingestor.stream.client import StreamHTTPError, connect_failure, open_stream
from ingestor.stream.recovery import Recovery
from ingestor.stream.rehydrate import Rehydrator
from ingestor.stream.rest import RequestLimiter, retry_after_s
from ingestor.stream.sse import EventTooLarge, SSEEvent, SSEParser

log = structlog.get_logger("ingestor.stream")

RECONNECT_REASONS = ("eof", "stall", "connect_error", "read_error", "payload_error")
# The server refuses us (a rejected key, "stop reconnecting", a redirect we will not follow):
# seconds will not heal that, so these retry slowly.
REFUSED_REASONS = frozenset({"http_401", "http_403", "http_204", "redirect_refused"})
MAX_EVENT_TYPES = 32
# What the series of a group this worker does not own are bound to: set, they say nothing.
_DETACHED = Gauge("ingestor_detached", "never registered", registry=None)
# Events decoded between two yields to the event loop (see _deliver). A yield costs 4.2 µs of
# CPU (the loop's turn: a poll and the task's step, measured): every 8 events that was 2.3% of
# the daemon's CPU on the bench. 32 events are 60-100 µs of decoding now, as long as a round
# trip of the writer may wait; end to end, daemon CPU per odd as a share of PostgreSQL's,
# 2 runs each, twice: 0.513 with 8, 0.500 with 32, the rate within the noise.
YIELD_EVERY_EVENTS = 32


@dataclass(frozen=True, slots=True)
class LinkState:
    """One group's link at a moment: connected (for how long), or trying (since when), and
    the server's refusal if it refuses us (a rejected key, say)."""

    group_key: str
    connected: bool
    for_s: float  # seconds connected, or seconds since the link was lost (or the group taken)
    refused: str | None
    failures: int


@dataclass(frozen=True, slots=True)
class Shared:
    """What every worker of the process shares."""

    session: aiohttp.ClientSession
    settings: StreamSettings
    queue: EventQueue
    metrics: Metrics
    cursors: CommittedCursors  # where each group resumes from (the writer's commits)
    stop: asyncio.Event
    # Paces new connections (the vendor counts reconnects too) and holds all of them back
    # after a 429.
    connect_gate: RequestLimiter | None = None
    rehydrator: Rehydrator | None = None
    ledger: GapLedger | None = None  # where gaps are recorded (and scoped)


class StreamWorker:
    """Holds one SSE connection for a group and reconnects it with backoff."""

    def __init__(self, group: Group, shared: Shared) -> None:
        self.group = group
        self._gate = shared.connect_gate
        self._recovery = Recovery(
            group, shared.rehydrator, shared.ledger, shared.metrics, shared.stop
        )
        self._session = shared.session
        self._s = shared.settings
        self._key = shared.settings.key
        where = URL(self._s.effective_api_base_url)
        # Named in every connection error (never the key, never the query).
        self._where: dict[str, object] = {"host": where.host or "", "port": where.port}
        self._queue = shared.queue
        self._metrics = metrics = shared.metrics
        self._cursors = shared.cursors
        self._stop = shared.stop
        self._parser = SSEParser(self._s.max_event_bytes)
        self.failures = 0
        self.last_delay_s = 0.0
        self._data_events = 0
        # Gaps of this ownership's connections not yet carried by a data event (see _deliver).
        self._gaps: list[GapStart] = []
        # Series start at zero, so increase() and alerts see the very first occurrence.
        for reason in REJECT_REASONS:
            metrics.events_rejected.labels(group.key, reason)
        for reason in RECONNECT_REASONS:
            metrics.stream_reconnects.labels(group.key, reason)
        # Every process says which groups it wants; only the owner says how its stream is
        # (a standby's 0 would look like a group streamed nowhere: the alert aggregates).
        metrics.stream_wanted.labels(group.key).set(1)
        self._received = metrics.events_received
        self._counters: dict[str, Any] = {}
        # A chunk's counts, published once at its end (a lock per event and series cost 4% of
        # the daemon's CPU in the bench profile): events by type, data events, events queued.
        self._tally: dict[str, int] = {}
        self._data_in_chunk = self._queued_in_chunk = 0
        self._log_limit = LogLimit()
        # The link as readiness sees it: since when connected (or trying to), and why the
        # server refuses us, if it does.
        self._connected = False
        self._since = time.monotonic()
        self._refused: str | None = None
        # The owned group's series (made by begin, removed by end): kept, since looking a
        # labelled series up costs more than setting it, and it is set on every event.
        self._last_data = self._no_data = _DETACHED

    def state(self) -> LinkState:
        """A frozen snapshot of the group's link, for readiness."""
        return LinkState(
            self.group.key,
            self._connected,
            time.monotonic() - self._since,
            self._refused,
            self.failures,
        )

    def _reset(self) -> None:
        """Forget the failures of an earlier ownership of the group (readiness counts them)."""
        self.failures = 0
        self._refused = None
        self._since = time.monotonic()

    def _retry_floor_s(self) -> float:
        retry = self._parser.retry_ms
        # The server's retry: is the floor, but a silly value must not park the group.
        return 0.0 if retry is None else min(retry / 1000, self._s.reconnect_max_s)

    def _backoff_s(self) -> float:
        """Full jitter, exponential in consecutive failures, never under the server's retry.

        After a clean drop (failures == 0) a little jitter is still added, so that every group
        dropped at once by the vendor does not come back in the same millisecond."""
        ceiling = min(
            self._s.reconnect_max_s, self._s.reconnect_initial_s * 2 ** min(self.failures, 30)
        )
        floor = self._retry_floor_s()
        if not self.failures:
            return floor + random.uniform(0, min(ceiling, max(floor, 0.001)) * 0.2)
        return max(floor, random.uniform(0, ceiling))

    def begin(self, epoch: int, resume: Cursor | None) -> None:
        """A new ownership of the group: the epoch its events are read under, and the cursor
        it resumes from (the stretch after it is a gap unless the vendor replays). Its
        connection metrics exist while it is owned."""
        self._recovery.begin(epoch, resume)
        self._gaps.clear()  # an earlier ownership's: its events are fenced, its gaps covered
        self._reset()
        key, m = self.group.key, self._metrics
        m.stream_connected.labels(key).set(0)
        m.stream_consecutive_failures.labels(key).set(0)
        self._no_data = m.stream_no_data.labels(key)
        self._no_data.set(0)
        self._last_data = m.last_data_event.labels(key)

    def end(self) -> None:
        """The ownership ended (the worker stopped): its connection metrics go, so that a
        process no longer says anything of a group another process streams."""
        key, m = self.group.key, self._metrics
        self._connected = False
        self._reset()
        for gauge in (
            m.stream_connected,
            m.stream_consecutive_failures,
            m.stream_no_data,
            m.last_data_event,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(key)

    async def run(self) -> None:
        """Until ``stop`` is set (or the task is cancelled)."""
        try:
            await self._run()
        finally:
            await self._recovery.stop()

    async def _run(self) -> None:
        key = self.group.key
        while not self._stop.is_set():
            reason = await self._session_once()
            if self._stop.is_set():
                return
            self.failures = 0 if self._data_events else self.failures + 1
            if reason not in REFUSED_REASONS:
                self._refused = None
            self._metrics.stream_consecutive_failures.labels(key).set(self.failures)
            self._metrics.stream_reconnects.labels(key, reason).inc()
            delay = self._backoff_s()
            if reason in REFUSED_REASONS:
                slow = min(self._s.auth_retry_max_s, 30.0 * 2 ** min(30, max(0, self.failures - 1)))
                delay = max(delay, random.uniform(slow / 2, slow))
            self.last_delay_s = delay
            log.info("stream_reconnect", group=key, reason=reason, delay_s=round(delay, 3))
            if await sleep_or_stop(self._stop, delay):
                return

    async def _session_once(self) -> str:
        """One connection from open to close; returns the reconnect reason."""
        key = self.group.key
        cursor = self._cursors.committed(key)
        last_entry_id = cursor.entry_id if cursor else None
        # The id of the last event this worker saw (an empty id: none is sent, as the server
        # asked), else the one committed before a restart.
        if self._parser.id_dispatched:
            last_event_id: str | None = self._parser.last_event_id
        else:
            last_event_id = cursor.event_id if cursor else None
        self._data_events = 0
        self._parser.reset()
        if self._gate is not None:
            await self._gate.acquire()
        try:
            resp, redirects = await open_stream(
                self._session,
                self._s.effective_api_base_url,
                self.group,
                api_key=self._key,
                last_entry_id=last_entry_id,
                last_event_id=last_event_id,
                connect_timeout_s=self._s.connect_timeout_s,
            )
        except StreamHTTPError as exc:
            if exc.reason == "redirect_refused":
                self._metrics.stream_redirects.labels(key, "refused").inc()
            log.error(
                "stream_http_error",
                group=key,
                **self._where,
                status=exc.status,
                vendor_message=exc.message,
            )
            if exc.reason in REFUSED_REASONS:
                self._refused = f"HTTP {exc.status}: {exc.message}"
            if exc.status == 429 and self._gate is not None:
                self._gate.close_for(retry_after_s(exc.retry_after))
            return exc.reason
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning(
                "stream_connect_failed",
                group=key,
                **self._where,
                reason=connect_failure(exc, self._s.connect_timeout_s),
            )
            return "connect_error"
        if redirects:
            self._metrics.stream_redirects.labels(key, "followed").inc(redirects)
        self._metrics.stream_connected.labels(key).set(1)
        self._connected, self._since, self._refused = True, time.monotonic(), None
        log.info("stream_connected", group=key, last_entry_id=last_entry_id)
        gap = self._recovery.connected()
        if gap is not None:
            self._gaps.append(gap)
        try:
            return await self._read(resp)
        except aiohttp.ClientPayloadError:
            return "payload_error"
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("stream_read_failed", group=key, error=type(exc).__name__)
            return "read_error"
        finally:
            self._metrics.stream_connected.labels(key).set(0)
            self._connected, self._since = False, time.monotonic()
            resp.release()

    async def _read(self, resp: aiohttp.ClientResponse) -> str:
        stall = self._s.stall_timeout_s
        connected_at = time.monotonic()
        warned = cleared = False
        while True:
            try:
                # The watchdog covers the socket read only: time spent blocked on a full
                # queue (backpressure) is not a stall of the feed.
                async with asyncio.timeout(stall):
                    chunk = await resp.content.readany()
            except TimeoutError:
                log.warning("stream_stalled", group=self.group.key, stall_timeout_s=stall)
                return "stall"
            if not chunk:
                return "eof"
            await self._deliver(chunk)
            if not self._data_events:
                # 200 and pings only: a key without access to this stream looks like this.
                idle = time.monotonic() - connected_at
                self._no_data.set(idle)
                if idle > self._s.no_data_warning_s and not warned:
                    warned = True
                    log.warning("stream_no_data", group=self.group.key, seconds=round(idle))
            elif not cleared:
                cleared = True
                self._no_data.set(0)

    async def _deliver(self, chunk: bytes) -> None:
        """The chunk's events to the writer, decoded (its counts published at its end)."""
        # One time of receipt for the chunk's events: they arrived together (a clock read
        # per event was 0.6 µs of it on the bench).
        now = datetime.now(UTC)
        events = await self._parse(chunk, now)
        queue, tally, epoch = self._queue, self._tally, self._recovery.epoch
        key, stream = self.group.key, self.group.stream.kind
        # The chunk's data events: how many, the first's entry and the newest, told to gap
        # tracking once at the chunk's end (a call and a comparison per event before).
        data = 0
        first: tuple[int, int] | None = None
        high: tuple[int, int] | None = None
        try:
            for i, event in enumerate(events, 1):
                etype = event.event
                tally[etype] = tally.get(etype, 0) + 1
                # The common case (a well-formed odds event) straight to the compiled
                # decoder; everything else (pings, fixtures, anything it will not judge)
                # through _take.
                kind = ODDS_EVENTS.get(etype)
                item = None
                if kind is not None:
                    item = fast_odds(key, stream, etype, kind, event.data, event.id, now)
                if item is None:
                    item = self._take(event, now)
                if item is not None:
                    if item.advances_cursor:  # a data event (a dead letter alone is not)
                        item.epoch = epoch
                        if self._gaps:  # the connection's first: its commit records them
                            item.gaps = tuple(self._gaps)
                            self._gaps.clear()
                        at = item.entry or item.position()
                        if first is None:
                            first = at
                        if high is None or at > high:
                            high = at
                        data += 1
                    # Blocks while the writer is behind: the socket is not read meanwhile
                    # (backpressure). put_nowait when there is room: put's coroutine was a
                    # quarter of the put (0.3 of 1.4 µs per event, measured); and tried
                    # first, since asking full() beforehand checks the room twice (py-spy:
                    # Queue.qsize alone 1.1% of the daemon).
                    try:
                        queue.put_nowait(item)
                    except asyncio.QueueFull:
                        await queue.put(item)
                if i % YIELD_EVERY_EVENTS == 0:
                    # One read can hold hundreds of events. Without a yield, every round
                    # trip of the writer (BEGIN, SAVEPOINT, ...) waits for the whole chunk
                    # to be decoded, and PostgreSQL idles meanwhile: measured, 9 of 37 s.
                    await asyncio.sleep(0)
        finally:
            if data:
                self._data_received(data, first, high)
            self._publish_counts()

    async def _parse(self, chunk: bytes, now: datetime) -> list[SSEEvent]:
        """The chunk's whole events; one too large becomes a dead letter."""
        try:
            return self._parser.feed(chunk)
        except EventTooLarge as exc:
            letter = self._reject("too_large", "", "", str(exc), b"", now)
            await self._queue.put(self._letters_only([letter], now))
            return exc.events

    def _data_received(
        self, n: int, first: tuple[int, int] | None, high: tuple[int, int] | None
    ) -> None:
        """``n`` data events of a chunk were queued: the first's entry and the newest."""
        self._data_events += n
        self._data_in_chunk += n
        self._queued_in_chunk += n
        if self._data_events == n and self.failures:
            # Data flows again: the group is healthy (this is what /readyz looks at).
            self.failures = 0
            self._metrics.stream_consecutive_failures.labels(self.group.key).set(0)
        if first is not None and high is not None:
            self._recovery.received(first)
            self._recovery.received(high)

    def _reject(
        self, reason: str, event_type: str, event_id: str, detail: str, payload: bytes, at: datetime
    ) -> DeadLetter:
        """Count and log (rate-limited) a rejection; the dead letter goes to the writer."""
        self._metrics.events_rejected.labels(self.group.key, reason).inc()
        if self._log_limit.allow(reason):
            log.warning(
                "event_rejected",
                group=self.group.key,
                reason=reason,
                event_type=event_type,
                event_id=event_id[:64],
                detail=detail[:300],
                suppressed=self._log_limit.suppressed(reason),
            )
        text = payload[: self._s.dead_letter_max_bytes].decode("utf-8", "replace")
        return DeadLetter(
            self.group.key,
            event_type,
            event_id,
            reason,
            detail[:1000],
            text.replace("\x00", "\ufffd"),
            at,
        )

    def _letters_only(self, letters: list[DeadLetter], at: datetime) -> DecodedEvent:
        # No stream position is known for an event that could not be read: no cursor move.
        return DecodedEvent(
            self.group.key,
            "dead-letter",
            "0-0",
            "",
            at,
            dead_letters=letters,
            advances_cursor=False,
            epoch=self._recovery.epoch,
        )

    def _publish_counts(self) -> None:
        """The chunk's counts, into their metrics."""
        for etype, n in self._tally.items():
            self._counter(etype).inc(n)
        self._tally.clear()
        if self._data_in_chunk:
            self._last_data.set(time.time())
            self._data_in_chunk = 0
        if self._queued_in_chunk:
            self._metrics.events_queued.inc(self._queued_in_chunk)
            self._queued_in_chunk = 0

    def _counter(self, etype: str) -> Any:
        """The received-events series of an event type."""
        counter = self._counters.get(etype)
        if counter is None:  # label lookups cost more than the increment: keep the children
            # A feed inventing event types must not grow memory or label sets without bound.
            label = etype[:64] if len(self._counters) < MAX_EVENT_TYPES else "other"
            counter = self._received.labels(self.group.key, label)
            if len(self._counters) < MAX_EVENT_TYPES:
                self._counters[etype] = counter
        return counter

    def _take(self, event: SSEEvent, now: datetime) -> DecodedEvent | None:
        """Decode one event the fast path did not take: what goes to the writer (the decoded
        event, or its dead letter), or None (a ping, an event type we do not know)."""
        etype = event.event
        self._counter(etype)  # every type has its series from its first event on
        if etype in CONTROL_EVENTS:
            return None
        if etype not in DATA_EVENTS:
            label = etype[:64] if len(self._counters) < MAX_EVENT_TYPES else "other"
            self._metrics.unknown_events.labels(self.group.key, label).inc()
            if self._log_limit.allow("event_unknown"):
                log.warning("event_unknown", group=self.group.key, event_type=etype[:64])
            return None
        try:
            decoded = decode_event_carefully(
                self.group.key, self.group.stream.kind, etype, event.data, event.id, now
            )
        except DecodeError as exc:
            letter = self._reject(exc.reason, etype, event.id, str(exc), event.data, now)
            return self._letters_only([letter], now)
        for bad in decoded.rejected:
            detail = f"{bad} (one odd of the event)"
            decoded.dead_letters.append(
                self._reject(bad.reason, etype, event.id, detail, bad.payload, now)
            )
        return decoded
