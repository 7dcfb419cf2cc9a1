"""Every SQL statement the daemon runs, by name. Column lists are the COPY layouts."""

from __future__ import annotations

# --- staging -------------------------------------------------------------------------------
# Temporary tables live per connection and are emptied at commit, so the single writer
# connection creates them once and every flush COPYs into empty tables.

STAGE_CHANGES = "stage_changes"
STAGE_EVENTS = "stage_events"
STAGE_ODDS = "stage_odds"
STAGE_FIXTURE_HISTORY = "stage_fixture_history"
STAGE_FIXTURES = "stage_fixtures"
# Targets of the direct COPY of history rows that cannot be stored already
# (storage/write/history.py).
ODDS_CHANGES = "odds_changes"
CHANGE_EVENTS = "change_events"

# Columns of `odds` that any newer event may refresh (kept when the newer event lacks them).
ODDS_DESCRIPTIVE = (
    "odd_id",
    "stream",
    "sportsbook",
    "fixture_id",
    "game_id",
    "sport",
    "league",
    "market",
    "name",
    "selection",
    "player_id",
    "team_id",
    "version_id",
)
# Columns only odds and locked events carry (the vendor's settled events lack them): they
# follow the newest odds-or-locked event, and a settlement never nulls them.
ODDS_PRICED = ("points", "price", "is_main", "is_live", "grouping_key", "selection_line")
ODDS_SETTLED = ("settlement", "settled_at")
ODDS_LATEST = ("status", "source_ts", "entry_id")
ODDS_COLUMNS = (
    "id",
    *ODDS_DESCRIPTIVE,
    *ODDS_PRICED,
    *ODDS_SETTLED,
    *ODDS_LATEST,
    "order_key",
    "price_order_key",
    "settle_order_key",
    "odd_key",
)

DEAD_LETTER_COLUMNS = (
    "group_key",
    "event_type",
    "event_id",
    "reason",
    "detail",
    "payload",
    "received_at",
)

FIXTURE_HISTORY_COLUMNS = (
    "fixture_id",
    "game_id",
    "sport",
    "league",
    "old_status",
    "new_status",
    "old_start_date",
    "new_start_date",
    "source_ts",
    "entry_id",
    "group_key",
    "received_at",
)
FIXTURE_DESCRIPTIVE = (
    "game_id",
    "sport",
    "league",
    "home_team_display",
    "away_team_display",
    "start_date",
)
FIXTURE_COLUMNS = (
    "fixture_id",
    *FIXTURE_DESCRIPTIVE,
    "status",
    "source_ts",
    "entry_id",
    "order_key",
    "status_order_key",
)

CREATE_STAGING = f"""
CREATE TEMP TABLE IF NOT EXISTS {STAGE_CHANGES} (
    odd_key bigint, source_ts timestamptz, ev bigint, price real, points real,
    settlement smallint, settled_at timestamptz, exact float8[], entry_key bigint,
    entry_text text, kind smallint, snapshot boolean, entry_id text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS {STAGE_EVENTS} (LIKE change_events) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS {STAGE_ODDS}
    (LIKE odds INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS {STAGE_FIXTURE_HISTORY}
    (LIKE fixture_status_history INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
ALTER TABLE {STAGE_FIXTURE_HISTORY} DROP COLUMN IF EXISTS history_id;
CREATE TEMP TABLE IF NOT EXISTS {STAGE_FIXTURES}
    (LIKE fixtures INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
"""


def _cols(columns: tuple[str, ...]) -> str:
    return ", ".join(columns)


def _when_newer(columns: tuple[str, ...], key: str, table: str, *, keep_old: bool) -> str:
    """SET items that take the incoming value only when its ``key`` is not older."""
    items = []
    for col in columns:
        new = f"COALESCE(EXCLUDED.{col}, {table}.{col})" if keep_old else f"EXCLUDED.{col}"
        items.append(
            f"{col} = CASE WHEN EXCLUDED.{key} >= COALESCE({table}.{key}, ''::bytea) "
            f"THEN {new} ELSE {table}.{col} END"
        )
    return ",\n    ".join(items)


# --- history (storage/write/history.py says which rows go which way) -----------------------

# The half-hour bucket of the (odd_key, bucket) index: a lookup names it to use the index.
BUCKET = "date_bin('00:30:00'::interval, {ts}, '2000-01-01 00:00:00+00'::timestamptz)"

