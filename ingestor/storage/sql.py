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

# --- binary COPY layouts -------------------------------------------------------------------
# The column types of the hot COPYs, which the daemon encodes itself (storage/write/pgcopy.py),
# as format_type() spells them; a test holds each to the migrated schema.
_TSTZ = "timestamp with time zone"
ODDS_CHANGES_TYPES = {
    "odd_key": "bigint",
    "source_ts": _TSTZ,
    "ev": "bigint",
    "price": "real",
    "points": "real",
    "settlement": "smallint",
    "settled_at": _TSTZ,
    "exact": "double precision[]",
}
STAGE_CHANGES_TYPES = {
    **ODDS_CHANGES_TYPES,
    "entry_key": "bigint",
    "entry_text": "text",
    "source": "smallint",
    "kind": "smallint",
    "held_key": "bytea",
}
CHANGE_EVENTS_TYPES = {
    "id": "bigint",
    "entry_key": "bigint",
    "sse_key": "bigint",
    "group_no": "smallint",
    "kind": "smallint",
    "entry_text": "text",
    "sse_text": "text",
}
ODDS_TYPES = {
    **dict.fromkeys(ODDS_DESCRIPTIVE, "text"),
    "id": "text",
    "version_id": "bigint",
    "points": "double precision",
    "price": "double precision",
    "is_main": "boolean",
    "is_live": "boolean",
    "grouping_key": "text",
    "selection_line": "text",
    "settlement": "text",
    "settled_at": _TSTZ,
    "status": "text",
    "source_ts": _TSTZ,
    "entry_id": "text",
    "order_key": "bytea",
    "price_order_key": "bytea",
    "settle_order_key": "bytea",
    "odd_key": "bigint",
}

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
    entry_text text, source smallint, kind smallint, held_key bytea
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

# Staged rows that may be stored already. A streamed row (source 0) goes in unless stored
# under today's key (odd, source_ts, kind, entry id); a row made from REST (source 3, a
# snapshot's; 4, a repair's) goes in unless that change (odd, source_ts, kind) is stored or
# staged from the stream: one change, one row. A streamed row replaces a row made from REST of
# the same change (it carries the entry id). Events go in only when a row uses them.
# REST snapshot rows are history only when they tell something new: `odds` has nothing as
# recent (this runs before the merge commits, so `odds` still holds the state before the
# batch); an inferred lock only while `odds` still holds the open row it replaces.
SAME_CHANGE = f"""h.odd_key = s.odd_key
          AND {BUCKET.format(ts="h.source_ts")} = {BUCKET.format(ts="s.source_ts")}
          AND h.source_ts = s.source_ts
          AND ((h.ev >> 2) & 3) = s.kind"""
INSERT_CHECKED = f"""
WITH twins AS (
    DELETE FROM odds_changes h USING {STAGE_CHANGES} s
    WHERE s.source = 0 AND {SAME_CHANGE}
      AND EXISTS (SELECT 1 FROM change_events e WHERE e.id = (h.ev >> 4) AND e.kind >= 3)
    RETURNING h.ev
), fresh AS (
    INSERT INTO odds_changes
        (odd_key, source_ts, ev, price, points, settlement, settled_at, exact)
    SELECT DISTINCT ON (s.odd_key, s.source_ts, s.kind, s.entry_key, s.entry_text)
           s.odd_key, s.source_ts, s.ev, s.price, s.points, s.settlement, s.settled_at,
           s.exact
    FROM {STAGE_CHANGES} s
    WHERE CASE WHEN s.source = 0 THEN NOT EXISTS (
        SELECT 1 FROM odds_changes h JOIN change_events e ON e.id = (h.ev >> 4)
        WHERE {SAME_CHANGE}
          AND e.entry_key = s.entry_key
          AND e.entry_text IS NOT DISTINCT FROM s.entry_text)
    ELSE NOT EXISTS (SELECT 1 FROM odds_changes h WHERE {SAME_CHANGE})
      AND NOT EXISTS (SELECT 1 FROM {STAGE_CHANGES} t WHERE t.source = 0
                      AND t.odd_key = s.odd_key AND t.source_ts = s.source_ts
                      AND t.kind = s.kind)
      AND (s.source = 4
           OR (s.held_key IS NOT NULL
               AND EXISTS (SELECT 1 FROM odds o WHERE o.odd_key = s.odd_key
                           AND o.order_key = s.held_key AND o.status = 'open'))
           OR (s.held_key IS NULL
               AND NOT EXISTS (SELECT 1 FROM odds o WHERE o.odd_key = s.odd_key
                               AND o.source_ts >= s.source_ts)))
    END
    ORDER BY s.odd_key, s.source_ts, s.kind, s.entry_key, s.entry_text, s.ev
    RETURNING ev
), gone AS (
    DELETE FROM change_events WHERE id IN (SELECT ev >> 4 FROM twins)
), used AS (
    INSERT INTO change_events
    SELECT * FROM {STAGE_EVENTS} WHERE id IN (SELECT ev >> 4 FROM fresh)
)
SELECT count(*) FROM fresh
"""

