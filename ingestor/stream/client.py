"""Opening one SSE connection: URL, headers, and the checks before any byte is parsed."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from ingestor.domain.groups import Group

EVENT_STREAM = "text/event-stream"


class StreamHTTPError(Exception):
    """The server answered, but not with an event stream; ``reason`` labels the metric."""

    def __init__(
        self, reason: str, status: int, message: str, retry_after: str | None = None
    ) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.reason = reason
        self.status = status
        self.message = message
        self.retry_after = retry_after


def vendor_message(body: bytes) -> str:
    """The vendor's ``{"error": "..."}`` text, or the start of whatever body came."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return str(parsed["error"])[:300]
    return body[:300].decode("utf-8", "replace").strip()


def request_headers(api_key: str | None) -> dict[str, str]:
    """The key travels in a header, never in the URL (URLs end up in proxy logs)."""
    headers = {"Accept": EVENT_STREAM, "Cache-Control": "no-cache"}
    if api_key:
        headers["X-Api-Key"] = api_key
    return headers


async def open_stream(
    session: aiohttp.ClientSession,
    base_url: str,
    group: Group,
    *,
    api_key: str | None,
    last_entry_id: str | None,
    connect_timeout_s: float,
) -> aiohttp.ClientResponse:
    """GET the group's stream; raise ``StreamHTTPError`` unless it is a 200 event stream."""
    # aiohttp's connect timeout stops at TCP/TLS: bound the wait for the headers too.
    async with asyncio.timeout(connect_timeout_s):
        resp = await session.get(
            base_url + group.path,
            params=group.params(last_entry_id),
            headers=request_headers(api_key),
            timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_read=None),
            # A redirect would carry X-Api-Key to another host.
            allow_redirects=False,
        )
    try:
        if resp.status != 200:
            async with asyncio.timeout(connect_timeout_s):
                body = await resp.content.read(2048)
            raise StreamHTTPError(
                f"http_{resp.status}",
                resp.status,
                vendor_message(body),
                resp.headers.get("Retry-After"),
            )
        if resp.content_type != EVENT_STREAM:
            async with asyncio.timeout(connect_timeout_s):
                body = await resp.content.read(300)
            raise StreamHTTPError(
                "bad_content_type",
                resp.status,
                f"content type {resp.content_type!r}, not {EVENT_STREAM}; body starts "
                f"{vendor_message(body)!r}",
            )
    except BaseException:
        resp.release()
        raise
    return resp
