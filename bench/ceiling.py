"""The COPY ceiling: binary COPY of the workload's history rows into a table shaped like the
16-column ``odds_history`` of revision 0004, with its two indexes.

The reference must not follow the schema (the real history table will change shape): the table
is created here from its own statement, and the rows are built here from the frames as the
writer built them at 0004 (the 15 columns of its ``ODDS_HISTORY_COLUMNS``; ``history_id`` comes
from the table's sequence). It is a plain table, as ``CREATE TABLE ... (LIKE odds_history
INCLUDING ALL)`` made it from the day-partitioned parent before: same columns, defaults, check,
primary key ``(history_id, source_ts)`` and unique key ``(id, entry_id, kind, source_ts)``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from bench.workload import Workload, split_frame

TABLE = "copy_ceiling"
CREATE = f"""
DROP TABLE IF EXISTS {TABLE};
DROP SEQUENCE IF EXISTS {TABLE}_seq;
CREATE SEQUENCE {TABLE}_seq;
CREATE TABLE {TABLE} (
    history_id bigint NOT NULL DEFAULT nextval('{TABLE}_seq'),
    id text NOT NULL,
    kind text NOT NULL,
    stream text NOT NULL,
    fixture_id text,
    price double precision,
    points double precision,
    is_main boolean,
    status text NOT NULL,
    settlement text,
    settled_at timestamptz,
    source_ts timestamptz NOT NULL,
    entry_id text NOT NULL,
    event_id text NOT NULL,
    group_key text NOT NULL,
    received_at timestamptz NOT NULL,
    CONSTRAINT ck_{TABLE}_kind CHECK (kind IN ('odds', 'locked', 'settled')),
    PRIMARY KEY (history_id, source_ts),
    UNIQUE (id, entry_id, kind, source_ts)
);
"""
DROP = f"DROP TABLE IF EXISTS {TABLE}; DROP SEQUENCE IF EXISTS {TABLE}_seq;"
COLUMNS = (
    "id",
    "kind",
    "stream",
    "fixture_id",
    "price",
    "points",
    "is_main",
    "status",
    "settlement",
    "settled_at",
    "source_ts",
    "entry_id",
    "event_id",
    "group_key",
    "received_at",
)
KINDS = {  # event type: (kind, status)
    "copilot-odds": ("odds", "open"),
    "copilot-locked-odds": ("locked", "locked"),
    "copilot-settled-odds": ("settled", "settled"),
}
COPY_ROWS = 5000


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def history_records(w: Workload) -> list[tuple[Any, ...]]:
    """One record per streamed odd, as the 0004 writer's history COPY carried it."""
    received_at = datetime.now(UTC)
    out: list[tuple[Any, ...]] = []
    for g in w.groups:
        for frame, entry in zip(g.frames, g.entry_ids, strict=True):
            event_type, data = split_frame(frame)
            kind, status = KINDS[event_type]
            for odd in orjson.loads(data)["data"]:
                out.append(
                    (
                        odd["id"],
                        kind,
                        "copilot",
                        odd.get("fixture_id"),
                        _float(odd.get("price")),
                        _float(odd.get("points")),
                        odd.get("is_main"),
                        status,
                        odd.get("settlement"),
                        _when(odd.get("settled_at")),
                        datetime.fromtimestamp(odd["timestamp"], UTC),
                        entry,
                        entry,
                        g.key,
                        received_at,
                    )
                )
    return out


async def copy_ceiling(url: str, records: list[tuple[Any, ...]], repeats: int = 3) -> list[int]:
    """Rows/s of ``repeats`` COPY series, each into a fresh table (one run varies by 10-20%)."""
    conn = await asyncpg.connect(url)
    runs = []
    try:
        for _ in range(repeats):
            await conn.execute(CREATE)
            await conn.execute("CHECKPOINT")
            started = time.perf_counter()
            for i in range(0, len(records), COPY_ROWS):
                await conn.copy_records_to_table(
                    TABLE, records=records[i : i + COPY_ROWS], columns=COLUMNS
                )
            runs.append(round(len(records) / (time.perf_counter() - started)))
        await conn.execute(DROP)
    finally:
        await conn.close()
    return sorted(runs)


OWN = "copy_own"
OWN_EVENTS = "copy_own_events"
CREATE_OWN = f"""
DROP TABLE IF EXISTS {OWN}, {OWN_EVENTS};
CREATE TABLE {OWN} (LIKE odds_changes INCLUDING ALL);
CREATE TABLE {OWN_EVENTS} (LIKE change_events INCLUDING ALL);
"""


def own_records(events: list[Any]) -> tuple[list[Any], list[Any]]:
    """The same rows as the daemon's history writes them (storage/write/history.py), each
    event's rows new: (changes, events)."""
    from ingestor.storage.write.history import change_records, encode
    from ingestor.storage.write.state import Known, WriteState

    groups = {g: i for i, g in enumerate(sorted({e.group_key for e in events}))}
    state = WriteState(groups, {})
    state.opened(0, Known([], {"Won": 1}, groups))
    h = encode(state.history_context(), events)  # every row new: straight in
    h.codes = dict.fromkeys(h.texts, 1)
    return change_records(h), h.events


async def copy_own(url: str, changes: list[Any], events: list[Any], repeats: int = 3) -> list[int]:
    """Rows/s of this build's history shape: the changes and their events, both COPYed, in
    batches of ``COPY_ROWS`` changes, fresh tables shaped and indexed like the real ones."""
    from ingestor.storage.write.history import CHANGE_COLUMNS, EVENT_COLUMNS

    conn = await asyncpg.connect(url)
    runs = []
    chunks = -(-len(changes) // COPY_ROWS)
    try:
        for _ in range(repeats):
            await conn.execute(CREATE_OWN)
            await conn.execute("CHECKPOINT")
            started = time.perf_counter()
            for k in range(chunks):
                part = changes[k * COPY_ROWS : (k + 1) * COPY_ROWS]
                await conn.copy_records_to_table(OWN, records=part, columns=CHANGE_COLUMNS)
                their = events[k * len(events) // chunks : (k + 1) * len(events) // chunks]
                await conn.copy_records_to_table(OWN_EVENTS, records=their, columns=EVENT_COLUMNS)
            runs.append(round(len(changes) / (time.perf_counter() - started)))
        await conn.execute(f"DROP TABLE {OWN}, {OWN_EVENTS}")
    finally:
        await conn.close()
    return sorted(runs)
