# ruff: noqa: E501
"""history packed: odds_changes (56-byte rows keyed by a 64-bit odd key) and change_events,
readable through the odds_history view; open_odds and settled_odds views; a comment on every
table and column

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 03:00:00

Existing history rows are converted (a few seconds per million rows); the old table is gone
afterwards and the view of the same name reads the new one with the old columns (history_id
aside). The downgrade converts back.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ORIGIN = "timestamptz '2020-01-01 00:00:00+00'"
SEQ_MASK = 1048575  # entry keys: ms << 20 | seq


def _exact(column: str, index: int) -> str:
    """A stored price or points as the float8 the feed sent.

    ``exact`` holds the values float4 does not keep; the rest are the float4's shortest text
    read back as float8. Halves and whole numbers below 2**23 skip the text round trip: their
    float4 is that very number, so the cast gives the same float8, about 1 ms faster per 6,000
    rows, and it does not depend on the session's extra_float_digits.
    """
    value = f"c.{column}"
    return (
        f"coalesce(c.exact[{index}], CASE WHEN {value} * 2 = trunc({value} * 2) "
        f"AND abs({value}) < 8388608 THEN {value}::float8 ELSE {value}::text::float8 END)"
    )


PRICE = _exact("price", 1)
POINTS = _exact("points", 2)
MIGRATION_SLOT = 15  # writer slot of converted events; live writers take 0-14

ODD_KEY = """
CREATE FUNCTION odd_key(id text) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN ('x' || substr(md5(id), 1, 16))::bit(64)::bigint
"""
COMMENT_ODD_KEY = (
    "COMMENT ON FUNCTION odd_key(text) IS 'The 64-bit key of an odd id: the first 8 bytes of "
    "its md5, signed (odds.odd_key, odds_changes.odd_key)'"
)
SETTLEMENTS = ("Won", "Lost", "Refunded", "Half Won", "Half Lost", "Pending", "Void", "Push")

# Converting 0004's rows. Entry ids '<ms>-<seq>' become ms << 20 | seq; an id that is not in
# that canonical form (or does not fit) keeps its text beside a clamped key.
ENTRY_FUNCTIONS = (
    f"""
CREATE FUNCTION pg_temp.id_key(t text) RETURNS bigint LANGUAGE sql IMMUTABLE RETURN
    CASE WHEN t ~ '^[0-9]{{1,20}}-[0-9]{{1,20}}$'
         THEN (least(split_part(t, '-', 1)::numeric, 8796093022207)::bigint << 20)
              | least(split_part(t, '-', 2)::numeric, {SEQ_MASK})::bigint
         ELSE 0 END
""",
    f"""
CREATE FUNCTION pg_temp.id_text(t text) RETURNS text LANGUAGE sql IMMUTABLE RETURN
    CASE WHEN t ~ '^(0|[1-9][0-9]{{0,12}})-(0|[1-9][0-9]{{0,6}})$'
              AND split_part(t, '-', 1)::bigint < 8796093022208
              AND split_part(t, '-', 2)::bigint <= {SEQ_MASK}
         THEN NULL ELSE t END
""",
)
# One event per (group, entry, kind, SSE id, receipt); one per row for REST snapshot rows.
# Ids: received microseconds << 8 | slot << 4, made strictly increasing (i + running max).
OLD_EVENTS = f"""
CREATE TEMP TABLE old_events ON COMMIT DROP AS
WITH ev AS (
    SELECT group_key, entry_id, kind, event_id, received_at,
           CASE WHEN event_id = 'snapshot' THEN history_id END AS snap
    FROM odds_history GROUP BY 1, 2, 3, 4, 5, 6
), numbered AS (
    SELECT ev.*, row_number() OVER (ORDER BY received_at, group_key, entry_id, kind,
                                     event_id, snap) AS i,
           (floor(extract(epoch FROM received_at - {ORIGIN}) * 1000000)::bigint << 8)
             | ({MIGRATION_SLOT} << 4) AS base
    FROM ev
)
SELECT *, i + max(base - i) OVER (ORDER BY i ROWS UNBOUNDED PRECEDING) AS id FROM numbered
"""
CONVERT_EVENTS = """
INSERT INTO change_events (id, entry_key, sse_key, group_no, kind, entry_text, sse_text)
SELECT e.id, pg_temp.id_key(e.entry_id),
       CASE WHEN e.snap IS NULL THEN pg_temp.id_key(e.event_id) END,
       c.group_no,
       CASE WHEN e.snap IS NOT NULL THEN 3
            ELSE array_position(ARRAY['odds', 'locked', 'settled'], e.kind) - 1 END,
       pg_temp.id_text(e.entry_id),
       CASE WHEN e.snap IS NULL THEN pg_temp.id_text(e.event_id) END
