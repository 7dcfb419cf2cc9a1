"""The fault tests' ledger check excuses exactly the changes no daemon could know of: those of
an odd that the database never held, made inside gaps that each ended with the odd locked
(README, "What does not hold"). Everything else it must call missing."""

from __future__ import annotations

from tests.support.sim import INF, unknowable_until

GAPS = [(100.0, 200.0), (300.0, 400.0), (500.0, 600.0)]


def test_an_odd_posted_and_locked_in_one_gap_is_unknown_until_its_end() -> None:
    changes = [(110, "odds"), (120, "locked"), (250, "odds")]
    assert unknowable_until(changes, GAPS, INF) == 200.0


def test_reopened_and_locked_again_in_a_later_gap_it_stays_unknown_across_both() -> None:
    changes = [(110, "odds"), (120, "locked"), (310, "odds"), (320, "locked"), (450, "odds")]
    assert unknowable_until(changes, GAPS, INF) == 400.0


def test_open_at_a_gaps_end_a_snapshot_sees_it_so_the_run_ends_before_that_gap() -> None:
    changes = [(110, "odds"), (120, "locked"), (310, "odds"), (510, "locked")]
    assert unknowable_until(changes, GAPS, INF) == 200.0


def test_a_change_the_stream_was_there_for_ends_the_run() -> None:
    changes = [(110, "odds"), (120, "locked"), (250, "odds"), (310, "odds"), (320, "locked")]
    assert unknowable_until(changes, GAPS, INF) == 200.0


def test_nothing_is_excused_for_an_odd_first_seen_outside_a_gap_or_open_at_the_end() -> None:
    assert unknowable_until([(50, "odds"), (110, "locked")], GAPS, INF) is None
    assert unknowable_until([(110, "locked"), (150, "odds")], GAPS, INF) is None


def test_nothing_is_excused_once_history_knew_the_odd_before_the_gap_ended() -> None:
    changes = [(110, "odds"), (120, "locked"), (310, "odds"), (320, "locked")]
    assert unknowable_until(changes, GAPS, known_ms=150) is None
    assert unknowable_until(changes, GAPS, known_ms=350) == 200.0


def test_of_nested_gaps_the_first_to_end_is_the_snapshot_that_could_see_it() -> None:
    nested = [(100.0, 400.0), (100.0, 200.0)]
    assert unknowable_until([(110, "locked"), (250, "odds")], nested, INF) == 200.0
    assert unknowable_until([(110, "odds"), (150, "odds")], nested, INF) is None
