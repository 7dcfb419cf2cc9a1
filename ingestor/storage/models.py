"""SQLAlchemy table models: the schema users query. Used by alembic only, never at run time.

Every table and column carries its comment (units and meaning): `\\d+ odds` in psql shows it.
"""

from __future__ import annotations

from sqlalchemy import (
    REAL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Sequence,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)

PRICE = (
    "the price in the stream's odds_format: American odds (e.g. -110, +150) unless the stream "
    "config sets another format"
)
TSTZ = DateTime(timezone=True)


def _tstz(name: str, comment: str, *, nullable: bool = True, now: bool = False) -> Column[object]:
    return Column(
        name, TSTZ, nullable=nullable, server_default=func.now() if now else None, comment=comment
    )


odds = Table(
    "odds",
    metadata,
    Column("id", Text, primary_key=True, comment="the vendor's odd id; opaque, never parsed"),
    Column("odd_id", Text, comment="the vendor's odd_id (id without the book prefix)"),
    Column("stream", Text, nullable=False, comment="copilot or odds (the regular stream)"),
    Column("sportsbook", Text, comment="the book; null on the copilot stream"),
    Column("fixture_id", Text, comment="fixtures.fixture_id"),
    Column("game_id", Text, comment="the vendor's game id"),
    Column("sport", Text, comment="e.g. basketball"),
    Column("league", Text, comment="e.g. NBA"),
    Column("market", Text, comment="e.g. Point Spread"),
    Column("name", Text, comment="the selection as displayed, e.g. Celtics -3.5"),
    Column("selection", Text, comment="team or player of the selection"),
    Column("selection_line", Text, comment="over, under or empty"),
    Column("points", Double, comment="the line (spread or total); null on moneylines"),
    Column("price", Double, comment=PRICE),
    Column("is_main", Boolean, comment="the main line of its market"),
    Column("is_live", Boolean, comment="in-play odd (true) or pre-match (false)"),
    Column("player_id", Text, comment="null when empty"),
    Column("team_id", Text, comment="null when empty"),
    Column("grouping_key", Text, comment="the vendor's grouping of alternate lines"),
    Column("version_id", BigInteger, comment="the vendor's version of the odd"),
    Column("status", Text, nullable=False, comment="open, locked (suspended) or settled"),
    Column("settlement", Text, comment="Won, Lost, Refunded, Half Won, Half Lost, Pending, ..."),
    _tstz("settled_at", "when the vendor settled it"),
    _tstz("source_ts", "the vendor's timestamp of the newest event applied", nullable=False),
    Column(
        "entry_id",
        Text,
        comment="entry id of the newest event applied; null when it came from REST (a snapshot "
        "or a repair)",
    ),
    _tstz("updated_at", "when this row last changed here", nullable=False, now=True),
    Column("order_key", LargeBinary, nullable=False, comment="internal: newest event applied"),
    Column("price_order_key", LargeBinary, comment="internal: newest odds/locked event applied"),
    Column("settle_order_key", LargeBinary, comment="internal: newest settled event applied"),
    Column(
        "odd_key",
        BigInteger,
        nullable=False,
        comment="odd_key(id): the 64-bit key odds_changes rows carry; join on it",
    ),
    CheckConstraint("status IN ('open', 'locked', 'settled')", name="status"),
    Index(None, "fixture_id"),
    UniqueConstraint("odd_key"),
    # Free room on every page lets most updates stay HOT (no index insert): measured +10%.
    postgresql_with={"fillfactor": 70},
    comment="Current state: one row per odd, newer events win (see the README)",
)

# History: the changes of every odd, packed to 56 bytes a row (24 of header), partitioned by
# day of the event's own time (source_ts); read it through the odds_history view.
odds_changes = Table(
    "odds_changes",
    metadata,
    Column("odd_key", BigInteger, nullable=False, comment="odds.odd_key of the odd"),
    _tstz("source_ts", "the vendor's timestamp of the change", nullable=False),
    Column(
        "ev",
        BigInteger,
        nullable=False,
        comment="change_events.id << 4 | kind << 2 | main (kind 0 odds, 1 locked, 2 settled; "
        "main 0 unknown, 1 false, 2 true); (ev >> 12) microseconds after 2020-01-01 UTC is "
        "when it was received",
    ),
    Column("price", REAL, comment=PRICE + "; float4: exact as price::text::float8"),
    Column("points", REAL, comment="the line; float4: exact as points::text::float8"),
    Column("settlement", SmallInteger, comment="settlements.code, on settled rows"),
    _tstz("settled_at", "when the vendor settled it, on settled rows"),
    Column(
        "exact",
        ARRAY(Double),
        comment="{price, points} as received, only when float4 cannot hold them exactly",
    ),
    Index(
        "ix_odds_changes_odd_key_bucket",
        "odd_key",
        text(
            "date_bin('00:30:00'::interval, source_ts, '2000-01-01 00:00:00+00'::timestamp "
            "with time zone)"
        ),
    ),
    Index(
        "ix_odds_changes_source_ts",
        "source_ts",
        postgresql_using="brin",
        postgresql_with={"pages_per_range": 32},
    ),
    postgresql_partition_by="RANGE (source_ts)",
    comment="History of every odd: one row per stored change (read it through odds_history)",
)

