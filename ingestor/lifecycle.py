"""What every long-running part shares: a sleep that wakes on shutdown, a log rate limit."""

from __future__ import annotations

import asyncio
import time


class LogLimit:
    """At most ``burst`` lines per key and minute; the rest are counted, not printed."""

    def __init__(self, burst: int = 5, window_s: float = 60.0) -> None:
        self._burst = burst
        self._window_s = window_s
        self._seen: dict[str, tuple[float, int]] = {}

    def allow(self, key: str) -> bool:
        """Whether this occurrence may be logged."""
        now = time.monotonic()
        start, count = self._seen.get(key, (now, 0))
        if now - start >= self._window_s:
            start, count = now, 0
        self._seen[key] = (start, count + 1)
        return count < self._burst

    def suppressed(self, key: str) -> int:
        """Occurrences in the current window beyond the burst."""
        return max(0, self._seen.get(key, (0.0, 0))[1] - self._burst)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early when ``stop`` is set; True when stopping."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
