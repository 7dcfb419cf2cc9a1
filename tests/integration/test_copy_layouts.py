"""The binary COPY layouts against the migrated schema: the types the daemon encodes are the
columns' own, and what it encodes reads back as the values it was given."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from ingestor.storage import sql
from ingestor.storage.write import pgcopy
from ingestor.storage.write.statements import LAYOUTS, ODDS, Layout, copy

COLUMN_TYPES = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
"""


async def test_every_layout_encodes_its_columns_with_their_own_types(pg: Any) -> None:
    await pg.execute(sql.CREATE_STAGING)  # the temporary staging tables, as the writer makes
    for layout in LAYOUTS:
        schema = dict(await pg.fetch(COLUMN_TYPES, layout.table))
        assert schema, f"{layout.table} does not exist"
        expected = pgcopy.codes([schema[c] for c in layout.columns])
        assert layout.codes == expected, layout.table


async def test_what_is_encoded_reads_back_as_given(pg: Any) -> None:
    at = datetime(2026, 12, 3, 14, 30, 15, 123456, tzinfo=UTC)
    east = datetime(2026, 12, 3, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=9)))
    await pg.execute(
        "CREATE TEMP TABLE every_type (q bigint, h smallint, f real, d double precision,"
        " t text, b boolean, ts timestamptz, y bytea, a double precision[])"
    )
    layout = Layout.of(
        "every_type",
        ("q", "h", "f", "d", "t", "b", "ts", "y", "a"),
        {
            "q": "bigint",
            "h": "smallint",
            "f": "real",
            "d": "double precision",
            "t": "text",
            "b": "boolean",
            "ts": "timestamp with time zone",
            "y": "bytea",
            "a": "double precision[]",
        },
    )
    rows = [
        (-(2**63), -32768, -110.0, 1 / 3, "Ünïcødé ✓", True, at, b"\x00\xff", [1 / 3, None]),
        (2**63 - 1, 32767, math.inf, -0.0, "", False, east, b"", []),
        (None, None, None, None, None, None, None, None, None),
    ]
    await copy(pg, layout, rows)
    back = [tuple(r) for r in await pg.fetch("SELECT * FROM every_type ORDER BY q NULLS LAST")]
    assert back == rows


async def test_the_odds_stage_takes_a_current_record(pg: Any) -> None:
    await pg.execute(sql.CREATE_STAGING)
    record: dict[str, Any] = dict.fromkeys(ODDS.columns)
    record.update(
        id="1:-1:FIX1:moneyline:team_a",
        stream="copilot",
        price=-110.5,
        is_main=True,
        status="open",
        source_ts=datetime(2026, 12, 3, tzinfo=UTC),
        order_key=b"\x01\x02",
        odd_key=-5,
    )
    async with pg.transaction():  # the stage empties itself at commit
        await copy(pg, ODDS, [tuple(record.values())])
        row = await pg.fetchrow(f"SELECT * FROM {sql.STAGE_ODDS}")
    assert {k: row[k] for k in record} == record