change_events = Table(
    "change_events",
    metadata,
    Column(
        "id",
        BigInteger,
        primary_key=True,
        comment="microseconds since 2020-01-01 UTC when received << 8 | writer slot << 4 | n",
    ),
    Column(
        "entry_key",
        BigInteger,
        nullable=False,
        comment="the entry id <ms>-<seq> as ms << 20 | seq; 0 for kinds 3 and 4 (no entry id; "
        "rows from before 0006 keep a made-up one, not shown)",
    ),
    Column("sse_key", BigInteger, comment="the SSE id, encoded alike; null for snapshots"),
    Column("group_no", SmallInteger, nullable=False, comment="stream_cursors.group_no"),
    Column(
        "kind",
        SmallInteger,
        nullable=False,
        comment="0 odds, 1 locked, 2 settled event; 3 a REST snapshot row; 4 a row repaired "
        "from the vendor's history",
    ),
    Column("entry_text", Text, comment="the entry id as received, when it is not canonical"),
    Column("sse_text", Text, comment="the SSE id as received, when it is not canonical"),
    postgresql_partition_by="RANGE (id)",
    comment="The stream events (and snapshot rows) that carried odds_changes rows",
)

settlements = Table(
    "settlements",
    metadata,
    Column(
        "code",
        SmallInteger,
        Identity(start=100),
        primary_key=True,
        comment="odds_changes.settlement",
    ),
    Column("settlement", Text, nullable=False, unique=True, comment="the vendor's text"),
    comment="Settlement texts by code (the writer adds new ones as they come)",
)

history_marks = Table(
    "history_marks",
    metadata,
    Column("group_no", SmallInteger, primary_key=True, comment="stream_cursors.group_no"),
    Column(
        "entry_key",
        BigInteger,
        nullable=False,
        comment="the highest entry key written to history for the group (replay guard)",
    ),
    comment="internal: at or below its mark, a group's events are checked against history",
)

fixtures = Table(
    "fixtures",
    metadata,
    Column("fixture_id", Text, primary_key=True, comment="the vendor's fixture id"),
    Column("game_id", Text, comment="the vendor's game id"),
    Column("sport", Text, comment="e.g. basketball"),
    Column("league", Text, comment="e.g. NBA"),
    Column("home_team_display", Text, comment="home team (or first player) as displayed"),
    Column("away_team_display", Text, comment="away team (or second player) as displayed"),
    _tstz("start_date", "scheduled start"),
    Column("status", Text, comment="lower case: unplayed, live, half, completed, ..."),
    _tstz("source_ts", "the vendor's timestamp of the newest event applied", nullable=False),
    Column("entry_id", Text, nullable=False, comment="entry id of the newest event applied"),
    _tstz("updated_at", "when this row last changed here", nullable=False, now=True),
    Column("order_key", LargeBinary, nullable=False, comment="internal: newest event applied"),
    Column("status_order_key", LargeBinary, comment="internal: newest status change applied"),
    comment="Fixtures: a row as soon as an odd of it is stored, details from the feed and REST",
)

fixture_status_history = Table(
    "fixture_status_history",
    metadata,
    Column(
        "history_id",
        BigInteger,
        Sequence("fixture_status_history_seq"),
        primary_key=True,
        server_default=text("nextval('fixture_status_history_seq'::regclass)"),
        comment="insertion order",
    ),
    Column("fixture_id", Text, nullable=False, comment="fixtures.fixture_id"),
    Column("game_id", Text, comment="the vendor's game id"),
    Column("sport", Text, comment="e.g. basketball"),
    Column("league", Text, comment="e.g. NBA"),
    Column("old_status", Text, comment="status before; null: no status change"),
    Column("new_status", Text, comment="status after; null: no status change"),
    _tstz("old_start_date", "start before; null: no start change"),
    _tstz("new_start_date", "start after; null: no start change"),
    Column("source_ts", TSTZ, nullable=False, primary_key=True, comment="the vendor's timestamp"),
    Column("entry_id", Text, nullable=False, comment="the event's entry id"),
    Column("group_key", Text, nullable=False, comment="stream_cursors.group_key"),
    _tstz("received_at", "when it was received", nullable=False),
    UniqueConstraint("fixture_id", "entry_id", "source_ts"),
    postgresql_partition_by="RANGE (source_ts)",
    comment="Every fixture-status event: status and start time changes",
)

