"""Prometheus metrics (prefix ``ingestor_``); names match the log event names."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000)


class BulkHistogram(Collector):
    """A histogram without labels that takes observations counted elsewhere, per bucket.

    The lag is observed once per committed odd: with prometheus_client's Histogram (a lock
    and a bucket search in Python per value) that was 5% of the daemon's CPU at 35k odds/s;
    here the writer counts a batch's lags in C (``batch.lag_counts``) and adds them under one
    lock."""

    def __init__(
        self, name: str, documentation: str, buckets: Iterable[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._doc = documentation
        self._bounds = [*sorted(float(b) for b in buckets), math.inf]
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._lock = threading.Lock()  # collect() runs on the HTTP server's thread
        registry.register(self)

    @property
    def bounds(self) -> tuple[float, ...]:
        """The buckets' upper bounds, the last one infinite."""
        return tuple(self._bounds)

    def add(self, counts: list[int], total: float) -> None:
        """Observations counted elsewhere: how many fell in each bucket (the first whose
        bound is at least the value, as ``bisect_left`` over ``bounds`` finds it), and their
        sum."""
        if len(counts) != len(self._bounds):
            raise ValueError(f"{self._name}: {len(counts)} counts for {len(self._bounds)} buckets")
        with self._lock:
            self._counts = [a + b for a, b in zip(self._counts, counts, strict=True)]
            self._sum += total

    def counts(self) -> list[int]:
        """Observations per bucket so far (not cumulative), the last one over every bound."""
        with self._lock:
            return list(self._counts)

    def quantile(self, since: list[int], q: float) -> float | None:
        """The upper bound of the bucket holding quantile ``q`` of what came after ``since``
        (None when nothing did; inf when it lies past the last bound)."""
        delta = [a - b for a, b in zip(self.counts(), since, strict=True)]
        total = sum(delta)
        if not total:
            return None
        running = 0
        for bound, n in zip(self._bounds, delta, strict=True):
            running += n
            if running >= q * total:
                return bound
        return math.inf

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """Cumulative buckets, as Prometheus expects them."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, count in zip(self._bounds, counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == math.inf else repr(bound), running))
        yield HistogramMetricFamily(self._name, self._doc, buckets=cumulative, sum_value=total)


GAP_STATES = ("open", "repairing", "unrepairable")
GAP_CAUSES = ("start", "reconnect", "failover")


class Metrics:
    """All collectors of one daemon, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_received = Counter(
            "ingestor_events_received",
            "SSE events received, by connection group and event type",
            ["group", "event_type"],
            registry=r,
        )
        self.events_rejected = Counter(
            "ingestor_events_rejected",
            "Data events that could not be decoded, by group and reason",
            ["group", "reason"],
            registry=r,
        )
        self.events_queued = Counter(
            "ingestor_events_queued",
            "Stream data events decoded and handed to the writer",
            registry=r,
        )
        self.events_committed = Counter(
            "ingestor_events_committed",
            "Stream data events committed to PostgreSQL",
            registry=r,
        )
        self.rest_requests = Counter(
            "ingestor_rest_requests",
            "REST requests of gap recovery, by endpoint and outcome (HTTP status or error)",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.rehydrations = Counter(
            "ingestor_rehydrations",
            "Gap recoveries run, by group and result",
            ["group", "result"],
            registry=r,
        )
        self.fixture_details = Counter(
            "ingestor_fixture_details",
            "Fixtures first seen between connects whose details were asked over REST, by"
            " outcome: found, failed, dropped (backlog full; the next connect lists them)",
            ["outcome"],
            registry=r,
        )
        self.rows_written = Counter(
            "ingestor_rows_written",
            "Rows committed, by table (history tables count inserted rows)",
            ["table"],
            registry=r,
        )
        self.stream_reconnects = Counter(
            "ingestor_stream_reconnects",
            "Stream reconnects, by group and reason",
            ["group", "reason"],
            registry=r,
        )
        self.stream_redirects = Counter(
            "ingestor_stream_redirects",
            "Redirects answered to a stream request, by group and outcome: followed (same"
            " origin) or refused (another origin: the key is never sent there)",
            ["group", "outcome"],
            registry=r,
        )
        self.build_info = Gauge(
            "ingestor_build_info",
            "1, labelled compiled=true when the hot path's C twins were built (setup.py),"
            " false when the daemon runs their pure-Python fallbacks (slower, same results)",
            ["compiled"],
            registry=r,
        )
        self.stream_connected = Gauge(
            "ingestor_stream_connected",
            "1 while the group's stream is open, 0 while it is being reconnected; only the"
            " process that owns the group has the series",
            ["group"],
            registry=r,
        )
        self.stream_wanted = Gauge(
            "ingestor_stream_wanted",
            "1 for every group this process is configured to stream (whoever owns it): the"
            " alert IngestorGroupDisconnected compares it with ingestor_stream_connected",
            ["group"],
            registry=r,
        )
        self.stream_consecutive_failures = Gauge(
            "ingestor_stream_consecutive_failures",
            "Failed connection attempts in a row, by group",
            ["group"],
            registry=r,
        )
        self.last_data_event = Gauge(
            "ingestor_last_data_event_timestamp_seconds",
            "Unix time of the last data event received, by group",
            ["group"],
            registry=r,
        )
        self.stream_no_data = Gauge(
            "ingestor_stream_no_data_seconds",
            "Seconds the open connection has carried no data event (only pings), by group",
            ["group"],
            registry=r,
        )
        self.lag = BulkHistogram(
            "ingestor_lag_seconds",
            "Commit time minus the odd's source timestamp",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "ingestor_writer_queue_depth", "Events waiting for the writer", registry=r
        )
        self.events_pending = Gauge(
            "ingestor_events_pending",
            "Events accepted but not yet committed: queued plus held by the writer",
            registry=r,
        )
        self.last_commit = Gauge(
            "ingestor_last_commit_timestamp_seconds",
            "Unix time of the last committed flush (the start time until the first)",
            registry=r,
        )
        self.queue_capacity = Gauge(
            "ingestor_writer_queue_capacity", "Bound of the writer queue (events)", registry=r
        )
        self.demo_mode = Gauge(
            "ingestor_demo_mode",
            "1 when reading the simulator because no API key is set",
            registry=r,
        )
        self.batch_rows = Histogram(
            "ingestor_batch_rows", "Odds rows per flush", buckets=BATCH_BUCKETS, registry=r
        )
        self.flush_duration = Histogram(
            "ingestor_flush_duration_seconds",
            "Time of one flush transaction",
            buckets=FLUSH_BUCKETS,
            registry=r,
        )
        self.db_errors = Counter(
            "ingestor_db_errors", "Failed flush attempts, by error class", ["error"], registry=r
        )
        self.history_checked = Counter(
            "ingestor_history_checked",
            "History rows that could be stored already (a replay, a duplicate, a snapshot row,"
            " a retried flush) and were checked against history instead of COPYed straight in",
            registry=r,
        )
        self.events_dropped = Counter(
            "ingestor_events_dropped",
            "Events PostgreSQL refused even alone (bad data), by error class",
            ["error"],
            registry=r,
        )
        self.groups_owned = Gauge(
            "ingestor_groups_owned", "Connection groups this process streams", registry=r
        )
        self.groups_standby = Gauge(
            "ingestor_groups_standby",
            "Groups this process wants but another process streams (it takes them over when"
            " that process lets go)",
            registry=r,
        )
        self.group_takeovers = Counter(
            "ingestor_group_takeovers",
            "Groups taken over from another process (or after a lost lock session)",
            registry=r,
        )
        self.worker_restarts = Counter(
            "ingestor_worker_restarts",
            "Workers restarted after an unexpected crash, by group",
            ["group"],
            registry=r,
        )
        self.task_failures = Counter(
            "ingestor_task_failures",
            "Tasks that must not end (writer, leases, partitions, progress) that ended: the"
            " process stops with exit code 1 (the orchestrator restarts it)",
            ["task"],
            registry=r,
        )
        self.unknown_events = Counter(
            "ingestor_unknown_events",
            "Events of a type the daemon does not know, by group and type",
            ["group", "event_type"],
            registry=r,
        )
        # --- history you can trust: fencing, the gap ledger, repair ---------------------------
        self.events_fenced = Counter(
            "ingestor_events_fenced",
            "Events dropped because their group's epoch moved on (another process claimed it)"
            " before they committed, by group",
            ["group"],
            registry=r,
        )
        self.gaps_opened = Counter(
            "ingestor_gaps_opened",
            "Gaps recorded in the ledger (stretches of a stream history may miss), by cause",
            ["cause"],
            registry=r,
        )
        self.gaps = Gauge(
            "ingestor_history_gaps",
            "Gaps of the whole database not repaired, by state (open, repairing, unrepairable);"
            " every process reports the same figures",
            ["state"],
            registry=r,
        )
        self.gap_oldest = Gauge(
            "ingestor_history_gap_oldest_seconds",
            "Age of the oldest gap still open or repairing (0: none)",
            registry=r,
        )
        self.repair_calls = Counter(
            "ingestor_gap_repair_calls",
            "Calls to the vendor's historical odds endpoint, by outcome (ok, error, 429)",
            ["outcome"],
            registry=r,
        )
        self.repair_odds = Counter(
            "ingestor_gap_repair_odds", "Odds whose history a repair fetched", registry=r
        )
        self.repair_changes = Counter(
            "ingestor_gap_repair_changes",
            "History rows a repair added (changes the stream did not deliver)",
            registry=r,
        )
        for state in GAP_STATES:
            self.gaps.labels(state)
        for outcome in ("ok", "error", "429"):
            self.repair_calls.labels(outcome)
        for cause in GAP_CAUSES:
            self.gaps_opened.labels(cause)
