"""The compose stack, the Dockerfile and the Prometheus files, checked without a Docker engine."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ingestor.cli.main import _parser

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
COMPOSE = ROOT / "docker-compose.yml"
PROM = ROOT / "deploy" / "prometheus"


def _run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=300)


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(BIN))
    assert path, f"{name} is missing: scripts/test installs it (Debian package or PyPI lock)"
    return path


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # type: ignore[no-any-return]


def _defaults(text: str) -> str:
    """Compose interpolation with every variable at its default."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", text)


def test_compose_file_follows_the_compose_spec() -> None:
    out = _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_passes_hadolint() -> None:
    out = _run(_tool("hadolint"), "Dockerfile")
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_compose_commands_and_mounts_exist() -> None:
    services = _compose()["services"]
    # One image, built once: by migrate (the first to start); the others name it and depend
    # on migrate, so that Compose (docker compose and podman-compose alike) builds it first.
    assert [name for name, s in services.items() if "build" in s] == ["migrate"]
    assert services["migrate"]["build"] == "."
    image = services["migrate"]["image"]
    built = {name: s for name, s in services.items() if s.get("image") == image}
    assert set(built) == {"migrate", "simulator", "ingestor"}
    for name, service in built.items():
        assert name == "migrate" or "migrate" in service["depends_on"], name
        args = [_defaults(a) for a in service["command"]]
        parsed = _parser().parse_args(args)  # exits (fails the test) on a bad command
        assert parsed.command == args[0], name
        if "--config" in args:  # the config path must be inside a mounted repo folder
            path = args[args.index("--config") + 1]
            assert (ROOT / "config" / Path(path).name).exists()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_compose_services_of_the_image_say_their_own_healthcheck() -> None:
    """The Dockerfile's HEALTHCHECK is the daemon's (/healthz): every other service run from
    the image replaces it or turns it off (a one-shot migrate would be "unhealthy")."""
    services = _compose()["services"]
    image = services["migrate"]["image"]
    for name, service in services.items():
        if service.get("image") == image:
            check = service.get("healthcheck", {})
            assert check.get("disable") is True or check.get("test"), name
    assert services["migrate"]["healthcheck"] == {"disable": True}


def test_postgres_healthcheck_connects_over_tcp() -> None:
    """On a new volume the image first runs a temporary server on the Unix socket only (for
    the init scripts): a socket check would call it healthy before TCP clients can connect."""
    test = _compose()["services"]["postgres"]["healthcheck"]["test"]
    assert re.search(r"pg_isready (-h ?|--host[= ])(127\.0\.0\.1|localhost) ", test[1]), test


def test_prometheus_stores_in_its_volume() -> None:
    prometheus = _compose()["services"]["prometheus"]
    paths = [
        a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--storage.tsdb.path=")
    ]
    mounts = [v.split(":")[1] for v in prometheus["volumes"] if not v.startswith("./")]
    assert paths and paths == mounts, (paths, mounts)


def test_docker_build_context_and_frontend() -> None:
    """No BuildKit frontend to pull (# syntax=), and .dockerignore keeps what the Dockerfile
    copies while leaving out the venv, git, secrets and caches."""
    import fnmatch

    text = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, flags=re.M | re.I)
    ignored = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for must in (".venv", ".git", ".env", ".compose-check", "tests/node/node_modules"):
        assert must in ignored, must
    copied = [
        src
        for args in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.M)
        for src in args.split()[:-1]
    ]
    assert {"requirements.lock", "ingestor", "alembic", "config"} <= set(copied)
    for src in copied:
        assert (ROOT / src).exists(), src
        assert not any(fnmatch.fnmatch(src, pattern) for pattern in ignored), src


def test_env_example_documents_every_variable() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    documented = set(re.findall(r"^(\w+)=", (ROOT / ".env.example").read_text(), flags=re.M))
    assert used <= documented, used - documented


def test_prometheus_config_and_alert_rules() -> None:
    promtool = _tool("promtool")
    for cmd in (
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "alerts.yml"),
        ("test", "rules", "alerts_test.yml"),
    ):
        out = _run(promtool, *cmd, cwd=PROM)
        assert out.returncode == 0, out.stdout + out.stderr
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"][0]["rules"]
    tested = set(re.findall(r"alertname: (\w+)", (PROM / "alerts_test.yml").read_text()))
    assert {r["alert"] for r in rules} == tested  # every alert has a unit test


