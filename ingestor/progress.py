"""The periodic info line: proof in the logs that data flows, in the metrics' own words."""

from __future__ import annotations

import asyncio
import math

import structlog

from ingestor.lifecycle import sleep_or_stop
from ingestor.metrics import Metrics

log = structlog.get_logger("ingestor.progress")


def _total(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _connected(metrics: Metrics) -> int:
    return sum(
        int(sample.value)
        for family in metrics.stream_connected.collect()
        for sample in family.samples
    )


async def progress_loop(metrics: Metrics, stop: asyncio.Event, interval_s: float) -> None:
    """Every ``interval_s``: events and odds committed since the last line, the lag p99 of
    those odds (bucket bound), groups connected and owned, events waiting."""
    events = _total(metrics, "ingestor_events_committed_total")
    odds = _total(metrics, "ingestor_rows_written_total", table="odds_changes")
    lag = metrics.lag.counts()
    while not await sleep_or_stop(stop, interval_s):
        now_events = _total(metrics, "ingestor_events_committed_total")
        now_odds = _total(metrics, "ingestor_rows_written_total", table="odds_changes")
        p99 = metrics.lag.quantile(lag, 0.99)
        log.info(
            "ingest_progress",
            seconds=interval_s,
            events_committed=int(now_events - events),
            odds_committed=int(now_odds - odds),
            lag_p99_s_at_most=None if p99 is None else "over 3600" if math.isinf(p99) else p99,
            groups_connected=_connected(metrics),
            groups_owned=int(_total(metrics, "ingestor_groups_owned")),
            groups_standby=int(_total(metrics, "ingestor_groups_standby")),
            events_pending=int(_total(metrics, "ingestor_events_pending")),
        )
        events, odds, lag = now_events, now_odds, metrics.lag.counts()
