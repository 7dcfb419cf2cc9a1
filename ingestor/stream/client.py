"""Opening one SSE connection: URL, headers, and the checks before any byte is parsed."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from yarl import URL

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


def request_headers(api_key: str | None, last_event_id: str | None = None) -> dict[str, str]:
    """The key travels in a header, never in the URL (URLs end up in proxy logs)."""
    headers = {"Accept": EVENT_STREAM, "Cache-Control": "no-cache"}
    if api_key:
        headers["X-Api-Key"] = api_key
    if last_event_id and last_event_id.isascii() and last_event_id.isprintable():
        # What standard SSE servers and proxies resume from; the vendor reads last_entry_id.
        headers["Last-Event-ID"] = last_event_id
    return headers


def connect_failure(exc: BaseException, timeout_s: float) -> str:
    """Why a connection could not be opened, in words an operator acts on: the name did not
    resolve, the port refused, TLS failed (and how), no answer in time. Never the URL's query
    or the key: the caller names the host and port."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS: the host name does not resolve ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS: the server's certificate is refused ({exc.certificate_error})"
    if isinstance(exc, aiohttp.ClientSSLError):
        reason = getattr(exc.os_error, "reason", None) or exc.os_error
        hint = " (is it plain HTTP? use http:// then)" if "WRONG_VERSION" in str(reason) else ""
        return f"TLS: the handshake failed: {reason}{hint}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "refused: nothing listens on that port"
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, TimeoutError):
        return f"timeout: no answer (response headers) within {timeout_s:g} s"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before answering"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5


class RedirectRefused(Exception):
    """A redirect to another origin: following it would hand the API key to that host."""

    def __init__(self, status: int, target: URL, origin: URL) -> None:
        super().__init__(
            f"HTTP {status} redirect to {target.origin()} refused: the API key is sent only to "
            f"{origin.origin()} (set api_base_url to the new address if the move is real)"
        )
        self.status = status


async def get_same_origin(
    session: aiohttp.ClientSession, url: str, **kwargs: Any
) -> tuple[aiohttp.ClientResponse, int]:
    """GET, following redirects within the URL's origin only; returns the response and the
    redirects followed. A redirect elsewhere raises ``RedirectRefused`` before anything is
    sent there: aiohttp's own following would carry ``X-Api-Key`` to the other host."""
    origin = URL(url).origin()
    resp = await session.get(url, allow_redirects=False, **kwargs)
    kwargs.pop("params", None)  # the Location carries its own query
    for hops in range(MAX_REDIRECTS + 1):
        location = resp.headers.get("Location")
        if resp.status not in REDIRECTS or not location:
            return resp, hops
        resp.release()
        target = resp.url.join(URL(location))
        if target.origin() != origin:
            raise RedirectRefused(resp.status, target, origin)
        if hops == MAX_REDIRECTS:
            break
        resp = await session.get(target, allow_redirects=False, **kwargs)
    raise aiohttp.TooManyRedirects(resp.request_info, resp.history)


async def open_stream(
    session: aiohttp.ClientSession,
    base_url: str,
    group: Group,
    *,
    api_key: str | None,
    last_entry_id: str | None,
    connect_timeout_s: float,
    last_event_id: str | None = None,
) -> tuple[aiohttp.ClientResponse, int]:
    """GET the group's stream; raise ``StreamHTTPError`` unless it is a 200 event stream.
    Returns the response and how many same-origin redirects led to it."""
    # aiohttp's connect timeout stops at TCP/TLS: bound the wait for the headers too.
    try:
        async with asyncio.timeout(connect_timeout_s):
            resp, redirects = await get_same_origin(
                session,
                base_url + group.path,
                params=group.params(last_entry_id),
                headers=request_headers(api_key, last_event_id),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=connect_timeout_s, sock_read=None
                ),
            )
    except RedirectRefused as exc:
        raise StreamHTTPError("redirect_refused", exc.status, str(exc)) from None
    try:
        if resp.status == 204:
            # The spec's way for a server to say "stop reconnecting".
            raise StreamHTTPError(
                "http_204", 204, "204 No Content: the server asks clients to stop reconnecting"
            )
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
    return resp, redirects