# Before a repair's rows are checked: the locks a snapshot inferred for its odds (an odd it
# no longer returned, "suspended" at the time of the open row it replaced) were guesses; the
# vendor's history now says what happened, so each guess the repair has a change at or after
# goes, with its event (the repair stores the real lock, when there was one).
DROP_GUESSES = f"""
WITH repaired AS (
    SELECT odd_key, max(source_ts) AS upto FROM {STAGE_CHANGES} WHERE source = 4
    GROUP BY odd_key
), guessed AS (
    DELETE FROM odds_changes h USING repaired r
    WHERE h.odd_key = r.odd_key AND h.source_ts <= r.upto AND ((h.ev >> 2) & 3) = 1
      AND EXISTS (SELECT 1 FROM change_events e WHERE e.id = (h.ev >> 4) AND e.kind = 3)
    RETURNING h.ev
)
DELETE FROM change_events WHERE id IN (SELECT ev >> 4 FROM guessed)
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

# Fencing: the epoch each group's cursor row holds, read under a lock that a takeover's claim
# (CLAIM_GROUP: FOR UPDATE) must wait for. Every transaction of a flush reads it first: a
# group whose epoch moved since its events were read is not written (the flush rolls back),
# and a claim cannot slip in between this read and the commit.
FENCE = """
SELECT group_key, epoch FROM stream_cursors WHERE group_key = ANY($1::text[])
ORDER BY group_key
FOR KEY SHARE
"""

# After the writer reconnects: the cursors as the database holds them (a failover to a
# standby that lagged loses the commits it had not received).
READ_CURSORS = """
SELECT group_key, last_entry_id, last_event_id, cursor_key FROM stream_cursors
WHERE group_key = ANY($1::text[])
"""

SCHEMA_REVISION = "SELECT version_num FROM alembic_version"
# Every privilege the daemon needs on its tables ($1), and USAGE (nextval) on every sequence
# their column defaults draw from, that the current role lacks. Identity columns need no grant.
MISSING_PRIVILEGES = """
WITH need(kind, obj, priv) AS (
    SELECT 'TABLE', t, p
    FROM unnest($1::text[]) AS t, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE']) AS p
    UNION ALL
    SELECT 'TABLE', t, 'DELETE' FROM unnest($2::text[]) AS t
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
SELECT id, status, source_ts, order_key FROM odds
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
# Retention never takes the row that explains an odd's current state (its newest change: the
# history row at the odd's source_ts), nor the event that row points at: an odd unchanged for
# longer than the retention (or sent with an old timestamp) keeps one row of history. Such
# rows of a day that is dropped move to the default partition.
EXPLAINING_ROWS = """
SELECT c.* FROM {source} c
WHERE EXISTS (SELECT 1 FROM odds o WHERE o.odd_key = c.odd_key AND o.source_ts = c.source_ts)
"""
EXPLAINING_EVENTS = f"""
SELECT e.* FROM {{source}} e
WHERE e.id IN (SELECT c.ev >> 4 FROM odds o JOIN odds_changes c ON c.odd_key = o.odd_key
               AND {BUCKET.format(ts="c.source_ts")} = {BUCKET.format(ts="o.source_ts")}
               AND c.source_ts = o.source_ts)
"""
DROP_KEEPING = """
CREATE TEMP TABLE kept_rows ON COMMIT DROP AS {keep};
DROP TABLE {name};
INSERT INTO {table} SELECT * FROM kept_rows
"""
EXPIRE_DEFAULT_KEEPING = """
DELETE FROM {table}_default d WHERE d.{key} < {cutoff}
AND NOT EXISTS (SELECT 1 FROM ({keep}) k WHERE k.{unique} = d.{unique})
"""

# --- group leases (session advisory locks; see ingestor/coordination.py) -----------------------

TRY_GROUP = "SELECT pg_try_advisory_lock($1::bigint)"
RELEASE_GROUP = "SELECT pg_advisory_unlock($1::bigint)"
COUNT_MEMBERS = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND classid = $1::int AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
# A claim: the group's epoch moves on, after every flush that read the old one has ended
# (FOR UPDATE waits for their FOR KEY SHARE); returns the new epoch and the committed cursor.
CLAIM_GROUP = """
WITH held AS (SELECT group_key FROM stream_cursors WHERE group_key = $1 FOR UPDATE)
UPDATE stream_cursors c SET epoch = c.epoch + 1
FROM held WHERE c.group_key = held.group_key
RETURNING c.epoch, c.last_entry_id, c.last_event_id
"""

# --- the gap ledger (storage/gaps.py) --------------------------------------------------------

# $6: the connection whose gap it is (null: a failover gap). The writer may have recorded it
# already, with the commit that first moved the group's cursor past it (RECORD_GAPS): then
# this is that row (the no-op update only makes RETURNING see it).
OPEN_GAP = """
INSERT INTO stream_gaps (group_key, cause, from_ts, until_ts, detail, opened_by)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (opened_by) DO UPDATE SET opened_by = excluded.opened_by
RETURNING gap_id
"""
# The gaps of the connections whose first events this flush commits, in the transaction that
# moves their groups' cursors: a crash can no longer land between the two. Gap tracking records
# the same gaps on its own connection (OPEN_GAP), whichever comes first; one row per connection.
# $6: why it cannot be repaired (then closed at once), else null.
RECORD_GAPS = """
INSERT INTO stream_gaps (group_key, cause, from_ts, until_ts, opened_by, state, detail, closed_at)
SELECT g.group_key, g.cause, g.from_ts, g.until_ts, g.opened_by,
       CASE WHEN g.why IS NULL THEN 'open' ELSE 'unrepairable' END,
       g.why,
       CASE WHEN g.why IS NULL THEN NULL ELSE now() END
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::uuid[], $6::text[])
     AS g (group_key, cause, from_ts, until_ts, opened_by, why)
ON CONFLICT (opened_by) DO NOTHING
"""
# Scoping: a snapshot of the group came back whole. Every gap of the group not closed that
# ended before the snapshot began ($4) gets the odds that may have changed since its start
# ($2 ids, $3 their snapshot times; null: an odd the snapshot no longer returns, which
# changed at some unknown time): a gap scoped before may lack an odd that appeared after its
# own snapshot. An open gap is then repairing, or repaired at once when no odd may have
# changed in it. Only while the group is still at the epoch the snapshot's rows were queued
# under ($5; 0: not fenced): a fenced flush drops them, and the repair skips an odd the
# database does not hold, so a new fixture's odds scoped by an owner that lost the group
# would be marked done with none of their history stored.
# Whether a gap had work before is its state as locked ('repairing' gaps hold pairs, 'open'
# ones none), not what this statement's snapshot shows of stream_gap_odds: a scope that
# waited on another's locks (two connections' snapshots of a group overlap) has a snapshot
# from before that one committed. Judged by it, the gap had no pairs, its own all conflicted
# (none queued), and it closed as "no odd changed during it": the 480 s soak lost 65,146
# changes that way in one run (1,366 gaps scoped with odds, then closed so).
SCOPE_GAPS = """
WITH pending AS (
    SELECT gap_id, from_ts, state FROM stream_gaps
    WHERE group_key = $1 AND state IN ('open', 'repairing') AND until_ts <= $4
      AND ($5::bigint = 0
           OR EXISTS (SELECT 1 FROM stream_cursors c WHERE c.group_key = $1 AND c.epoch = $5))
    ORDER BY gap_id
    FOR UPDATE
), work AS (
    INSERT INTO stream_gap_odds (gap_id, odd_id)
    SELECT p.gap_id, c.id
    FROM pending p CROSS JOIN unnest($2::text[], $3::timestamptz[]) AS c(id, ts)
    WHERE c.ts IS NULL OR c.ts > p.from_ts
    ON CONFLICT DO NOTHING
    RETURNING gap_id
), counted AS (
    SELECT p.gap_id, p.state, count(w.gap_id) AS n, p.state = 'repairing' AS had_work
    FROM pending p LEFT JOIN work w USING (gap_id)
    GROUP BY p.gap_id, p.state
)
UPDATE stream_gaps g
SET state = CASE WHEN c.n = 0 AND NOT c.had_work THEN 'repaired' ELSE 'repairing' END,
    odds_to_repair = g.odds_to_repair + c.n,
    detail = CASE WHEN c.n = 0 AND NOT c.had_work THEN 'no odd changed during it'
                  ELSE g.detail END,
    closed_at = CASE WHEN c.n = 0 AND NOT c.had_work THEN now() END,
    updated_at = now()
FROM counted c WHERE g.gap_id = c.gap_id
RETURNING g.gap_id, g.state, c.n AS queued
"""
# Gaps closed without repair: the vendor replayed across them (repaired), or no source of
# history exists for their stream (unrepairable). After LOCK_GAPS, in its transaction: its
# DELETE then sees the pairs of a scope that held a gap meanwhile (else they stayed for ever).
CLOSE_GAPS = """
WITH closed AS (
    UPDATE stream_gaps SET state = $2, detail = $3, closed_at = now(), updated_at = now()
    WHERE gap_id = ANY($1::bigint[]) AND state IN ('open', 'repairing')
    RETURNING gap_id
)
DELETE FROM stream_gap_odds WHERE gap_id IN (SELECT gap_id FROM closed)
"""
CLOSE_OPEN_GAPS_OF_GROUP = """
UPDATE stream_gaps SET state = $2, detail = $3, closed_at = now(), updated_at = now()
WHERE group_key = $1 AND state = 'open'
RETURNING gap_id
"""
# The repair's next odds: the oldest gaps of these groups first; each odd once, with the
# earliest start of the gaps that list it. The first $2 pending pairs in (gap, odd) order
# name the odds (an odd's first pair is its oldest gap's, so they come in the order of the
# oldest gap that lists each), then all the pending pairs of those odds alone are gathered.
# Grouping every pending pair first, as this query did before 0007, cost 455-504 ms a call on
# a ledger of 988k pending pairs; this, with 0007's partial indexes, 17.4 ms (34-37 without
# them). Its answer is a prefix of the old one's (tests/integration/test_repair_queue.py).
REPAIR_WORK = """
WITH picked AS (
    SELECT DISTINCT f.odd_id, f.group_key
    FROM (SELECT w.odd_id, g.group_key
          FROM stream_gap_odds w JOIN stream_gaps g USING (gap_id)
          WHERE g.group_key = ANY($1::text[]) AND g.state = 'repairing' AND NOT w.done
          ORDER BY w.gap_id, w.odd_id
          LIMIT $2) f
)
SELECT w.odd_id, g.group_key, min(g.from_ts) AS from_ts,
       array_agg(w.gap_id ORDER BY w.gap_id) AS gaps
FROM stream_gap_odds w JOIN stream_gaps g USING (gap_id)
WHERE w.odd_id = ANY (ARRAY(SELECT odd_id FROM picked))
  AND (w.odd_id, g.group_key) IN (SELECT odd_id, group_key FROM picked)
  AND g.state = 'repairing' AND NOT w.done
GROUP BY w.odd_id, g.group_key
ORDER BY min(w.gap_id), w.odd_id
LIMIT $2
"""
# What a repair reads of the odds it asks about: the stored rows (the history's entries lack
# most fields).
HELD_ODDS = "SELECT * FROM odds WHERE id = ANY($1::text[])"
# Rows made from repair of these odds (added = after - before a repair's commit).
REPAIRED_ROWS = """
SELECT count(*) FROM odds_changes c JOIN change_events e ON e.id = (c.ev >> 4)
WHERE c.odd_key = ANY($1::bigint[]) AND e.kind = 4
"""
# A call's work done: exactly the (gap, odd) pairs it fetched ($1, $2) are done (a pair
# queued meanwhile stays to do), the gaps count what was done and close when nothing is left.
# Done pairs stay while their gap is repairing: a later snapshot, which scopes the gap again
# (it may show an odd the gap's first snapshot could not), must not queue them again. In a
# 10-minute run with a cut every 2 s, deleting them made each snapshot queue every odd
# changed since the oldest repairing gap began (1,112 odds in one scope) and the repair
# never caught up; PRUNE_DONE drops them once the gap is repaired. Whether a gap has work
# left is asked of the call's pairs through one hashed NOT IN (left_over, computed once): as
# a correlated NOT EXISTS it scanned the call's pairs again for each pair it looked at, 4.5-5.9
# s a call of 10 odds on a ledger of 1,722 gaps x 600 odds (17,220 pairs marked), 194-216 ms
# now. The soak's repair spent most of its 13 minutes there.
REPAIRED = """
WITH done AS (
    UPDATE stream_gap_odds w SET done = true
    FROM unnest($1::bigint[], $2::text[]) AS d(gap_id, odd_id)
    WHERE w.gap_id = d.gap_id AND w.odd_id = d.odd_id AND NOT w.done
    RETURNING w.gap_id, w.odd_id
), per_gap AS (
    SELECT gap_id, count(*) AS n FROM done GROUP BY gap_id
), left_over AS MATERIALIZED (
    SELECT p.gap_id, EXISTS (
        SELECT 1 FROM stream_gap_odds w
        WHERE w.gap_id = p.gap_id AND NOT w.done
          AND (w.gap_id, w.odd_id) NOT IN (SELECT d.gap_id, d.odd_id FROM done d)) AS more
    FROM per_gap p
)
UPDATE stream_gaps g
SET odds_repaired = g.odds_repaired + p.n,
    changes_added = g.changes_added + CASE WHEN g.gap_id = $3 THEN $4 ELSE 0 END,
    historical_calls = g.historical_calls + CASE WHEN g.gap_id = $3 THEN 1 ELSE 0 END,
    state = CASE WHEN l.more THEN g.state ELSE 'repaired' END,
    closed_at = CASE WHEN l.more THEN NULL ELSE now() END,
    updated_at = now()
FROM per_gap p JOIN left_over l USING (gap_id) WHERE g.gap_id = p.gap_id
"""
PRUNE_DONE = """
DELETE FROM stream_gap_odds w USING stream_gaps g
WHERE w.gap_id = g.gap_id AND g.gap_id = ANY($1::bigint[]) AND g.state = 'repaired' AND w.done
"""
# Taken before REPAIRED, in its transaction, in the order SCOPE_GAPS takes them: a scope
# running meanwhile commits first, and REPAIRED then sees the pairs it queued (without it,
# REPAIRED could judge a gap finished on a snapshot that missed them).
LOCK_GAPS = """
SELECT gap_id FROM stream_gaps WHERE gap_id = ANY($1::bigint[]) ORDER BY gap_id FOR UPDATE
"""
STILL_OWNED = "SELECT epoch = $2 FROM stream_cursors WHERE group_key = $1"
GAP_SUMMARY = """
SELECT state, count(*) AS n, min(opened_at) AS oldest FROM stream_gaps
WHERE state <> 'repaired' GROUP BY state
"""
