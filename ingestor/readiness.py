"""What ``/readyz`` answers: ready only while data can flow and is flowing."""

from __future__ import annotations

from dataclasses import dataclass

from ingestor.config import ServiceSettings
from ingestor.coordination import Coordinator
from ingestor.ports import DatabaseProbe, WritePath
from ingestor.stream.worker import LinkState
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
        return self._groups()

    def _groups(self) -> tuple[bool, str]:
        """Ready while every group this process streams is connected, or has been trying for
        less than ``ready_connect_s``, and none is refused; a standby is ready."""
        s = self.settings
        states = sorted((w.state() for w in self.supervisor.running()), key=lambda x: x.group_key)
        bad = [
            st
            for st in states
            if st.refused
            or st.failures >= s.ready_max_failures
            or (not st.connected and st.for_s > s.ready_connect_s)
        ]
        parts = [_said(st) for st in (bad or states)]
        if bad:
            return False, "; ".join(parts)
        standby = self.coordinator.standby
        text = f"streaming {len(states)} group(s)" + (f": {'; '.join(parts)}" if parts else "")
        if standby:
            return True, (
                f"standby for {len(standby)} group(s) another process streams "
                f"({', '.join(standby)}); {text}"
            )
        return True, text


def _said(st: LinkState) -> str:
    """One group's link in words: connected, connecting (for how long), or refused (why)."""
    if st.refused:
        return f"{st.group_key} refused ({st.refused})"
    if st.connected:
        return f"{st.group_key} connected"
    plural = "s" if st.failures > 1 else ""
    tries = f", {st.failures} failed attempt{plural}" if st.failures else ""
    return f"{st.group_key} connecting for {st.for_s:.0f} s{tries}"
