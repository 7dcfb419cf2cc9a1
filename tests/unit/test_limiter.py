"""The process-wide request pace."""

from __future__ import annotations

import asyncio

from ingestor.stream.rest import RequestLimiter


async def test_limiter_holds_the_window() -> None:
    limiter = RequestLimiter(3, window_s=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(3):
        await limiter.acquire()
    assert loop.time() - started < 0.3  # the first three pass at once
    await limiter.acquire()
    assert loop.time() - started >= 0.3  # the fourth waits for the window to move
