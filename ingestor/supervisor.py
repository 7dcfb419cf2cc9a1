"""Runs the writer and one worker per group as named tasks; restarts or stops, never ignores."""

from __future__ import annotations

import asyncio
import random

import structlog

from ingestor.metrics import Metrics
from ingestor.storage.writer import Writer
from ingestor.stream.worker import StreamWorker, sleep_or_stop

log = structlog.get_logger("ingestor.supervisor")

EXIT_OK = 0
EXIT_FAILED = 1


class Supervisor:
    """Owns task lifetimes and the drain order: stop reading, flush, commit, close."""

    def __init__(
        self,
        writer: Writer,
        workers: list[StreamWorker],
        metrics: Metrics,
        stop: asyncio.Event,
        *,
        shutdown_timeout_s: float,
        restart_max_s: float,
    ) -> None:
        self._writer = writer
        self._workers = workers
        self._metrics = metrics
        self._stop = stop
        self._shutdown_timeout_s = shutdown_timeout_s
        self._restart_max_s = restart_max_s

    async def _guard(self, worker: StreamWorker) -> None:
        """Restart a crashed worker with backoff; a worker bug must not lose its group."""
        crashes = 0
        while not self._stop.is_set():
            try:
                await worker.run()
                return
            except Exception:
                crashes += 1
                delay = random.uniform(0.5, min(self._restart_max_s, 2**crashes))
                self._metrics.worker_restarts.labels(worker.group.key).inc()
                log.exception(
                    "worker_crashed", group=worker.group.key, crashes=crashes, restart_in_s=delay
                )
                if await sleep_or_stop(self._stop, delay):
                    return

    async def run(self) -> int:
        """Until ``stop`` is set or a task that must not end does; returns the exit code."""
        spawn = asyncio.create_task
        writer_task = spawn(self._writer.run(), name="writer")
        worker_tasks = [spawn(self._guard(w), name=f"worker:{w.group.key}") for w in self._workers]
        stop_task = spawn(self._stop.wait(), name="stop-signal")
        log.info("supervisor_started", groups=len(worker_tasks))
        done, _ = await asyncio.wait(
            [writer_task, stop_task, *worker_tasks], return_when=asyncio.FIRST_COMPLETED
        )
        code = EXIT_OK
        if stop_task not in done:
            code = EXIT_FAILED
            for task in done:
                exc = None if task.cancelled() else task.exception()
                log.error("task_ended", task=task.get_name(), error=repr(exc) if exc else None)
        self._stop.set()
        stop_task.cancel()
        return await self._drain(writer_task, worker_tasks, code)

    async def _drain(
        self, writer_task: asyncio.Task[None], worker_tasks: list[asyncio.Task[None]], code: int
    ) -> int:
        """Stop reading, then let the writer flush everything accepted, within the bound."""
        log.info("shutdown_started", timeout_s=self._shutdown_timeout_s)
        try:
            # One deadline for the whole drain: workers stop reading, then the writer flushes
            # everything queued before the sentinel and commits its cursors.
            async with asyncio.timeout(self._shutdown_timeout_s):
                for task in worker_tasks:
                    task.cancel()
                await asyncio.gather(*worker_tasks, return_exceptions=True)
                if writer_task.done():
                    return EXIT_FAILED
                await self._writer.queue.put(None)
                await writer_task
        except TimeoutError:
            log.error("shutdown_timeout", timeout_s=self._shutdown_timeout_s)
            writer_task.cancel()
            await asyncio.gather(writer_task, return_exceptions=True)
            return EXIT_FAILED
        reg = self._metrics.registry
        log.info(
            "shutdown_complete",
            flushes=self._writer.flushes,
            events_queued=reg.get_sample_value("ingestor_events_queued_total"),
            events_committed=reg.get_sample_value("ingestor_events_committed_total"),
        )
        return code
