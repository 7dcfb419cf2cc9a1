"""What ``/readyz`` answers: ready only while data can flow and is flowing."""

from __future__ import annotations

from dataclasses import dataclass

from ingestor.config import Settings
from ingestor.coordination import Coordinator
from ingestor.storage.db import Pinger
from ingestor.storage.writer import Writer
from ingestor.supervisor import Supervisor


@dataclass
class Readiness:
    """The database answers (on a connection of its own), commits happen while events wait,
    and no group this process streams has failed past the bound. A standby process (its
    groups held by another process) is ready: say so, but do not hold a rolling update."""

    settings: Settings
    pinger: Pinger
    writer: Writer
    supervisor: Supervisor
    coordinator: Coordinator

    async def check(self) -> tuple[bool, str]:
        """(ready, the reason or a note)."""
        problem = await self.pinger.ping()
        if problem:
            return False, problem
        stalled = self.writer.stall_s()
        if stalled > self.settings.ready_commit_wait_s:
            # Health must not stay green while nothing is stored (a missing grant did that).
            waiting = self.writer.queue.qsize() + self.writer.held
            error = self.writer.last_error or "none, still running"
            return False, f"no commit for {stalled:.0f} s while {waiting} events wait " \
                          f"(last flush error: {error})"  # fmt: skip
        bound = self.settings.ready_max_failures
        failing = [w.group.key for w in self.supervisor.running() if w.failures >= bound]
        if failing:
            return False, f"groups failing: {', '.join(failing)}"
        standby = self.coordinator.standby
        if standby:
            owned = len(self.coordinator.owned)
            return True, (f"standby for {len(standby)} group(s) another process streams "
                          f"({', '.join(standby)}); streaming {owned}")  # fmt: skip
        return True, f"streaming {len(self.coordinator.owned)} group(s)"
