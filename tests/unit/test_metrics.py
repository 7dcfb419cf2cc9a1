"""The bulk lag histogram exposes exactly what prometheus_client's Histogram would."""

from __future__ import annotations

import random
from bisect import bisect_left

from prometheus_client import CollectorRegistry, Histogram

from ingestor.metrics import LAG_BUCKETS, BulkHistogram


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_bulk_histogram_matches_the_reference_histogram() -> None:
    rng = random.Random(7)
    # Bucket bounds themselves, zero, negatives and values past the last bound included.
    values = [*LAG_BUCKETS, 0.0, -1.0, 7200.0] + [rng.expovariate(0.5) for _ in range(5000)]
    reference, bulk = CollectorRegistry(), CollectorRegistry()
    expected = Histogram("ingestor_lag_seconds", "lag", buckets=LAG_BUCKETS, registry=reference)
    got = BulkHistogram("ingestor_lag_seconds", "lag", LAG_BUCKETS, bulk)
    for value in values:
        expected.observe(value)
    again = values[4000:4100]  # seen twice: counted once each, with a count of 2
    for value in again:
        expected.observe(value)
    # Added in parts, as the writer adds a batch's counts (its lag_counts), one of a value.
    for part in (values[:3000], *([v] for v in values[3000:4000]), values[4000:] + again):
        counts = [0] * len(got.bounds)
        for value in part:
            counts[bisect_left(got.bounds, value)] += 1
        got.add(counts, sum(part))
    values += again
    want, have = _samples(reference), _samples(bulk)
    assert want.keys() == have.keys()
    for key, value in want.items():
        assert abs(have[key] - value) < 1e-6, key
    assert have[("ingestor_lag_seconds_count", "")] == len(values)
