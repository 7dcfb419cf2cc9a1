"""Group ownership logic against an in-memory lease table: no PostgreSQL, the same rules."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from ingestor.config import CoordinationSettings
from ingestor.coordination import Coordinator, fair_share
from ingestor.domain.cursors import Cursor
from ingestor.metrics import Metrics
from ingestor.ports import Claim, LeaseError
from tests.conftest import wait_until

GROUPS = [f"g{i}" for i in range(6)]


@dataclass
class Table:
    """The shared lock table every process sees (what pg_locks is to the real thing)."""

    held: dict[str, FakeLeases] = field(default_factory=dict)
    members: set[FakeLeases] = field(default_factory=set)
    cursors: dict[str, Cursor] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)


class FakeLeases:
    """The Leases port in memory; ``fail_once`` plays a lost session."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.fail_once = False

    def _check(self) -> None:
        if self.fail_once:
            self.fail_once = False
            raise LeaseError("connection lost")
        self.table.members.add(self)

    async def members(self) -> int:
        self._check()
        return len(self.table.members)

    async def try_take(self, group_key: str) -> bool:
        self._check()
        if group_key in self.table.held:
            return self.table.held[group_key] is self
        self.table.held[group_key] = self
        return True

    async def release(self, group_key: str) -> None:
        self._check()
        if self.table.held.get(group_key) is self:
            del self.table.held[group_key]

    async def claim(self, group_key: str) -> Claim | None:
        self._check()
        self.table.epochs[group_key] = self.table.epochs.get(group_key, 0) + 1
        return Claim(self.table.epochs[group_key], self.table.cursors.get(group_key))

    async def reset(self) -> None:
        await self.close()

    async def close(self) -> None:
        self.table.members.discard(self)
        for key in [k for k, v in self.table.held.items() if v is self]:
            del self.table.held[key]


@dataclass
class Process:
    """One process's coordinator, with the workers it started (checked against the table):
    it plays the supervisor (the ``Workers`` the coordinator starts and stops)."""

    table: Table
    leases: FakeLeases
    stop: asyncio.Event
    metrics: Metrics
    coordinator: Coordinator | None = None
    streaming: set[str] = field(default_factory=set)
    started_from: dict[str, Cursor | None] = field(default_factory=dict)
    undrained: int = 0  # how many drains to fail from now on
    stops: list[tuple[str, bool]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @property
    def coord(self) -> Coordinator:
        assert self.coordinator is not None
        return self.coordinator

    async def leave(self) -> None:
        self.stop.set()
        assert self.task is not None
        await self.task
        await self.coord.close()

    async def start_worker(
        self, key: str, claim: Claim | None = None, *, takeover: bool = False
    ) -> None:
        cursor = claim.cursor if claim else None
        assert self.table.held.get(key) is self.leases, (
            "a worker starts only after its claim is taken"
        )
        assert key not in {k for p in procs for k in p.streaming}, f"{key} streamed twice"
        self.streaming.add(key)
        self.started_from[key] = cursor

    async def stop_worker(self, key: str, drain: bool = False) -> bool:
        held = self.table.held
        assert held.get(key) is self.leases, "a worker stops before its claim is given back"
        await asyncio.sleep(0)  # stopping (and draining) takes time: the claim must outlast it
        assert held.get(key) is self.leases, "the claim went while the worker was stopping"
        self.streaming.discard(key)
        self.stops.append((key, drain))
        if drain and self.undrained:  # the writer did not commit its queue in time
            self.undrained -= 1
            return False
        return drain


def process(table: Table, *, fair: bool) -> Process:
    proc = Process(table, FakeLeases(table), asyncio.Event(), Metrics())
    settings = CoordinationSettings(
        coordination="postgres" if fair else "none", lease_check_s=0.005
    )
    proc.coordinator = Coordinator(proc.leases, GROUPS, proc, proc.metrics, settings, proc.stop)
    procs.append(proc)
    proc.task = asyncio.create_task(proc.coord.run())
    return proc


procs: list[Process] = []


@pytest.fixture(autouse=True)
async def _clean() -> AsyncIterator[None]:
    procs.clear()
    yield
    for p in procs:
        if not p.stop.is_set():
            await p.leave()


def _gauge(p: Process, name: str) -> float:
    return p.metrics.registry.get_sample_value(name) or 0.0


def test_fair_share_rounds_up() -> None:
    assert [fair_share(6, m) for m in (0, 1, 2, 3, 4, 6, 7)] == [6, 6, 3, 2, 2, 1, 1]


async def test_without_coordination_a_second_process_waits_then_takes_over() -> None:
    table = Table(cursors={"g2": Cursor("5-0", "e5")})
    first = process(table, fair=False)
    await wait_until(lambda: first.streaming == set(GROUPS))
    second = process(table, fair=False)
    await wait_until(lambda: second.coord.standby == GROUPS)
    assert not second.streaming and _gauge(second, "ingestor_groups_standby") == 6
    assert _gauge(second, "ingestor_groups_owned") == 0
    await first.leave()
    await wait_until(lambda: second.streaming == set(GROUPS))
    assert second.coord.standby == [] and _gauge(second, "ingestor_groups_owned") == 6
    assert second.started_from["g2"] == Cursor("5-0", "e5")  # read again when taken over


async def test_fair_share_splits_and_rebalances() -> None:
    table = Table()
    three = [process(table, fair=True) for _ in range(3)]
    await wait_until(lambda: sorted(len(p.streaming) for p in three) == [2, 2, 2])
    await three[0].leave()
    await wait_until(lambda: sorted(len(p.streaming) for p in three[1:]) == [3, 3])
    assert set(table.held) == set(GROUPS)


async def test_a_lost_session_stops_every_worker_then_takes_the_groups_again() -> None:
    table = Table()
    p = process(table, fair=False)
    await wait_until(lambda: p.streaming == set(GROUPS))
    p.stops.clear()
    p.leases.fail_once = True
    await wait_until(lambda: sorted(k for k, _ in p.stops) == sorted(GROUPS))
    assert not any(drain for _, drain in p.stops)  # the claims are gone: nothing to drain
    await wait_until(lambda: p.streaming == set(GROUPS))


async def test_a_group_given_back_is_drained_before_its_claim_goes() -> None:
    table = Table()
    two = [process(table, fair=True) for _ in range(2)]
    await wait_until(lambda: sorted(len(p.streaming) for p in two) == [3, 3])
    third = process(table, fair=True)
    await wait_until(lambda: sorted(len(p.streaming) for p in [*two, third]) == [2, 2, 2])
    given = [s for p in two for s in p.stops]
    assert len(given) >= 2 and all(drain for _, drain in given)  # a clean handover


async def test_a_group_not_drained_in_time_keeps_its_claim_until_it_is() -> None:
    table = Table()
    two = [process(table, fair=True) for _ in range(2)]
    await wait_until(lambda: sorted(len(p.streaming) for p in two) == [3, 3])
    two[0].undrained = 3  # its writer cannot commit for three rounds
    third = process(table, fair=True)
    await wait_until(lambda: sorted(len(p.streaming) for p in [*two, third]) == [2, 2, 2])
    # The group it gives back was stopped on every round until the drain held, and only then
    # did its claim go (after a failed drain the key stays owned, so it is stopped again).
    tries = Counter(k for k, drain in two[0].stops if drain)
    assert two[0].undrained == 0 and max(tries.values()) == 4, tries
    assert len(two[0].coord.owned) == 2
