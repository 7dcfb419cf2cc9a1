"""What ``/readyz`` answers: ready only while data can flow and is flowing."""

from __future__ import annotations

from dataclasses import dataclass

from ingestor.config import ServiceSettings
from ingestor.coordination import Coordinator
from ingestor.ports import DatabaseProbe, WritePath
from ingestor.supervisor import Supervisor


@dataclass
class Readiness:
    """The database answers (on a connection of its own), commits happen while events wait,
    and no group this process streams has failed past the bound. A standby process (its
    groups held by another process) is ready: say so, but do not hold a rolling update."""

    settings: ServiceSettings
    probe: DatabaseProbe
    writer: WritePath
    supervisor: Supervisor
    coordinator: Coordinator

    async def check(self) -> tuple[bool, str]:
        """(ready, the reason or a note)."""
        problem = await self.probe.ping()
        if problem:
            return False, problem
        health = self.writer.health()
        if health.stall_s > self.settings.ready_commit_wait_s:
            # Health must not stay green while nothing is stored (a missing grant did that).
            error = health.last_error or "none, still running"
            return False, (
                f"no commit for {health.stall_s:.0f} s while {health.pending} events wait "
                f"(last flush error: {error})"
            )
        bound = self.settings.ready_max_failures
        failing = [w.group.key for w in self.supervisor.running() if w.failures >= bound]
        if failing:
            return False, f"groups failing: {', '.join(failing)}"
        standby = self.coordinator.standby
        if standby:
            owned = len(self.coordinator.owned)
            return True, (
                f"standby for {len(standby)} group(s) another process streams "
                f"({', '.join(standby)}); streaming {owned}"
            )
        return True, f"streaming {len(self.coordinator.owned)} group(s)"
