# ruff: noqa: E501
"""history you can trust: the gap ledger (stream_gaps and its work queue), ownership epochs
for fencing, snapshot and repaired rows without made-up entry ids, views for analysts

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 22:00:00

Rows made from REST show no entry id in odds_history any more (a made-up ``<ms>-0`` could be
another change's); rows stored before keep theirs in change_events (the view hides it), so
the downgrade shows them again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ORIGIN = "timestamptz '2020-01-01 00:00:00+00'"
SEQ_MASK = 1048575


def _exact(column: str, index: int) -> str:
    """As in 0005: a stored price or points as the float8 the feed sent."""
    value = f"c.{column}"
    return (
        f"coalesce(c.exact[{index}], CASE WHEN {value} * 2 = trunc({value} * 2) "
        f"AND abs({value}) < 8388608 THEN {value}::float8 ELSE {value}::text::float8 END)"
    )


# Kinds 3 (a REST snapshot row) and 4 (a row repaired from the vendor's history) are rows we
# made from REST, not stream events: they carry no entry or SSE id.
ODDS_HISTORY = f"""
SELECT o.id,
       (ARRAY['odds', 'locked', 'settled'])[((c.ev >> 2) & 3) + 1] AS kind,
       coalesce(o.stream, g.stream) AS stream,
       o.fixture_id,
       {_exact("price", 1)} AS price,
       {_exact("points", 2)} AS points,
       (ARRAY[NULL, false, true]::boolean[])[(c.ev & 3) + 1] AS is_main,
       (ARRAY['open', 'locked', 'settled'])[((c.ev >> 2) & 3) + 1] AS status,
       s.settlement,
       c.settled_at,
       c.source_ts,
       CASE WHEN e.kind < 3 THEN
           coalesce(e.entry_text, (e.entry_key >> 20) || '-' || (e.entry_key & {SEQ_MASK}))
       END AS entry_id,
       CASE e.kind WHEN 3 THEN 'snapshot' WHEN 4 THEN 'repair'
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
"""
ODDS_HISTORY_0005 = f"""
SELECT o.id,
       (ARRAY['odds', 'locked', 'settled'])[((c.ev >> 2) & 3) + 1] AS kind,
       coalesce(o.stream, g.stream) AS stream,
       o.fixture_id,
       {_exact("price", 1)} AS price,
       {_exact("points", 2)} AS points,
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
"""

HISTORY_GAPS = """
SELECT g.gap_id, g.group_key, c.stream, c.sport, c.leagues, g.cause, g.from_ts, g.until_ts,
       g.state, g.detail, g.odds_to_repair, g.odds_repaired, g.changes_added,
       g.historical_calls, g.opened_at, g.closed_at
FROM stream_gaps g JOIN stream_cursors c USING (group_key)
"""
# Per fixture: every gap of a group that carries its league and stream and is not repaired.
FIXTURE_HISTORY_GAPS = """
SELECT f.fixture_id, f.league, g.gap_id, g.group_key, c.stream, g.cause, g.from_ts,
       g.until_ts, g.state, g.detail
FROM fixtures f
JOIN stream_cursors c ON f.league = ANY (c.leagues) AND (f.sport IS NULL OR f.sport = c.sport)
JOIN stream_gaps g ON g.group_key = c.group_key
WHERE g.state <> 'repaired'
"""
HISTORY_COMPLETE = """
CREATE FUNCTION history_complete(fixture text, since timestamptz, until timestamptz)
RETURNS boolean
LANGUAGE sql STABLE
RETURN NOT EXISTS (
    SELECT 1 FROM fixture_history_gaps h
    WHERE h.fixture_id = fixture
      AND h.from_ts < until AND coalesce(h.until_ts, now()) > since)