FROM old_events e JOIN stream_cursors c USING (group_key)
"""
CONVERT_CHANGES = """
INSERT INTO odds_changes (odd_key, source_ts, ev, price, points, settlement, settled_at, exact)
SELECT odd_key(h.id), h.source_ts,
       -- PostgreSQL gives <<, | and & one precedence, left to right: every group in ().
       (e.id << 4)
       | ((array_position(ARRAY['odds', 'locked', 'settled'], h.kind) - 1) << 2)
       | (CASE WHEN h.is_main IS NULL THEN 0 WHEN h.is_main THEN 2 ELSE 1 END),
       h.price, h.points, s.code, h.settled_at,
       CASE WHEN h.price::real::text::float8 IS DISTINCT FROM h.price
              OR h.points::real::text::float8 IS DISTINCT FROM h.points
            THEN ARRAY[h.price, h.points] END
FROM odds_history h
JOIN old_events e ON e.group_key = h.group_key AND e.entry_id = h.entry_id
    AND e.kind = h.kind AND e.event_id = h.event_id AND e.received_at = h.received_at
    AND e.snap IS NOT DISTINCT FROM (CASE WHEN h.event_id = 'snapshot' THEN h.history_id END)
LEFT JOIN settlements s ON s.settlement = h.settlement
"""
MARKS = """
INSERT INTO history_marks (group_no, entry_key)
SELECT group_no, max(entry_key) FROM change_events WHERE kind < 3 AND entry_text IS NULL
GROUP BY group_no
"""

VIEWS = {
    "odds_history": f"""
SELECT o.id,
       (ARRAY['odds', 'locked', 'settled'])[((c.ev >> 2) & 3) + 1] AS kind,
       coalesce(o.stream, g.stream) AS stream,
       o.fixture_id,
       {PRICE} AS price,
       {POINTS} AS points,
       (ARRAY[NULL, false, true]::boolean[])[(c.ev & 3) + 1] AS is_main,
       (ARRAY['open', 'locked', 'settled'])[((c.ev >> 2) & 3) + 1] AS status,
       s.settlement,
       c.settled_at,
       c.source_ts,
       coalesce(e.entry_text, (e.entry_key >> 20) || '-' || (e.entry_key & {SEQ_MASK}))
           AS entry_id,
       CASE WHEN e.kind = 3 THEN 'snapshot'
            ELSE coalesce(e.sse_text, (e.sse_key >> 20) || '-' || (e.sse_key & {SEQ_MASK}))
       END AS event_id,
       g.group_key,
       {ORIGIN} + (c.ev >> 12) * interval '1 microsecond' AS received_at,
       c.odd_key
FROM odds_changes c
LEFT JOIN odds o ON o.odd_key = c.odd_key
LEFT JOIN change_events e ON e.id = c.ev >> 4
LEFT JOIN stream_cursors g ON g.group_no = e.group_no
LEFT JOIN settlements s ON s.code = c.settlement
""",
    "open_odds": """
SELECT o.id, o.stream, o.sportsbook, o.sport, o.league, o.fixture_id,
       f.home_team_display, f.away_team_display, f.start_date, f.status AS fixture_status,
       o.market, o.name, o.selection, o.selection_line, o.points, o.price, o.is_main,
       o.is_live, o.source_ts, o.updated_at
