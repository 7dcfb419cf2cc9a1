"""The metrics port: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz`` for probes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ingestor.errors import PortUnavailable
from ingestor.metrics import Metrics

# (ready, the reason why not, or a note)
ReadyCheck = Callable[[], Awaitable[tuple[bool, str]]]


def make_app(metrics: Metrics, ready: ReadyCheck) -> web.Application:
    """An aiohttp app serving the metrics registry and the probes."""

    async def metrics_view(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        ok, text = await ready()
        if not ok:
            return web.Response(status=503, text=f"not ready: {text}\n")
        return web.Response(text=f"ready: {text}\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


class Probes:
    """What ``/readyz`` asks: "starting" until the daemon is built, then its readiness."""

    def __init__(self) -> None:
        self._check: ReadyCheck | None = None

    def answer_with(self, check: ReadyCheck) -> None:
        """From now on ``/readyz`` answers what ``check`` says."""
        self._check = check

    async def ready(self) -> tuple[bool, str]:
        """(ready, the reason or a note)."""
        if self._check is None:
            return False, "starting"
        return await self._check()


async def open_port(
    metrics: Metrics, probes: Probes, host: str, port: int
) -> Callable[[], Awaitable[None]]:
    """Serve the metrics and the probes on ``host:port``; returns what closes it. A port
    that cannot be opened is one line for the operator (``PortUnavailable``)."""
    runner = web.AppRunner(make_app(metrics, probes.ready), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise PortUnavailable(
            f"metrics port {host}:{port} cannot be opened: {exc.strerror or exc} "
            "(set metrics_port or INGESTOR_METRICS_PORT)"
        ) from None
    return runner.cleanup