"""
COMMENTS = {
    "TABLE stream_gaps": "The gap ledger: every stretch of a group's stream the daemon may have missed, and its repair",
    "COLUMN stream_gaps.gap_id": "insertion order",
    "COLUMN stream_gaps.group_key": "stream_cursors.group_key",
    "COLUMN stream_gaps.cause": "start (a process took the group: a restart or a takeover), reconnect (the vendor did not visibly replay), failover (the database lost commits), fenced (this process lost the group while it wrote)",
    "COLUMN stream_gaps.from_ts": "history is complete up to here: the vendor time of the last event before the gap",
    "COLUMN stream_gaps.until_ts": "and again from here: when the stream was back (null while it is not)",
    "COLUMN stream_gaps.state": "open (not yet scoped by a snapshot), repairing, repaired, unrepairable (detail says why)",
    "COLUMN stream_gaps.detail": "how it was closed, or why it cannot be",
    "COLUMN stream_gaps.odds_to_repair": "odds the snapshot showed may have changed during the gap",
    "COLUMN stream_gaps.odds_repaired": "of those, whose history was fetched and stored",
    "COLUMN stream_gaps.changes_added": "history rows the repair added",
    "COLUMN stream_gaps.historical_calls": "calls to the vendor's historical odds endpoint spent on it",
    "COLUMN stream_gaps.opened_at": "when the gap was recorded",
    "COLUMN stream_gaps.closed_at": "when it was repaired or found unrepairable",
    "COLUMN stream_gaps.updated_at": "when this row last changed",
    "TABLE stream_gap_odds": "internal: the repair's work queue, an odd whose history a gap still needs",
    "COLUMN stream_gap_odds.gap_id": "stream_gaps.gap_id",
    "COLUMN stream_gap_odds.odd_id": "odds.id",
    "COLUMN stream_gap_odds.done": "its history was fetched: a later snapshot does not queue it again",
    "COLUMN stream_cursors.epoch": "the group's ownership: every takeover increases it, and a flush commits only under the epoch it was read with (fencing)",
    "COLUMN odds.entry_id": "entry id of the newest event applied; null when it came from REST (a snapshot or a repair)",
    "COLUMN change_events.kind": "0 odds, 1 locked, 2 settled event; 3 a REST snapshot row; 4 a row repaired from the vendor's history",
    "COLUMN change_events.entry_key": "the entry id <ms>-<seq> as ms << 20 | seq; 0 for kinds 3 and 4 (no entry id; rows from before 0006 keep a made-up one, not shown)",
    "VIEW odds_history": "Readable history, one row per stored change: kind, price and points exact, entry and SSE ids as text (entry_id null and event_id snapshot or repair for rows made from REST), when it was received",
    "VIEW history_gaps": "The gap ledger with each group's stream, sport and leagues",
    "VIEW fixture_history_gaps": "Per fixture: the gaps not repaired (open, repairing or unrepairable) of the groups that carry it; filter by from_ts/until_ts for a time range",
}
COMMENTS_0005 = {
    "COLUMN odds.entry_id": "entry id of the newest event applied",
    "COLUMN change_events.kind": "0 odds, 1 locked, 2 settled event; 3 a REST snapshot row",
    "COLUMN change_events.entry_key": "the entry id <ms>-<seq> as ms << 20 | seq",
    "VIEW odds_history": "Readable history, one row per stored change (0004's columns): kind, price and points exact, entry and SSE ids as text, when it was received",
}


# The daemon now deletes from three tables: a row made from REST that the stream's row of the
# same change replaces (and its event), and the repair's finished work. Every role that may
# write history (the daemon's, made by deploy/postgres/init-roles.sh) gets DELETE on exactly
# these; the owner has it anyway.
DELETES_FROM = ("odds_changes", "change_events", "stream_gap_odds")
GRANT_DELETE = """
DO $$
DECLARE r name;
BEGIN
    FOR r IN SELECT rolname FROM pg_roles
             WHERE has_table_privilege(oid, 'odds_changes', 'INSERT')
               AND NOT rolsuper AND oid <> (SELECT relowner FROM pg_class
                                            WHERE oid = 'odds_changes'::regclass)
    LOOP
        EXECUTE format('GRANT DELETE ON {tables} TO %I', r);
    END LOOP;