async def test_dockerfile_build_steps_work_as_written(tmp_path: Path) -> None:
    """The Dockerfile's own pip commands, run in scratch venvs, build the C twins and give a
    working entrypoint (the apt-get line is the image's own: this machine has a compiler)."""
    text = (ROOT / "Dockerfile").read_text()
    build = text.split("FROM python", 2)[1].replace("\\\n", " ")  # the build stage
    runs = [r for r in re.findall(r"^RUN (.+)$", build, flags=re.M) if "pip " in r]
    assert len(runs) == 2
    src = tmp_path / "src"
    shutil.copytree(ROOT / "ingestor", src / "ingestor", ignore=shutil.ignore_patterns("*.so"))
    for name in ("requirements.lock", "requirements-build.lock", "pyproject.toml", "setup.py"):
        shutil.copy(ROOT / name, src / name)
    shutil.copy(ROOT / "README.md", src / "README.md")
    venv = tmp_path / "venv"
    for run in runs:
        cmd = run.replace("/venv", str(venv)).replace("/build/", f"{tmp_path}/build/")
        cmd = cmd.replace("venv /build", f"venv {tmp_path}/build")
        cmd = cmd.replace("/wheels", f"{tmp_path}/wheels")
        proc = await asyncio.create_subprocess_shell(
            cmd,
            cwd=src,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
        printed, _ = await asyncio.wait_for(proc.communicate(), 300)
        assert proc.returncode == 0, printed.decode()[-2000:]
    entry = re.search(r"^ENTRYPOINT (\[.+\])$", text, flags=re.M)
    assert entry is not None
    argv = yaml.safe_load(entry.group(1))
    out = _run(str(venv / "bin" / argv[0]), "--help")
    assert out.returncode == 0 and "migrate" in out.stdout, out.stderr


def test_dashboards_use_the_provisioned_datasources() -> None:
    import json

    grafana = ROOT / "deploy" / "grafana"
    provisioned = yaml.safe_load((grafana / "provisioning/datasources/datasources.yml").read_text())
    uids = {d["uid"]: d["type"] for d in provisioned["datasources"]}
    providers = yaml.safe_load((grafana / "provisioning/dashboards/dashboards.yml").read_text())
    mounted = {v.split(":")[1] for v in _compose()["services"]["grafana"]["volumes"]}
    assert providers["providers"][0]["options"]["path"] in mounted
    for path in (grafana / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for ref in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
                assert uids.get(ref["uid"]) == ref["type"], (path.name, panel["title"])
    home = _compose()["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert Path(home).name in {p.name for p in (grafana / "dashboards").glob("*.json")}


async def test_compose_roles_let_the_daemon_write_only_its_tables(
    admin_url: str, empty_database_url: str
) -> None:
    """Run the compose init script for real, migrate as the owner, check the app role."""
    import uuid

    import asyncpg

    from ingestor.storage.db import check_privileges
    from ingestor.storage.migrations import upgrade

    suffix = uuid.uuid4().hex[:8]
    app, reader = f"app_{suffix}", f"reader_{suffix}"
    dbname = empty_database_url.rpartition("/")[2]
    host_port = admin_url.rpartition("@")[2].rpartition("/")[0]
    host, _, port = host_port.partition(":")
    env = {
        **os.environ,
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": dbname,
        "PGHOST": host,
        "PGPORT": port or "5432",
        "INGESTOR_DB_USER": app,
        "INGESTOR_DB_PASSWORD": "pw",
        "GRAFANA_DB_USER": reader,
        "GRAFANA_DB_PASSWORD": "it's / #",
    }
    out = await asyncio.to_thread(
        subprocess.run,
        ["sh", str(ROOT / "deploy/postgres/init-roles.sh")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        assert out.returncode == 0, out.stderr
        await asyncio.to_thread(upgrade, empty_database_url)
        conn = await asyncpg.connect(empty_database_url.replace("postgres@", f"{app}@", 1))
        try:
            await check_privileges(conn)  # raises when a table is not writable
            await conn.execute(
                "INSERT INTO stream_cursors (group_key, stream, sport, leagues)"
                " VALUES ('g', 'copilot', 'x', '{}')"
            )
            for forbidden in ("DELETE FROM odds", "DROP TABLE odds", "CREATE TABLE x (a int)"):
                try:
                    await conn.execute(forbidden)
                except asyncpg.InsufficientPrivilegeError:
                    continue
                raise AssertionError(f"{app} may run {forbidden}")
        finally:
            await conn.close()
        reader_conn = await asyncpg.connect(empty_database_url.replace("postgres@", f"{reader}@"))
        try:
            assert await reader_conn.fetchval("SELECT count(*) FROM stream_cursors") == 1
            try:
                await reader_conn.execute("UPDATE stream_cursors SET sport = 'y'")
            except asyncpg.InsufficientPrivilegeError:
                pass
            else:
                raise AssertionError("the Grafana role may write")
        finally:
            await reader_conn.close()
    finally:
        admin = await asyncpg.connect(admin_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{dbname}"')  # the fixture drops it again
        for role in (app, reader):
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


def test_compose_check_prepares_every_dashboard_query() -> None:
    """scripts/compose_check.py (run against the real stack by scripts/compose-check) finds
    every panel target, fills in every Grafana variable and maps every data source uid; the
    Grafana role it connects as comes from the grafana service's environment."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location(
        "compose_check", ROOT / "scripts/compose_check.py"
    )
    assert spec is not None and spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    sources = check.datasources()
    targets = check.panels()

    def count(panels: list[dict[str, Any]]) -> int:  # rows may hold panels
        return sum(len(p.get("targets", [])) + count(p.get("panels", [])) for p in panels)

    boards = (ROOT / "deploy/grafana/dashboards").glob("*.json")
    assert len(targets) == sum(count(json.loads(b.read_text())["panels"]) for b in boards) > 0
    for _board, panel, target, variables in targets:
        source = sources[(target.get("datasource") or panel["datasource"])["uid"]]
        query = target.get("expr") or target["rawSql"]
        assert "$" not in check.substitute(query, variables), panel["title"]
        assert source["type"] in ("prometheus", "grafana-postgresql-datasource")
    sql = [s for s in sources.values() if s["type"] == "grafana-postgresql-datasource"]
    assert all(s["user"] and s["jsonData"]["database"] for s in sql)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAFANA_", "POSTGRES_"))}
    with_defaults = check.interpolate("${GRAFANA_DB_USER:-grafana_reader}/${X-}/$$", env)
    assert with_defaults == "grafana_reader//$"
