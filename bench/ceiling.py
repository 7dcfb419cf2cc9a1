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

from bench.workload import Workload

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
    "id", "kind", "stream", "fixture_id", "price", "points", "is_main", "status",
    "settlement", "settled_at", "source_ts", "entry_id", "event_id", "group_key", "received_at",
)  # fmt: skip
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
            head, _, data = frame.partition(b"\ndata: ")
            kind, status = KINDS[head.split(b"\n", 1)[0].removeprefix(b"event: ").decode()]
            for odd in orjson.loads(data)["data"]:
                out.append((
                    odd["id"], kind, "copilot", odd.get("fixture_id"), _float(odd.get("price")),
                    _float(odd.get("points")), odd.get("is_main"), status, odd.get("settlement"),
                    _when(odd.get("settled_at")), datetime.fromtimestamp(odd["timestamp"], UTC),
                    entry, entry, g.key, received_at,
                ))  # fmt: skip
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
