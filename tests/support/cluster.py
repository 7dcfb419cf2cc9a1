"""A real primary and a streaming hot standby, started from the local PostgreSQL binaries
(``initdb``, ``pg_basebackup -R``, ``pg_ctl promote``), for failover tests.

Replication runs through a TCP proxy, so that a test can cut it while the primary keeps
acknowledging commits (asynchronous replication): killing the primary then loses them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from loopback.tcpproxy import TcpProxy
from tests.conftest import free_port, pg_bin


@dataclass
class Node:
    """One server: its data directory and port."""

    data: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        """This server alone."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


@dataclass
class Replicated:
    """A primary, a standby streaming from it through ``link`` (a proxy), and a URL naming
    both hosts as users of Patroni or a managed service write it."""

    workdir: Path
    bindir: Path
    primary: Node
    standby: Node
    link: TcpProxy
    log: list[str] = field(default_factory=list)

    def url(self, database: str, user: str = "postgres") -> str:
        """Both hosts, the writable one wanted."""
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return f"postgresql://{user}@{hosts}/{database}?target_session_attrs=read-write"

    async def kill_primary(self) -> None:
        """The primary dies at once (no checkpoint, no goodbye)."""
        await _run(
            self,
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.primary.data),
            "-m",
            "immediate",
            "-w",
            "stop",
        )

    async def promote(self) -> None:
        """The standby becomes the primary (what Patroni or the provider does)."""
        await _run(self, str(self.bindir / "pg_ctl"), "-D", str(self.standby.data), "-w", "promote")

    async def stop(self) -> None:
        """Everything down and removed."""
        for node in (self.primary, self.standby):
            await _run(
                self,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(node.data),
                "-m",
                "immediate",
                "stop",
                check=False,
            )
        await self.link.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _as_postgres() -> list[str]:
    # initdb refuses to run as root: the servers run as the postgres user when we are root.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


async def _run(cluster: Replicated | None, *cmd: str, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        *_as_postgres(), *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode(errors="replace")
    if cluster is not None:
        cluster.log.append(f"$ {' '.join(cmd)}\n{text}")
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {text[-2000:]}")
    return text


SERVER = (
    "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=on -c wal_level=replica "
    "-c max_wal_senders=5 -c hot_standby=on -c wal_keep_size=256MB -c max_connections=60"
)


async def start_replicated(database: str) -> Replicated:
    """A primary with ``database``, a standby caught up with it, replication through a proxy."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("no PostgreSQL binaries (initdb) installed")
    workdir = Path(tempfile.mkdtemp(prefix="ingestor-ha-"))
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
    primary = Node(workdir / "primary", free_port())
    standby = Node(workdir / "standby", free_port())
    await _run(
        None, str(bindir / "initdb"), "-D", str(primary.data), "-U", "postgres", "-A", "trust"
    )
    await _run(
        None,
        str(bindir / "pg_ctl"),
        "-D",
        str(primary.data),
        "-l",
        str(workdir / "primary.log"),
        "-w",
        "start",
        "-o",
        f"-p {primary.port} -k {workdir} {SERVER}",
    )
    link = TcpProxy("127.0.0.1", primary.port)
    await link.start()
    cluster = Replicated(workdir, bindir, primary, standby, link)
    await _run(
        cluster,
        str(bindir / "psql"),
        "-h",
        "127.0.0.1",
        "-p",
        str(primary.port),
        "-U",
        "postgres",
        "-c",
        f'CREATE DATABASE "{database}"',
    )
    # The standby's primary_conninfo names the proxy: cutting it cuts replication.
    await _run(
        cluster,
        str(bindir / "pg_basebackup"),
        "-h",
        "127.0.0.1",
        "-p",
        str(link.port),
        "-U",
        "postgres",
        "-D",
        str(standby.data),
        "-R",
        "-c",
        "fast",
        "-X",
        "stream",
    )
    await _run(
        cluster,
        str(bindir / "pg_ctl"),
        "-D",
        str(standby.data),
        "-l",
        str(workdir / "standby.log"),
        "-w",
        "start",
        "-o",
        f"-p {standby.port} -k {workdir} {SERVER}",
    )
    return cluster