# Staged rows that may be stored already: only those not stored under today's key (odd,
# source_ts, kind, entry id) go in, once each; their events go in only when a row uses them.
# REST snapshot rows are history only when they tell something new: `odds` has nothing as
# recent. Runs before the merge commits, so `odds` still holds the state before the batch.
INSERT_CHECKED = f"""
WITH fresh AS (
    INSERT INTO odds_changes
        (odd_key, source_ts, ev, price, points, settlement, settled_at, exact)
    SELECT DISTINCT ON (s.odd_key, s.source_ts, s.kind, s.entry_key, s.entry_text)
           s.odd_key, s.source_ts, s.ev, s.price, s.points, s.settlement, s.settled_at,
           s.exact
    FROM {STAGE_CHANGES} s
    WHERE NOT EXISTS (
        SELECT 1 FROM odds_changes h JOIN change_events e ON e.id = (h.ev >> 4)
        WHERE h.odd_key = s.odd_key
          AND {BUCKET.format(ts="h.source_ts")} = {BUCKET.format(ts="s.source_ts")}
          AND h.source_ts = s.source_ts
          AND ((h.ev >> 2) & 3) = s.kind
          AND e.entry_key = s.entry_key
          AND e.entry_text IS NOT DISTINCT FROM s.entry_text)
      AND (NOT s.snapshot
           -- an inferred suspension, as long as the odd is still where it was when we looked
           OR (s.kind = 1 AND EXISTS (SELECT 1 FROM odds o WHERE o.odd_key = s.odd_key
                                      AND o.source_ts = s.source_ts
                                      AND o.entry_id = s.entry_id AND o.status = 'open'))
           OR NOT EXISTS (SELECT 1 FROM odds o WHERE o.odd_key = s.odd_key
                          AND o.source_ts >= s.source_ts))
    ORDER BY s.odd_key, s.source_ts, s.kind, s.entry_key, s.entry_text, s.ev
    RETURNING ev
), used AS (
    INSERT INTO change_events
    SELECT * FROM {STAGE_EVENTS} WHERE id IN (SELECT ev >> 4 FROM fresh)
)
SELECT count(*) FROM fresh
"""

# The replay guard's marks, kept in the history transaction (never in the cursor's: a crash
# between the two commits must leave the mark at or above every stored row).
ADVANCE_MARKS = """
INSERT INTO history_marks AS m (group_no, entry_key)
SELECT * FROM unnest($1::smallint[], $2::bigint[])
ON CONFLICT (group_no) DO UPDATE SET entry_key = greatest(m.entry_key, EXCLUDED.entry_key)
"""
READ_MARKS = "SELECT group_no, entry_key FROM history_marks"
READ_GROUPS = "SELECT group_key, group_no FROM stream_cursors"
# Groups that history names before they were registered (tests; a group key of old data).
ENSURE_GROUPS = """
INSERT INTO stream_cursors (group_key, stream, sport, leagues)
SELECT k, '', '', '{}'::text[] FROM unnest($1::text[]) AS k
ON CONFLICT (group_key) DO UPDATE SET group_key = EXCLUDED.group_key
RETURNING group_key, group_no
"""
READ_SETTLEMENTS = "SELECT settlement, code FROM settlements"
# New settlement texts get a code (the writer then knows it); existing ones keep theirs.
ADD_SETTLEMENTS = """
WITH added AS (
    INSERT INTO settlements (settlement) SELECT DISTINCT unnest($1::text[])
    ON CONFLICT (settlement) DO NOTHING RETURNING settlement, code
)
SELECT settlement, code FROM added
UNION ALL SELECT settlement, code FROM settlements WHERE settlement = ANY($1::text[])
"""
# A session advisory lock in the two-int form (class, id): a writer slot per history
# connection (event ids are unique across writers), a member lock per process. Session-level,
# so it lasts exactly as long as the connection that took it.
TRY_LOCK_PAIR = "SELECT pg_try_advisory_lock($1::int, $2::int)"

# --- odds ------------------------------------------------------------------------------------

