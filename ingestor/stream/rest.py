"""The vendor's REST API, as gap recovery uses it: paced, counted, key in a header."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import aiohttp
import orjson

from ingestor.config import RestSettings
from ingestor.metrics import Metrics
from ingestor.stream.client import RedirectRefused, get_same_origin, vendor_message

WINDOW_S = 15.0  # the vendor's rate-limit window


RATE_LIMIT_PAUSE_S = 15.0


def retry_after_s(header: str | None) -> float:
    """Seconds to stay away after a 429: ``Retry-After`` if it says more, at least 15."""
    try:
        asked = float(header) if header else 0.0
    except ValueError:
        asked = 0.0
    return max(RATE_LIMIT_PAUSE_S, min(asked, 3600.0))


class RestError(Exception):
    """A REST call that did not give usable JSON."""


class RequestLimiter:
    """At most ``limit`` requests in any ``WINDOW_S`` window, for the whole process; closed
    altogether for a while after the vendor answered 429."""

    def __init__(self, limit: int, window_s: float = WINDOW_S) -> None:
        self._limit = limit
        self._window_s = window_s
        self._sent: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()
        self._closed_until = 0.0

    def close_for(self, seconds: float) -> None:
        """After a 429: nobody passes for ``seconds`` (the vendor asks for at least 15)."""
        until = asyncio.get_running_loop().time() + seconds
        self._closed_until = max(self._closed_until, until)

    async def acquire(self) -> None:
        """Wait for a free slot in the sliding window, then take it."""
        async with self._lock:  # one waiter at a time keeps the order fair
            loop = asyncio.get_running_loop()
            while True:
                now = loop.time()
                if now < self._closed_until:
                    await asyncio.sleep(self._closed_until - now)
                    continue
                while self._sent and now - self._sent[0] >= self._window_s:
                    self._sent.popleft()
                if len(self._sent) < self._limit:
                    self._sent.append(now)
                    return
                await asyncio.sleep(self._sent[0] + self._window_s - now)


class RestClient:
    """GET JSON from the API with the key in ``X-Api-Key``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: RestSettings,
        limiter: RequestLimiter,
        metrics: Metrics,
    ) -> None:
        self._session = session
        self._base_url = settings.effective_api_base_url
        self._headers = {"Accept": "application/json"}
        if settings.key:
            self._headers["X-Api-Key"] = settings.key
        self._limiter = limiter
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(total=settings.rest_timeout_s)

    async def get(self, path: str, params: list[tuple[str, str]]) -> Any:
        """One paced request; raises ``RestError`` on a non-200 answer or bad JSON."""
        await self._limiter.acquire()
        counter = self._metrics.rest_requests
        try:
            resp, _ = await get_same_origin(
                self._session,
                self._base_url + path,
                params=params,
                headers=self._headers,
                timeout=self._timeout,
            )
            async with resp:
                body = await resp.read()
                counter.labels(path, str(resp.status)).inc()
                if resp.status == 429:
                    self._limiter.close_for(retry_after_s(resp.headers.get("Retry-After")))
                if resp.status != 200:
                    raise RestError(f"GET {path}: HTTP {resp.status}: {vendor_message(body)}")
        except RedirectRefused as exc:
            counter.labels(path, "redirect_refused").inc()
            raise RestError(f"GET {path}: {exc}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            counter.labels(path, "error").inc()
            raise RestError(f"GET {path}: {type(exc).__name__}") from None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RestError(f"GET {path}: invalid JSON: {exc}") from None

    async def get_pages(
        self, path: str, params: list[tuple[str, str]], max_pages: int
    ) -> list[Any]:
        """``data`` of every page (``page``/``total_pages`` pagination), up to ``max_pages``."""
        items: list[Any] = []
        page = 1
        while page <= max_pages:
            body = await self.get(path, [*params, ("page", str(page))])
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise RestError(f"GET {path}: no data array in the answer")
            items.extend(data)
            total = body.get("total_pages")
            if not data or not isinstance(total, int) or page >= total:
                break
            page += 1
        return items