FROM odds o LEFT JOIN fixtures f USING (fixture_id)
WHERE o.status = 'open'
""",
    "settled_odds": """
SELECT o.id, o.stream, o.sportsbook, o.sport, o.league, o.fixture_id,
       f.home_team_display, f.away_team_display, f.start_date,
       o.market, o.name, o.selection, o.points, o.price AS last_price, o.settlement,
       o.settled_at, o.source_ts
FROM odds o LEFT JOIN fixtures f USING (fixture_id)
WHERE o.status = 'settled'
""",
}
# A fixture's line movement over a time window, through the (odd_key, half hour) index: the
# buckets of the window are named, so no partition is scanned whole.
LINE_MOVEMENT = f"""
CREATE FUNCTION line_movement(fixture text, since timestamptz, until timestamptz)
RETURNS TABLE (source_ts timestamptz, id text, sportsbook text, market text, name text,
               kind text, price double precision, points double precision, is_main boolean)
LANGUAGE plpgsql STABLE SET extra_float_digits = 1 AS $f$
BEGIN
    -- extra_float_digits = 1: float4 text is its shortest exact form whatever the caller set.
    -- The window's half hours as literals: the planner then probes the (odd_key, half hour)
    -- index once per odd of the fixture (LATERAL ... OFFSET 0 keeps that nested loop),
    -- whatever expressions the caller passed; with parameters it took the BRIN index and a
    -- hash join over every change of the hour instead (33 ms against 8 on 20 M rows).
    RETURN QUERY EXECUTE format($q$
        SELECT c.source_ts, o.id, o.sportsbook, o.market, o.name,
               (ARRAY['odds', 'locked', 'settled'])[((c.ev >> 2) & 3) + 1],
               {PRICE},
               {POINTS},
               (ARRAY[NULL, false, true]::boolean[])[(c.ev & 3) + 1]
        FROM odds o
        CROSS JOIN LATERAL (
            SELECT h.source_ts, h.ev, h.price, h.points, h.exact FROM odds_changes h
            WHERE h.odd_key = o.odd_key
              AND date_bin('00:30:00'::interval, h.source_ts,
                           '2000-01-01 00:00:00+00'::timestamp with time zone) = ANY (%L)
              AND h.source_ts >= %L AND h.source_ts < %L
            OFFSET 0
        ) c
        WHERE o.fixture_id = %L
        ORDER BY c.source_ts, o.id COLLATE "C"
    $q$, ARRAY(SELECT generate_series(
            date_bin('00:30:00'::interval, since, '2000-01-01 00:00:00+00'::timestamptz),
            until - interval '1 microsecond', '00:30:00'::interval)),
         since, until, fixture);