# The writer collapses a batch to one row per odd before this statement, because
# ON CONFLICT DO UPDATE refuses to touch the same row twice in one command. Each column
# group follows its own order key, so a batch holding an update and then a settlement
# keeps the update's price, and a late older event changes nothing.
MERGE_ODDS = f"""
INSERT INTO odds AS o ({_cols(ODDS_COLUMNS)}, updated_at)
SELECT {_cols(ODDS_COLUMNS)}, now() FROM {STAGE_ODDS}
-- One order in every process: two writers of overlapping odds wait, never deadlock.
ORDER BY odd_key
ON CONFLICT (id) DO UPDATE SET
    {_when_newer(ODDS_DESCRIPTIVE, "order_key", "o", keep_old=True)},
    {_when_newer(ODDS_LATEST, "order_key", "o", keep_old=False)},
    {_when_newer(ODDS_PRICED, "price_order_key", "o", keep_old=False)},
    {_when_newer(ODDS_SETTLED, "settle_order_key", "o", keep_old=False)},
    order_key = GREATEST(EXCLUDED.order_key, o.order_key),
    price_order_key = GREATEST(EXCLUDED.price_order_key, o.price_order_key),
    settle_order_key = GREATEST(EXCLUDED.settle_order_key, o.settle_order_key),
    updated_at = now()
WHERE EXCLUDED.order_key > o.order_key
   OR EXCLUDED.price_order_key > COALESCE(o.price_order_key, ''::bytea)
   OR EXCLUDED.settle_order_key > COALESCE(o.settle_order_key, ''::bytea)
"""

# --- fixtures --------------------------------------------------------------------------------

INSERT_FIXTURE_HISTORY = f"""
INSERT INTO fixture_status_history ({_cols(FIXTURE_HISTORY_COLUMNS)})
SELECT {_cols(FIXTURE_HISTORY_COLUMNS)} FROM {STAGE_FIXTURE_HISTORY}
ON CONFLICT (fixture_id, entry_id, source_ts) DO NOTHING
"""

MERGE_FIXTURES = f"""
INSERT INTO fixtures AS f ({_cols(FIXTURE_COLUMNS)}, updated_at)
SELECT {_cols(FIXTURE_COLUMNS)}, now() FROM {STAGE_FIXTURES}
ON CONFLICT (fixture_id) DO UPDATE SET
    {_when_newer(FIXTURE_DESCRIPTIVE, "order_key", "f", keep_old=True)},
    {_when_newer(("source_ts", "entry_id"), "order_key", "f", keep_old=False)},
    {_when_newer(("status",), "status_order_key", "f", keep_old=False)},
    order_key = GREATEST(EXCLUDED.order_key, f.order_key),
    status_order_key = GREATEST(EXCLUDED.status_order_key, f.status_order_key),
    updated_at = now()
WHERE EXCLUDED.order_key > f.order_key
   OR EXCLUDED.status_order_key > COALESCE(f.status_order_key, ''::bytea)
"""

# Every odd's fixture gets a row with the odd's commit: its identity from the odd, ordered below
# anything a fixture-status event or a REST listing says (the empty key), so those fill in the
# names, start time and status later. RETURNING: the fixtures seen for the first time.
ENSURE_FIXTURES = """
INSERT INTO fixtures (fixture_id, game_id, sport, league, source_ts, entry_id, order_key,
                      updated_at)
SELECT u.f, u.g, u.s, u.l, u.t, u.e, ''::bytea, now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[])
     AS u(f, g, s, l, t, e)
ON CONFLICT (fixture_id) DO NOTHING
RETURNING fixture_id
"""

# --- cursors ---------------------------------------------------------------------------------

REGISTER_GROUP = """
INSERT INTO stream_cursors (group_key, stream, sport, leagues)
VALUES ($1, $2, $3, $4)
ON CONFLICT (group_key) DO UPDATE SET stream = EXCLUDED.stream, sport = EXCLUDED.sport,
    leagues = EXCLUDED.leagues
RETURNING last_entry_id, last_event_id, group_no
"""

# A cursor only moves forward: out-of-order entry ids seen live must not pull it back.
ADVANCE_CURSORS = """
INSERT INTO stream_cursors AS c
    (group_key, stream, sport, leagues, last_entry_id, last_event_id, cursor_key,
     last_event_at, updated_at)
SELECT g, '', '', '{}', e, s, k, t, now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::timestamptz[])
     AS u(g, e, s, k, t)
ON CONFLICT (group_key) DO UPDATE SET
    last_entry_id = CASE WHEN EXCLUDED.cursor_key >= COALESCE(c.cursor_key, ''::bytea)
                         THEN EXCLUDED.last_entry_id ELSE c.last_entry_id END,
    last_event_id = CASE WHEN EXCLUDED.cursor_key >= COALESCE(c.cursor_key, ''::bytea)
                         THEN EXCLUDED.last_event_id ELSE c.last_event_id END,
    cursor_key = GREATEST(EXCLUDED.cursor_key, c.cursor_key),
    last_event_at = GREATEST(EXCLUDED.last_event_at, c.last_event_at),
    updated_at = now()
RETURNING group_key, last_entry_id, last_event_id
"""