stream_cursors = Table(
    "stream_cursors",
    metadata,
    Column("group_key", Text, primary_key=True, comment="the connection group"),
    Column("stream", Text, nullable=False, comment="copilot or odds"),
    Column("sport", Text, nullable=False, comment="the group's sport"),
    Column("leagues", ARRAY(Text), nullable=False, comment="the group's leagues"),
    Column("last_entry_id", Text, comment="sent as last_entry_id on reconnect"),
    Column("last_event_id", Text, comment="the SSE id: of the same event (Last-Event-ID)"),
    Column("cursor_key", LargeBinary, comment="internal: entry id as a sortable key"),
    _tstz("last_event_at", "when the newest committed event was received"),
    _tstz("updated_at", "when this row last changed", nullable=False, now=True),
    Column(
        "group_no",
        SmallInteger,
        Identity(),
        nullable=False,
        unique=True,
        comment="the group's number in change_events",
    ),
    Column(
        "epoch",
        BigInteger,
        nullable=False,
        server_default=text("0"),
        comment="the group's ownership: every takeover increases it, and a flush commits only "
        "under the epoch it was read with (fencing)",
    ),
    comment="One row per connection group: the committed position in its stream",
)

GAP_CAUSES = (
    "start (a process took the group: a restart or a takeover), reconnect (the vendor did not "
    "visibly replay), failover (the database lost commits), fenced (this process lost the "
    "group while it wrote)"
)

stream_gaps = Table(
    "stream_gaps",
    metadata,
    Column(
        "gap_id", BigInteger, Identity(always=True), primary_key=True, comment="insertion order"
    ),
    Column("group_key", Text, nullable=False, comment="stream_cursors.group_key"),
    Column("cause", Text, nullable=False, comment=GAP_CAUSES),
    _tstz(
        "from_ts",
        "history is complete up to here: the vendor time of the last event before the gap",
        nullable=False,
    ),
    _tstz("until_ts", "and again from here: when the stream was back (null while it is not)"),
    Column(
        "state",
        Text,
        nullable=False,
        server_default=text("'open'"),
        comment="open (not yet scoped by a snapshot), repairing, repaired, unrepairable (detail "
        "says why)",
    ),
    Column("detail", Text, comment="how it was closed, or why it cannot be"),
    Column(
        "odds_to_repair",
        Integer,
        nullable=False,
        server_default=text("0"),
        comment="odds the snapshot showed may have changed during the gap",
    ),
    Column(
        "odds_repaired",
        Integer,
        nullable=False,
        server_default=text("0"),
        comment="of those, whose history was fetched and stored",
    ),
    Column(
        "changes_added",
        Integer,
        nullable=False,
        server_default=text("0"),
        comment="history rows the repair added",
    ),
    Column(
        "historical_calls",
        Integer,
        nullable=False,
        server_default=text("0"),
        comment="calls to the vendor's historical odds endpoint spent on it",
    ),
    _tstz("opened_at", "when the gap was recorded", nullable=False, now=True),
    _tstz("closed_at", "when it was repaired or found unrepairable"),
    _tstz("updated_at", "when this row last changed", nullable=False, now=True),
    Column(
        "opened_by",
        UUID,
        comment="the stream connection whose gap this is (gap tracking and the writer both "
        "record it: one row); null for a failover gap",
    ),
    CheckConstraint("state IN ('open', 'repairing', 'repaired', 'unrepairable')", name="state"),
    UniqueConstraint("opened_by"),
    Index(None, "group_key", "state"),
    comment="The gap ledger: every stretch of a group's stream the daemon may have missed, and "
    "its repair",
)

stream_gap_odds = Table(
    "stream_gap_odds",
    metadata,
    Column("gap_id", BigInteger, primary_key=True, comment="stream_gaps.gap_id"),
    Column("odd_id", Text, primary_key=True, comment="odds.id"),
    Column(
        "done",
        Boolean,
        nullable=False,
        server_default=text("false"),
        comment="its history was fetched: a later snapshot does not queue it again",
    ),
    # The pending pairs only, in the order the repair takes them, and by odd (0007).
    Index(None, "gap_id", "odd_id", postgresql_where=text("NOT done")),
    Index(None, "odd_id", postgresql_where=text("NOT done")),
    comment="internal: the repair's work queue, an odd whose history a gap still needs",
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column(
        "dead_letter_id",
        BigInteger,
        Identity(always=True),
        primary_key=True,
        comment="insertion order",
    ),
    Column("group_key", Text, nullable=False, comment="stream_cursors.group_key"),
    Column("event_type", Text, nullable=False, comment="the SSE event type"),
    Column("event_id", Text, nullable=False, comment="the SSE id: line, empty when none"),
    Column("reason", Text, nullable=False, comment="invalid_json, wrong_type, too_large, ..."),
    Column("detail", Text, nullable=False, comment="what was wrong, in words"),
    Column("payload", Text, nullable=False, comment="the event data, truncated"),
    _tstz("received_at", "when it was received", nullable=False),
    Index(None, "received_at"),
    comment="Events (or single odds) that could not be stored, kept for inspection",
)