END
$f$
"""
VIEW_COMMENTS = {
    "odds_history": "Readable history, one row per stored change (0004's columns): kind, "
    "price and points exact, entry and SSE ids as text, when it was received",
    "open_odds": "Current open odds with their fixture's teams, start and status",
    "settled_odds": "Settled odds with their settlement and their last price",
}
# The comments, as models.py has them when this revision was written (long lines: data).
TABLE_COMMENTS = {
    "change_events": "The stream events (and snapshot rows) that carried odds_changes rows",
    "dead_letters": "Events (or single odds) that could not be stored, kept for inspection",
    "fixture_status_history": "Every fixture-status event: status and start time changes",
    "fixtures": "Fixtures: a row as soon as an odd of it is stored, details from the feed and REST",
    "history_marks": "internal: at or below its mark, a group's events are checked against history",
    "odds": "Current state: one row per odd, newer events win (see the README)",
    "odds_changes": "History of every odd: one row per stored change (read it through odds_history)",
    "settlements": "Settlement texts by code (the writer adds new ones as they come)",
    "stream_cursors": "One row per connection group: the committed position in its stream",
}
COLUMN_COMMENTS = {
    "change_events.id": "microseconds since 2020-01-01 UTC when received << 8 | writer slot << 4 | n",
    "change_events.entry_key": "the entry id <ms>-<seq> as ms << 20 | seq",
    "change_events.sse_key": "the SSE id, encoded alike; null for snapshots",
    "change_events.group_no": "stream_cursors.group_no",
    "change_events.kind": "0 odds, 1 locked, 2 settled event; 3 a REST snapshot row",
    "change_events.entry_text": "the entry id as received, when it is not canonical",
    "change_events.sse_text": "the SSE id as received, when it is not canonical",
    "dead_letters.dead_letter_id": "insertion order",
    "dead_letters.group_key": "stream_cursors.group_key",
    "dead_letters.event_type": "the SSE event type",
    "dead_letters.event_id": "the SSE id: line, empty when none",
    "dead_letters.reason": "invalid_json, wrong_type, too_large, ...",
    "dead_letters.detail": "what was wrong, in words",
    "dead_letters.payload": "the event data, truncated",
    "dead_letters.received_at": "when it was received",
    "fixture_status_history.history_id": "insertion order",
    "fixture_status_history.fixture_id": "fixtures.fixture_id",
    "fixture_status_history.game_id": "the vendor's game id",
    "fixture_status_history.sport": "e.g. basketball",
    "fixture_status_history.league": "e.g. NBA",
    "fixture_status_history.old_status": "status before; null: no status change",
    "fixture_status_history.new_status": "status after; null: no status change",
    "fixture_status_history.old_start_date": "start before; null: no start change",
    "fixture_status_history.new_start_date": "start after; null: no start change",
    "fixture_status_history.source_ts": "the vendor's timestamp",
    "fixture_status_history.entry_id": "the event's entry id",
    "fixture_status_history.group_key": "stream_cursors.group_key",
    "fixture_status_history.received_at": "when it was received",
    "fixtures.fixture_id": "the vendor's fixture id",
    "fixtures.game_id": "the vendor's game id",
    "fixtures.sport": "e.g. basketball",
    "fixtures.league": "e.g. NBA",
    "fixtures.home_team_display": "home team (or first player) as displayed",
    "fixtures.away_team_display": "away team (or second player) as displayed",
    "fixtures.start_date": "scheduled start",
    "fixtures.status": "lower case: unplayed, live, half, completed, ...",
    "fixtures.source_ts": "the vendor's timestamp of the newest event applied",
    "fixtures.entry_id": "entry id of the newest event applied",
    "fixtures.updated_at": "when this row last changed here",
    "fixtures.order_key": "internal: newest event applied",
    "fixtures.status_order_key": "internal: newest status change applied",
    "history_marks.group_no": "stream_cursors.group_no",
    "history_marks.entry_key": "the highest entry key written to history for the group (replay guard)",
    "odds.id": "the vendor's odd id; opaque, never parsed",
    "odds.odd_id": "the vendor's odd_id (id without the book prefix)",
    "odds.stream": "copilot or odds (the regular stream)",
    "odds.sportsbook": "the book; null on the copilot stream",
    "odds.fixture_id": "fixtures.fixture_id",
    "odds.game_id": "the vendor's game id",
    "odds.sport": "e.g. basketball",
    "odds.league": "e.g. NBA",
    "odds.market": "e.g. Point Spread",
    "odds.name": "the selection as displayed, e.g. Celtics -3.5",
    "odds.selection": "team or player of the selection",
    "odds.selection_line": "over, under or empty",
    "odds.points": "the line (spread or total); null on moneylines",
    "odds.price": "the price in the stream's odds_format: American odds (e.g. -110, +150) unless the stream config sets another format",
    "odds.is_main": "the main line of its market",
    "odds.is_live": "in-play odd (true) or pre-match (false)",
    "odds.player_id": "null when empty",
    "odds.team_id": "null when empty",
    "odds.grouping_key": "the vendor's grouping of alternate lines",
    "odds.version_id": "the vendor's version of the odd",
    "odds.status": "open, locked (suspended) or settled",
    "odds.settlement": "Won, Lost, Refunded, Half Won, Half Lost, Pending, ...",
    "odds.settled_at": "when the vendor settled it",
    "odds.source_ts": "the vendor's timestamp of the newest event applied",
    "odds.entry_id": "entry id of the newest event applied",
    "odds.updated_at": "when this row last changed here",
    "odds.order_key": "internal: newest event applied",
    "odds.price_order_key": "internal: newest odds/locked event applied",
    "odds.settle_order_key": "internal: newest settled event applied",
    "odds.odd_key": "odd_key(id): the 64-bit key odds_changes rows carry; join on it",
    "odds_changes.odd_key": "odds.odd_key of the odd",
    "odds_changes.source_ts": "the vendor's timestamp of the change",
    "odds_changes.ev": "change_events.id << 4 | kind << 2 | main (kind 0 odds, 1 locked, 2 settled; main 0 unknown, 1 false, 2 true); (ev >> 12) microseconds after 2020-01-01 UTC is when it was received",
    "odds_changes.price": "the price in the stream's odds_format: American odds (e.g. -110, +150) unless the stream config sets another format; float4: exact as price::text::float8",
    "odds_changes.points": "the line; float4: exact as points::text::float8",
    "odds_changes.settlement": "settlements.code, on settled rows",
    "odds_changes.settled_at": "when the vendor settled it, on settled rows",
    "odds_changes.exact": "{price, points} as received, only when float4 cannot hold them exactly",
    "settlements.code": "odds_changes.settlement",
    "settlements.settlement": "the vendor's text",
    "stream_cursors.group_key": "the connection group",
    "stream_cursors.stream": "copilot or odds",
    "stream_cursors.sport": "the group's sport",
    "stream_cursors.leagues": "the group's leagues",
    "stream_cursors.last_entry_id": "sent as last_entry_id on reconnect",
    "stream_cursors.last_event_id": "the SSE id: of the same event (Last-Event-ID)",
    "stream_cursors.cursor_key": "internal: entry id as a sortable key",
    "stream_cursors.last_event_at": "when the newest committed event was received",
    "stream_cursors.updated_at": "when this row last changed",
    "stream_cursors.group_no": "the group's number in change_events",
}


def _history_tables() -> None:
    op.create_table(
        "change_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("entry_key", sa.BigInteger(), nullable=False),
        sa.Column("sse_key", sa.BigInteger(), nullable=True),
        sa.Column("group_no", sa.SmallInteger(), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("entry_text", sa.Text(), nullable=True),
        sa.Column("sse_text", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_change_events"),
        postgresql_partition_by="RANGE (id)",
    )
    op.create_table(
        "odds_changes",
        sa.Column("odd_key", sa.BigInteger(), nullable=False),
        sa.Column("source_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ev", sa.BigInteger(), nullable=False),
        sa.Column("price", sa.REAL(), nullable=True),
        sa.Column("points", sa.REAL(), nullable=True),
        sa.Column("settlement", sa.SmallInteger(), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exact", sa.ARRAY(sa.Double()), nullable=True),
        postgresql_partition_by="RANGE (source_ts)",
    )
    # (odd, half hour): one index serves "an odd (or a fixture's odds) over a time window";
    # the keys repeat within a half hour, so btree deduplication packs them (16 B a row).
    op.execute(
        "CREATE INDEX ix_odds_changes_odd_key_bucket ON odds_changes (odd_key, "
        "date_bin('00:30:00'::interval, source_ts, '2000-01-01 00:00:00+00'::timestamp with time zone))"
    )
    op.execute(
        "CREATE INDEX ix_odds_changes_source_ts ON odds_changes USING brin (source_ts) "
        "WITH (pages_per_range = 32)"
    )
    # Rows of a day without a partition land here; the daemon creates the days ahead.
    op.execute("CREATE TABLE odds_changes_default PARTITION OF odds_changes DEFAULT")
    op.execute("CREATE TABLE change_events_default PARTITION OF change_events DEFAULT")


def _lookups() -> None:
    op.create_table(
        "settlements",
        sa.Column("code", sa.SmallInteger(), sa.Identity(start=100), nullable=False),
        sa.Column("settlement", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_settlements"),
        sa.UniqueConstraint("settlement", name="uq_settlements_settlement"),
    )
    op.execute(
        "INSERT INTO settlements (code, settlement) VALUES "
        + ", ".join(f"({i}, '{s}')" for i, s in enumerate(SETTLEMENTS, 1))
    )
    op.create_table(
        "history_marks",
        sa.Column("group_no", sa.SmallInteger(), nullable=False),
        sa.Column("entry_key", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("group_no", name="pk_history_marks"),
    )


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _comments() -> None:
    # COMMENT takes no bind parameters: literals, quoted here (the texts are this file's own).
    for table, text in TABLE_COMMENTS.items():
        op.execute(f"COMMENT ON TABLE {table} IS {_quoted(text)}")
    for column, text in COLUMN_COMMENTS.items():
        op.execute(f"COMMENT ON COLUMN {column} IS {_quoted(text)}")
    for view, text in VIEW_COMMENTS.items():
        op.execute(f"COMMENT ON VIEW {view} IS {_quoted(text)}")
    op.execute(COMMENT_ODD_KEY)
    op.execute(
        "COMMENT ON FUNCTION line_movement(text, timestamptz, timestamptz) IS 'Every stored "
        "change of every odd of a fixture from since to until (exact prices), by the index'"
    )


def upgrade() -> None:
    """Apply this revision."""
    op.execute("SET LOCAL extra_float_digits = 1")  # float4 text is then shortest and exact
    op.execute(ODD_KEY)
    op.add_column("odds", sa.Column("odd_key", sa.BigInteger(), nullable=True))
    op.execute("UPDATE odds SET odd_key = odd_key(id)")
    op.alter_column("odds", "odd_key", nullable=False)
    op.create_unique_constraint("uq_odds_odd_key", "odds", ["odd_key"])
    op.execute(
        "ALTER TABLE stream_cursors ADD COLUMN group_no smallint NOT NULL "
        "GENERATED BY DEFAULT AS IDENTITY"
    )
    op.create_unique_constraint("uq_stream_cursors_group_no", "stream_cursors", ["group_no"])
    _lookups()
    _history_tables()
    # 0004's rows: groups and settlement texts it names, then events, then the changes.
    op.execute(
        "INSERT INTO stream_cursors (group_key, stream, sport, leagues) "
        "SELECT DISTINCT group_key, stream, '', '{}'::text[] FROM odds_history ON CONFLICT DO NOTHING"
    )
    op.execute(
        "INSERT INTO settlements (settlement) SELECT DISTINCT settlement FROM odds_history "
        "WHERE settlement IS NOT NULL ON CONFLICT DO NOTHING"
    )
    for function in ENTRY_FUNCTIONS:
        op.execute(function)
    op.execute(OLD_EVENTS)
    op.execute(CONVERT_EVENTS)
    op.execute(CONVERT_CHANGES)
    op.execute(MARKS)
    op.execute("DROP TABLE odds_history")  # its partitions and sequence go with it
    for view, body in VIEWS.items():
        op.execute(f"CREATE VIEW {view} AS {body}")
    op.execute(LINE_MOVEMENT)
    _comments()


OLD_HISTORY = """
CREATE SEQUENCE odds_history_seq;
CREATE TABLE odds_history (
    history_id bigint NOT NULL DEFAULT nextval('odds_history_seq'::regclass),
    id text NOT NULL, kind text NOT NULL, stream text NOT NULL, fixture_id text,
    price double precision, points double precision, is_main boolean, status text NOT NULL,
    settlement text, settled_at timestamptz, source_ts timestamptz NOT NULL,
    entry_id text NOT NULL, event_id text NOT NULL, group_key text NOT NULL,
    received_at timestamptz NOT NULL,
    -- The name 0004 gave it (its naming convention doubled the prefix).
    CONSTRAINT ck_odds_history_ck_odds_history_kind CHECK (kind IN ('odds', 'locked', 'settled')),
    CONSTRAINT pk_odds_history PRIMARY KEY (history_id, source_ts),
    CONSTRAINT uq_odds_history_id_entry_id_kind_source_ts UNIQUE (id, entry_id, kind, source_ts)
) PARTITION BY RANGE (source_ts);
ALTER SEQUENCE odds_history_seq OWNED BY odds_history.history_id;
CREATE TABLE odds_history_default PARTITION OF odds_history DEFAULT;
COMMENT ON COLUMN odds_history.id IS 'odds.id of the odd';
COMMENT ON COLUMN odds_history.kind IS 'odds, locked or settled';
COMMENT ON COLUMN odds_history.event_id IS 'the SSE id: line';
"""
OLD_COLUMNS = (
    "id, kind, stream, fixture_id, price, points, is_main, status, settlement, settled_at, "
    "source_ts, entry_id, event_id, group_key, received_at"
)


# What the tables before this revision said of their columns: the downgrade puts it back.
OLDER_TABLES = ("odds", "fixtures", "fixture_status_history", "stream_cursors", "dead_letters")
ADDED_COLUMNS = {"odds.odd_key", "stream_cursors.group_no"}
COMMENTS_0004 = {
    "dead_letters.event_id": "the SSE id: line, empty when none",
    "dead_letters.reason": "invalid_json, wrong_type, too_large, ...",
    "dead_letters.payload": "the event data, truncated",
    "fixtures.status": "lower case: unplayed, live, half, completed, ...",
    "fixtures.order_key": "internal: newest event applied",
    "fixtures.status_order_key": "internal: newest status change applied",
    "odds.id": "the vendor's odd id; opaque, never parsed",
    "odds.stream": "copilot or odds",
    "odds.sportsbook": "null on the copilot stream",
    "odds.order_key": "internal: newest event applied",
    "odds.price_order_key": "internal: newest odds/locked event applied",
    "odds.settle_order_key": "internal: newest settled event applied",
    "stream_cursors.last_entry_id": "sent as last_entry_id on reconnect",
    "stream_cursors.last_event_id": "the SSE id: of the same event",
    "stream_cursors.cursor_key": "internal: entry id as a sortable key",
}


def downgrade() -> None:
    """Revert this revision: 0004's history table, filled from the view, and nothing new."""
    op.execute("ALTER VIEW odds_history RENAME TO odds_history_new")
    for statement in OLD_HISTORY.split(";\n"):
        if statement.strip():
            op.execute(statement)
    op.execute(
        f"INSERT INTO odds_history ({OLD_COLUMNS}) SELECT {OLD_COLUMNS} FROM odds_history_new "
        "WHERE id IS NOT NULL ORDER BY received_at, source_ts"
    )
    for view in ("odds_history_new", "open_odds", "settled_odds"):
        op.execute(f"DROP VIEW {view}")
    for table in ("odds_changes", "change_events", "history_marks", "settlements"):
        op.execute(f"DROP TABLE {table}")
    op.drop_constraint("uq_stream_cursors_group_no", "stream_cursors")
    op.drop_column("stream_cursors", "group_no")
    op.drop_constraint("uq_odds_odd_key", "odds")
    op.drop_column("odds", "odd_key")
    op.execute("DROP FUNCTION line_movement(text, timestamptz, timestamptz)")
    op.execute("DROP FUNCTION odd_key(text)")
    for table in OLDER_TABLES:
        op.execute(f"COMMENT ON TABLE {table} IS NULL")
    for column in COLUMN_COMMENTS:
        if column.split(".")[0] in OLDER_TABLES and column not in ADDED_COLUMNS:
            text = COMMENTS_0004.get(column)
            op.execute(f"COMMENT ON COLUMN {column} IS {'NULL' if text is None else _quoted(text)}")
