"""Runs the writer and one worker per group as named tasks; restarts or stops, never ignores."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from ingestor.config import ServiceSettings
from ingestor.lifecycle import sleep_or_stop
from ingestor.metrics import Metrics
from ingestor.ports import Claim, WritePath
from ingestor.stream.worker import StreamWorker

log = structlog.get_logger("ingestor.supervisor")

# How long giving a group back waits for the writer to commit what the group queued.
DRAIN_S = 30.0
EXIT_OK = 0
EXIT_FAILED = 1


class Supervisor:
    """Owns task lifetimes and the drain order: stop reading, flush, commit, close."""

    def __init__(
        self,
        writer: WritePath,
        workers: list[StreamWorker],
        metrics: Metrics,
        stop: asyncio.Event,
        settings: ServiceSettings,
        *,
        workers_on_demand: bool = False,
    ) -> None:
        self._writer = writer
        self._workers = {w.group.key: w for w in workers}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._epochs: dict[str, int] = {}
        # Named tasks that must not end while the process runs (leases, partition upkeep...).
        self._extra: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {}
        # True: a watched task (the leases) starts and stops the workers; False: all start.
        self._workers_on_demand = workers_on_demand
        self._metrics = metrics
        self._stop = stop
        self._shutdown_timeout_s = settings.shutdown_timeout_s
        self._restart_max_s = settings.worker_restart_max_s

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

    def watch(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``factory()`` as a named task beside the writer; its end stops the process."""
        self._extra[name] = factory

    async def start_worker(
        self, key: str, claim: Claim | None = None, *, takeover: bool = False
    ) -> None:
        """Run a group's worker under ``claim`` (its epoch and the cursor the database holds;
        none: the writer's, unfenced); ``takeover``: another process streamed it until now."""
        if key in self._tasks and not self._tasks[key].done():
            return
        claim = claim or Claim(0, self._writer.committed(key))
        self._writer.take_over(key, claim.cursor, careful=takeover)
        self._epochs[key] = claim.epoch
        worker = self._workers[key]
        worker.begin(claim.epoch, claim.cursor)  # and forgets an earlier ownership's failures
        self._tasks[key] = asyncio.create_task(self._guard(worker), name=f"worker:{key}")

    def owned(self) -> dict[str, int]:
        """The groups this process streams now, with the epoch each is streamed under."""
        return {k: self._epochs[k] for k, t in self._tasks.items() if not t.done()}

    async def stop_worker(self, key: str, drain: bool = False) -> bool:
        """Stop a group's worker and wait until it no longer reads; ``drain``: and until what
        it queued is committed (bounded), so that the next owner starts after our last write.
        Returns whether that is so (False: not drained in time, or not asked to drain)."""
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        drained = False
        if task is not None or drain:
            drained = await self._writer.give_back(key, drain_s=DRAIN_S if drain else None)
        self._workers[key].end()
        return drained

    def running(self) -> list[StreamWorker]:
        """The workers of the groups this process streams now."""
        return [self._workers[k] for k, t in self._tasks.items() if not t.done()]

    async def run(self) -> int:
        """Until ``stop`` is set or a task that must not end does; returns the exit code."""
        spawn = asyncio.create_task
        writer_task = spawn(self._writer.run(), name="writer")
        watched: list[asyncio.Task[None]] = [writer_task]
        watched += [spawn(factory(), name=name) for name, factory in self._extra.items()]
        if not self._workers_on_demand:
            for key in self._workers:
                await self.start_worker(key)
            watched += self._tasks.values()
        stop_task = spawn(self._stop.wait(), name="stop-signal")
        log.info("supervisor_started", groups=len(self._workers), tasks=[*self._extra])
        done, _ = await asyncio.wait([stop_task, *watched], return_when=asyncio.FIRST_COMPLETED)
        code = EXIT_OK
        if stop_task not in done:
            code = EXIT_FAILED
            for task in done:
                exc = None if task.cancelled() else task.exception()
                self._metrics.task_failures.labels(task.get_name()).inc()
                # The traceback goes with it: a task that must not end is a bug or worse.
                log.error(
                    "task_ended",
                    task=task.get_name(),
                    error=repr(exc) if exc else None,
                    exc_info=exc,
                )
        self._stop.set()
        stop_task.cancel()
        others = [t for t in watched if t is not writer_task]
        return await self._drain(writer_task, others, code)

    async def _drain(
        self, writer_task: asyncio.Task[None], worker_tasks: list[asyncio.Task[None]], code: int
    ) -> int:
        """Stop reading, then let the writer flush everything accepted, within the bound."""
        log.info("shutdown_started", timeout_s=self._shutdown_timeout_s)
        try:
            # One deadline for the whole drain: workers stop reading, then the writer flushes
            # everything queued before the sentinel and commits its cursors.
            async with asyncio.timeout(self._shutdown_timeout_s):
                # The leases task stops its workers itself; then whatever still reads.
                for task in [*worker_tasks, *self._tasks.values()]:
                    task.cancel()
                await asyncio.gather(*worker_tasks, *self._tasks.values(), return_exceptions=True)
                if writer_task.done():
                    return EXIT_FAILED
                await self._writer.close()
                await writer_task
        except TimeoutError:
            log.error("shutdown_timeout", timeout_s=self._shutdown_timeout_s)
            writer_task.cancel()
            await asyncio.gather(writer_task, return_exceptions=True)
            return EXIT_FAILED
        reg = self._metrics.registry
        log.info(
            "shutdown_complete",
            flushes=self._writer.health().flushes,
            events_queued=reg.get_sample_value("ingestor_events_queued_total"),
            events_committed=reg.get_sample_value("ingestor_events_committed_total"),
        )
        return code
