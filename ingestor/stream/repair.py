"""Gap repair: the changes a gap kept from history, asked of the vendor's history of each odd.

The work queue is the ledger's (``stream_gap_odds``): it outlives restarts and takeovers, and
whoever owns a group repairs its gaps. Each call asks ``/copilot/fixtures/odds/historical``
for at most 10 odds of one group, within its own budget (``historical_requests_per_15s``, a
limiter of its own; a 429 closes it for at least 15 s). The entries newer than a gap's start
go to the writer as rows made by repair: the writer stores each change the database lacks,
once (never beside the stream's row of the same odd, time and kind), and newer wins in
``odds`` as everywhere. The work is marked done only once the rows are committed, and only
while the group is still ours at the same epoch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from ingestor.domain.decode import decode_history_entry
from ingestor.domain.errors import DecodeError
from ingestor.domain.events import DecodedEvent, EventQueue, OddRow
from ingestor.lifecycle import sleep_or_stop
from ingestor.metrics import Metrics
from ingestor.ports import GapLedger, LedgerError, RepairWork, WritePath
from ingestor.stream.rest import RestClient, RestError

log = structlog.get_logger("ingestor.repair")

HISTORICAL_PATH = "/copilot/fixtures/odds/historical"
IDS_PER_CALL = 10  # the vendor's cap
IDLE_S = 2.0  # no work: look again this often (gaps are scoped by this process or another)
FAILED_S = 15.0  # after a failed call or ledger error
SUMMARY_S = 15.0  # the gap gauges are read this often
PROGRESS_S = 30.0  # a repair_progress line at most this often while there is work


@dataclass(frozen=True)
class RepairParts:
    """What the repair uses: its REST client (with the historical budget's limiter), the
    ledger, the writer's queue and face, the groups this process streams (group -> epoch)."""

    rest: RestClient
    ledger: GapLedger
    queue: EventQueue
    writer: WritePath
    owned: Callable[[], Mapping[str, int]]
    copilot_groups: frozenset[str]


class GapRepair:
    """The process's repair loop (a watched task): one historical call at a time."""

    def __init__(self, parts: RepairParts, metrics: Metrics, stop: asyncio.Event) -> None:
        self._p = parts
        self._metrics = metrics
        self._stop = stop
        self._summary_at = 0.0
        self._said_at = 0.0
        self._done = {"calls": 0, "odds": 0, "added": 0}

    async def run(self) -> None:
        """Until stopped (or cancelled)."""
        while True:
            await self._summary()
            try:
                worked = await self._once()
            except LedgerError as exc:
                log.warning("repair_ledger_failed", error=str(exc)[:200])
                worked = False
                if await sleep_or_stop(self._stop, FAILED_S):
                    return
            if not worked and await sleep_or_stop(self._stop, IDLE_S):
                return

    async def _once(self) -> bool:
        """One call's worth of work; False when there was none (or the call failed)."""
        owned = {g: e for g, e in self._p.owned().items() if g in self._p.copilot_groups}
        if not owned:
            return False
        work = await self._p.ledger.work(sorted(owned), IDS_PER_CALL * 4)
        if not work:
            return False
        group = work[0].group_key
        batch = [w for w in work if w.group_key == group][:IDS_PER_CALL]
        entries = await self._history([w.odd_id for w in batch])
        if entries is None:
            return False
        held = await self._p.ledger.held([w.odd_id for w in batch])
        rows = self._rows(batch, entries, held)
        before = await self._p.ledger.repaired_rows([w.odd_id for w in batch])
        if rows:
            event = DecodedEvent.repair(group, datetime.now(UTC), rows, owned[group])
            await self._p.queue.put(event)
            await self._p.writer.flushed()
        added = await self._p.ledger.repaired_rows([w.odd_id for w in batch]) - before
        if await self._p.ledger.repaired(batch, added, group, owned[group]):
            self._count(len(batch), added)
        return True

    async def _history(self, odd_ids: list[str]) -> dict[str, list[Any]] | None:
        """Each odd's entries (newest first); None when the call failed (retried later)."""
        try:
            body = await self._p.rest.get(HISTORICAL_PATH, [("id", i) for i in odd_ids])
        except RestError as exc:
            outcome = "429" if "HTTP 429" in str(exc) else "error"
            self._metrics.repair_calls.labels(outcome).inc()
            log.warning("repair_call_failed", odds=len(odd_ids), error=str(exc)[:300])
            return None
        self._metrics.repair_calls.labels("ok").inc()
        data = body.get("data") if isinstance(body, dict) else None
        out: dict[str, list[Any]] = {}
        for item in data if isinstance(data, list) else []:
            if isinstance(item, dict) and isinstance(item.get("entries"), list):
                out[str(item.get("id"))] = item["entries"]
        return out

    def _rows(
        self,
        work: list[RepairWork],
        entries: Mapping[str, list[Any]],
        held: Mapping[str, Mapping[str, Any]],
    ) -> list[OddRow]:
        """The entries newer than the start of the earliest gap that lists the odd, as rows of
        the odd the database holds (an odd it does not hold has no identity to store)."""
        rows: list[OddRow] = []
        unheld = [w.odd_id for w in work if w.odd_id not in held]
        if unheld:  # scoped under the group's epoch, so its snapshot's row was committed
            log.warning("repair_odds_not_held", group=work[0].group_key, odds=unheld[:10])
        for w in work:
            stored = held.get(w.odd_id)
            if stored is None:
                continue
            for entry in entries.get(w.odd_id, []):
                try:
                    row = decode_history_entry(entry, stored)
                except DecodeError as exc:
                    self._metrics.events_rejected.labels(w.group_key, exc.reason).inc()
                    continue
                if row.source_ts > w.from_ts:
                    rows.append(row)
        return rows

    def _count(self, odds: int, added: int) -> None:
        self._metrics.repair_odds.inc(odds)
        self._metrics.repair_changes.inc(added)
        done = self._done
        done["calls"] += 1
        done["odds"] += odds
        done["added"] += added
        if time.monotonic() - self._said_at >= PROGRESS_S:
            self._said_at = time.monotonic()
            log.info("repair_progress", **done)

    async def _summary(self) -> None:
        """The gap gauges, every ``SUMMARY_S`` (the same for every process of a database)."""
        if time.monotonic() - self._summary_at < SUMMARY_S:
            return
        self._summary_at = time.monotonic()
        try:
            summary = await self._p.ledger.summary()
        except LedgerError:
            return
        now = datetime.now(UTC)
        oldest = [t for state, (_, t) in summary.items() if state in ("open", "repairing") and t]
        for state in ("open", "repairing", "unrepairable"):
            self._metrics.gaps.labels(state).set(summary.get(state, (0, None))[0])
        age = (now - min(oldest)).total_seconds() if oldest else 0.0
        self._metrics.gap_oldest.set(max(0.0, age))
