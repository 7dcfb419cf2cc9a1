"""One owner per connection group at every moment, whatever the configuration.

Every process claims its groups through the ``Leases`` port (PostgreSQL session advisory
locks, ``storage/leases.py``) before it streams them: a worker starts only after its claim is
taken and stops before the claim is given back, so no group is ever streamed by two processes
(the vendor counts every connection against the key's limits, and two writers of one group
contended for the same rows). With ``coordination = "none"`` a process wants every group and
waits as a standby for those another process holds; with ``"postgres"`` it wants its fair share
(groups / members, rounded up) and gives back what is over it.
"""

from __future__ import annotations

import asyncio
import math
import random
from typing import Protocol

import structlog

from ingestor.config import CoordinationSettings
from ingestor.lifecycle import sleep_or_stop
from ingestor.metrics import Metrics
from ingestor.ports import Claim, LeaseError, Leases, LostGroups

log = structlog.get_logger("ingestor.coordination")


class Workers(Protocol):
    """What the coordinator starts and stops (the supervisor)."""

    async def start_worker(
        self, key: str, claim: Claim | None = None, *, takeover: bool = False
    ) -> None:
        """Stream the group under ``claim`` (its epoch, and the cursor to resume from);
        ``takeover``: another process streamed it until now."""

    async def stop_worker(self, key: str, drain: bool = False) -> bool:
        """Stop streaming the group; ``drain``: and wait until what it queued is committed.
        Whether that is so."""


def fair_share(groups: int, members: int) -> int:
    """Groups one of ``members`` processes should stream: all of them, split evenly."""
    return math.ceil(groups / max(1, members))


class Coordinator:
    """Keeps this process's groups claimed, starting and stopping their workers."""

    def __init__(
        self,
        leases: Leases,
        group_keys: list[str],
        workers: Workers,
        metrics: Metrics,
        settings: CoordinationSettings,
        stop_event: asyncio.Event,
        lost: LostGroups | None = None,
    ) -> None:
        self._leases = leases
        # Groups the writer found claimed by another process while we still streamed them.
        self._lost = lost or LostGroups()
        self._epochs: dict[str, int] = {}
        self._groups = group_keys
        self._workers = workers
        self._metrics = metrics
        self._check_s = settings.lease_check_s
        self._stop_event = stop_event
        self._share_fairly = settings.coordination == "postgres"
        self.owned: set[str] = set()
        # Groups this process wants and another process holds (what /readyz reports).
        self.standby: list[str] = []
        self._first_round = True
        # Start from a different place in the list per process, so that joiners spread out.
        self._offset = random.randrange(max(1, len(group_keys)))

    async def run(self) -> None:
        """Until stopped; when the lease session is lost, every worker stops at once. On the
        way out the workers stop, but the claims stay until ``close``: the writer flushes
        their last events first, so a successor never starts behind a flush still running."""
        try:
            while not self._stop_event.is_set():
                try:
                    await self._round()
                except LeaseError as exc:
                    log.warning("leases_lost", owned=len(self.owned), error=str(exc)[:200])
                    await self._stop_all()
                    await self._leases.reset()
                await self._pause()
        finally:
            await self._stop_all()

    async def close(self) -> None:
        """Give every claim back (after the final flush)."""
        await self._leases.close()

    async def _pause(self) -> None:
        """Until the next round: ``lease_check_s``, or at once when a group was fenced."""
        waits = [
            asyncio.ensure_future(self._lost.reported.wait()),
            asyncio.ensure_future(sleep_or_stop(self._stop_event, self._check_s)),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _give_up_lost(self) -> None:
        """Groups another process claimed while we streamed them (the writer found their
        epoch moved on): stop their workers and drop our claim, if we still hold one."""
        for key, epoch in sorted(self._lost.take().items()):
            if key not in self.owned or self._epochs.get(key, 0) > epoch:
                continue  # already given up, or taken again since
            await self._workers.stop_worker(key, False)
            await self._leases.release(key)
            self.owned.discard(key)
            log.warning("group_lost", group=key, epoch=epoch)

    async def _round(self) -> None:
        # Asked every round, in every mode: besides the count, it proves the session that
        # holds our claims is still alive (a lost one must stop the workers at once).
        members = await self._leases.members()
        await self._give_up_lost()
        share = fair_share(len(self._groups), members if self._share_fairly else 1)
        for key in sorted(self.owned)[share:]:  # over the share: give back, worker first
            # ... and its queued events committed: a clean handover. Not drained in time
            # (the database is slow): the claim stays, and a later round tries again, since
            # the next owner would read the group's mark before our last rows land.
            if not await self._workers.stop_worker(key, True):
                continue
            await self._leases.release(key)
            self.owned.discard(key)
            log.info("group_released", group=key, members=members, share=share)
        ordered = self._groups[self._offset :] + self._groups[: self._offset]
        for key in ordered:
            if len(self.owned) >= share:
                break
            if key in self.owned or not await self._leases.try_take(key):
                continue
            # A new epoch, once the previous owner's last flush has ended; its cursor.
            claim = await self._leases.claim(key)
            if claim is None:
                await self._leases.release(key)  # a later round tries again
                continue
            self.owned.add(key)
            if not self._first_round:
                self._metrics.group_takeovers.inc()
            log.info(
                "group_acquired",
                group=key,
                members=members,
                share=share,
                epoch=claim.epoch,
                cursor=claim.cursor.entry_id if claim.cursor else None,
            )
            self._epochs[key] = claim.epoch
            await self._workers.start_worker(key, claim, takeover=not self._first_round)
        self._first_round = False
        self._report(share)

    def _report(self, share: int) -> None:
        """Metrics every round; one log line whenever the set of groups waited for changes."""
        wanted = share - len(self.owned)
        standby = [k for k in self._groups if k not in self.owned][: max(0, wanted)]
        if standby != self.standby and standby:
            log.info(
                "groups_standby",
                groups=standby,
                message="streamed by another process on this database; "
                "taken over within lease_check_s of it letting go",
            )
        self.standby = standby
        self._metrics.groups_owned.set(len(self.owned))
        self._metrics.groups_standby.set(len(standby))

    async def _stop_all(self) -> None:
        for key in sorted(self.owned):
            await self._workers.stop_worker(key, False)
        self.owned.clear()
        self._metrics.groups_owned.set(0)