END $$
"""


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upgrade() -> None:
    """Apply this revision."""
    op.add_column(
        "stream_cursors",
        sa.Column("epoch", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.alter_column("odds", "entry_id", nullable=True)
    op.create_table(
        "stream_gaps",
        sa.Column("gap_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("group_key", sa.Text(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("from_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until_ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.Text(), server_default=sa.text("'open'"), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("odds_to_repair", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("odds_repaired", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("changes_added", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("historical_calls", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "opened_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "state IN ('open', 'repairing', 'repaired', 'unrepairable')",
            name="ck_stream_gaps_state",
        ),
        sa.PrimaryKeyConstraint("gap_id", name="pk_stream_gaps"),
    )
    op.create_index("ix_stream_gaps_group_key_state", "stream_gaps", ["group_key", "state"])
    op.create_table(
        "stream_gap_odds",
        sa.Column("gap_id", sa.BigInteger(), nullable=False),
        sa.Column("odd_id", sa.Text(), nullable=False),
        sa.Column("done", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("gap_id", "odd_id", name="pk_stream_gap_odds"),
    )
    op.execute(f"CREATE OR REPLACE VIEW odds_history AS {ODDS_HISTORY}")
    op.execute(f"CREATE VIEW history_gaps AS {HISTORY_GAPS}")
    op.execute(f"CREATE VIEW fixture_history_gaps AS {FIXTURE_HISTORY_GAPS}")
    op.execute(HISTORY_COMPLETE)
    op.execute(GRANT_DELETE.replace("{tables}", ", ".join(DELETES_FROM)))
    for target, text in COMMENTS.items():
        op.execute(f"COMMENT ON {target} IS {_quoted(text)}")
    op.execute(
        "COMMENT ON FUNCTION history_complete(text, timestamptz, timestamptz) IS 'Whether "
        "history holds every change of this fixture from since to until: no gap of its groups "
        "that overlaps the window is open, repairing or unrepairable'"
    )


def downgrade() -> None:
    """Revert this revision: the ledger, the epochs and the views go; rows made from REST get
    0005's made-up entry ids back (their time's milliseconds, sequence 0)."""
    op.execute(
        GRANT_DELETE.replace(
            "GRANT DELETE ON {tables} TO", "REVOKE DELETE ON {tables} FROM"
        ).replace("{tables}", ", ".join(DELETES_FROM[:2]))
    )
    op.execute("DROP FUNCTION history_complete(text, timestamptz, timestamptz)")
    op.execute("DROP VIEW fixture_history_gaps")
    op.execute("DROP VIEW history_gaps")
    op.execute(f"CREATE OR REPLACE VIEW odds_history AS {ODDS_HISTORY_0005}")
    op.drop_table("stream_gap_odds")
    op.drop_index("ix_stream_gaps_group_key_state", "stream_gaps")
    op.drop_table("stream_gaps")
    # Rows made from REST since 0006 get an entry id as 0005 made them: <ms>-0 of their time
    # (those from before kept theirs: the view only hid them).
    op.execute(
        "UPDATE change_events e SET kind = 3, "
        "entry_key = floor(extract(epoch FROM c.source_ts) * 1000)::bigint << 20 "
        "FROM odds_changes c WHERE e.kind >= 3 AND e.entry_key = 0 AND e.id = (c.ev >> 4)"
    )
    op.execute(
        "UPDATE odds o SET entry_id = floor(extract(epoch FROM source_ts) * 1000)::bigint || '-0' "
        "WHERE entry_id IS NULL"
    )
    op.alter_column("odds", "entry_id", nullable=False)
    op.drop_column("stream_cursors", "epoch")
    for target, text in COMMENTS_0005.items():
        op.execute(f"COMMENT ON {target} IS {_quoted(text)}")