SCHEMA_REVISION = "SELECT version_num FROM alembic_version"
# Every privilege the daemon needs on its tables ($1), and USAGE (nextval) on every sequence
# their column defaults draw from, that the current role lacks. Identity columns need no grant.
MISSING_PRIVILEGES = """
WITH need(kind, obj, priv) AS (
    SELECT 'TABLE', t, p
    FROM unnest($1::text[]) AS t, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE']) AS p
    UNION ALL
    SELECT DISTINCT 'SEQUENCE', s.oid::regclass::text, 'USAGE'
    FROM pg_attrdef ad
    JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                    AND d.refclassid = 'pg_class'::regclass
    JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'
    WHERE ad.adrelid = ANY($1::regclass[])
)
SELECT kind, obj, priv FROM need
WHERE NOT CASE kind WHEN 'TABLE' THEN has_table_privilege(obj, priv)
                    ELSE has_sequence_privilege(obj, priv) END
ORDER BY kind DESC, obj, priv
"""
TEMP_PRIVILEGE = "SELECT has_database_privilege(current_database(), 'TEMP')"
CURRENT_ROLE = "SELECT quote_ident(current_user)"
DATABASE = "SELECT quote_ident(current_database())"
PING = "SELECT 1"

# --- gap recovery ----------------------------------------------------------------------------

# The odds of these fixtures as the database has them, read before the snapshot is fetched:
# open ones the snapshot no longer returns are suspended. Filters mirror the stream's so that
# odds outside it are left alone.
ODDS_OF_FIXTURES = """
SELECT id, status, source_ts, entry_id, order_key FROM odds
WHERE fixture_id = ANY($1::text[]) AND stream = $2
  AND ($3::text[] IS NULL OR sportsbook = ANY($3::text[]))
  AND ($4::text[] IS NULL OR market = ANY($4::text[]))
"""

# Fallback when the REST fixture listing fails: fixtures the database already knows.
KNOWN_FIXTURES = """
SELECT DISTINCT fixture_id FROM odds
WHERE stream = $1 AND league = ANY($2::text[]) AND fixture_id IS NOT NULL
  AND updated_at > now() - interval '7 days'
  AND (status <> 'settled' OR updated_at > now() - $3::float8 * interval '1 hour')
"""

# --- history partitions (identifiers come from code, never from input) -----------------------

# Session-level: the upkeep commits step by step, and two processes must not interleave.
PARTITIONS_LOCK = "SELECT pg_advisory_lock(hashtext('ingestor-partitions'))"
PARTITIONS_UNLOCK = "SELECT pg_advisory_unlock(hashtext('ingestor-partitions'))"
SET_LOCAL_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', $1, true)"
LIST_PARTITIONS = """
SELECT c.relname AS name FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = $1::regclass
"""
MOVE_OUT_OF_DEFAULT = """
CREATE TEMP TABLE IF NOT EXISTS moved_rows (LIKE {table}) ON COMMIT DROP;
WITH gone AS (
    DELETE FROM {table}_default WHERE {key} >= {lo} AND {key} < {hi} RETURNING *
) INSERT INTO moved_rows SELECT * FROM gone
"""
CREATE_PARTITION = "CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ({lo}) TO ({hi})"
MOVE_BACK = "INSERT INTO {table} SELECT * FROM moved_rows; DROP TABLE moved_rows"
DROP_PARTITION = "DROP TABLE IF EXISTS {name}"
EXPIRE_DEFAULT = "DELETE FROM {table}_default WHERE {key} < {cutoff}"

# --- group leases (session advisory locks; see ingestor/coordination.py) -----------------------

TRY_GROUP = "SELECT pg_try_advisory_lock($1::bigint)"
RELEASE_GROUP = "SELECT pg_advisory_unlock($1::bigint)"
COUNT_MEMBERS = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND classid = $1::int AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
READ_CURSOR = "SELECT last_entry_id, last_event_id FROM stream_cursors WHERE group_key = $1"
