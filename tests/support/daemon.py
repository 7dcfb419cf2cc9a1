"""The real daemon as a subprocess: start it with a config file, read its logs and metrics."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.support.fakefeed import API_KEY


class Daemon:
    """``python -m ingestor run`` with its output collected."""

    def __init__(self, proc: asyncio.subprocess.Process, metrics_port: int) -> None:
        self.proc = proc
        self.metrics_port = metrics_port
        self.lines: list[bytes] = []
        self._reader = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line)

    def events(self) -> list[dict[str, Any]]:
        """Every log line parsed as JSON (fails the test on a line that is not)."""
        return [orjson.loads(line) for line in self.lines]

    async def metrics(self) -> str:
        """The /metrics page."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        async with aiohttp.ClientSession() as s, s.get(url) as resp:
            assert resp.status == 200
            return await resp.text()

    async def readyz(self) -> tuple[int, str]:
        """/readyz: status and body."""
        url = f"http://127.0.0.1:{self.metrics_port}/readyz"
        async with aiohttp.ClientSession() as s, s.get(url) as resp:
            return resp.status, await resp.text()

    async def ready(self) -> bool:
        """Whether /readyz answers 200."""
        return (await self.readyz())[0] == 200

    async def probes(self) -> dict[str, int]:
        """Status of /healthz and /readyz."""
        out = {}
        async with aiohttp.ClientSession() as s:
            for path in ("/healthz", "/readyz"):
                async with s.get(f"http://127.0.0.1:{self.metrics_port}{path}") as resp:
                    out[path] = resp.status
        return out

    async def stop(self, timeout_s: float = 15) -> int:
        """SIGTERM and wait for the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return await self.exited(timeout_s)

    async def exited(self, timeout_s: float = 30) -> int:
        """Wait for the process to end by itself; its exit code. Killed if it outlives that."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.proc.kill()  # never left running after the test
            await self.proc.wait()
            raise
        finally:
            await self._reader
            self._show_tail()
        return code

    async def kill(self) -> None:
        """SIGKILL: no flush, no goodbye."""
        self.proc.kill()
        await self.proc.wait()
        await self._reader
        self._show_tail()

    def _show_tail(self, lines: int = 80) -> None:
        """The daemon's last log lines on stdout: pytest shows them when the test fails."""
        tail = b"".join(self.lines[-lines:]).decode(errors="replace")
        print(f"--- daemon exited {self.proc.returncode}; its last lines ---\n{tail}")

    def peak_rss_mb(self) -> float:
        """Peak resident memory so far (VmHWM), while the process lives."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    def log_events(self, name: str) -> list[dict[str, Any]]:
        """Parsed log lines with this event name."""
        return [e for e in self.events() if e.get("event") == name]


def write_config(
    path: Path, base_url: str, metrics_port: int, leagues: tuple[str, ...] = ("NBA",), **extra: Any
) -> Path:
    """A real TOML config for one copilot stream."""
    lines = [
        f'api_base_url = "{base_url}"',
        f"metrics_port = {metrics_port}",
        'metrics_host = "127.0.0.1"',
        "reconnect_initial_s = 0.05",
        "reconnect_max_s = 0.5",
        *(f"{k} = {orjson.dumps(v).decode()}" for k, v in extra.items()),
        "",
        "[[streams]]",
        'kind = "copilot"',
        'sport = "basketball"',
        f"leagues = {list(leagues)!r}".replace("'", '"'),
        "include_fixture_updates = true",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any INGESTOR_/OPTICODDS_ setting, plus ``settings``:
    a setting left in the shell would override the test's config file."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTOR_", "OPTICODDS_"))}
    return {**base, **settings}


async def start_daemon(config: Path, database_url: str, metrics_port: int) -> Daemon:
    """Spawn the daemon with the key and database in its environment."""
    env = clean_env(INGESTOR_DATABASE_URL=database_url, OPTICODDS_API_KEY=API_KEY)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ingestor",
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    return Daemon(proc, metrics_port)


async def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 60
) -> tuple[int, str]:
    """Run ``python -m ingestor ...`` to its end; the exit code and stdout+stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ingestor",
        *args,
        env=clean_env(**(env or {})),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode()
