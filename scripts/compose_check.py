"""The checks of scripts/compose-check against the running compose stack (no Grafana server).

Everything is read from the repository's files, so a new panel, alert rule or data source is
checked without a change here:

- the Grafana data sources from deploy/grafana/provisioning/datasources/datasources.yml, with
  ${VAR} taken from the grafana service's environment in docker-compose.yml (its ${VAR:-default}
  resolved as Compose does), as Grafana would read them;
- every panel target of every dashboard in deploy/grafana/dashboards/, run against the data
  source its uid names: PromQL through the Prometheus HTTP API, SQL as the Grafana role;
- the alert rules of deploy/prometheus/alerts.yml, as Prometheus loaded them, and the flags of
  the prometheus service's command, as Prometheus runs with them.

The services are reached through their published ports: --publish SERVICE:PORT=HOST:PORT maps
an address of the compose network (as a data source URL names it) to one on this machine.

usage: compose_check.py --publish ... (wait-odds | prometheus | panels) [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psycopg2
import yaml

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
# Grafana's own variables, at values a dashboard opened on "last 15 minutes" would get.
GRAFANA_GLOBALS = {"__rate_interval": "1m", "__interval": "15s", "__range": "15m"}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default} and $$ (enough for this repo)."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, default = m.group(1), m.group(2), m.group(3) or ""
        value = env.get(name)
        if (op == ":-" and not value) or (op == "-" and value is None):
            return default
        return value or ""

    return re.sub(r"\$\$|\$\{(\w+)(?:(:?-)([^}]*))?\}", one, text)


def grafana_environment() -> dict[str, str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["grafana"].get("environment", {})
    return {k: interpolate(str(v), dict(os.environ)) for k, v in env.items()}


def datasources() -> dict[str, dict[str, Any]]:
    """uid -> provisioned data source, ${VAR} expanded from Grafana's environment."""
    text = (GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text()
    env = grafana_environment()
    text = re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), text)
    return {d["uid"]: d for d in yaml.safe_load(text)["datasources"]}


class Stack:
    def __init__(self, published: dict[str, str]) -> None:
        self.published = published  # "postgres:5432" -> "127.0.0.1:49153"
        self.sources = datasources()

    def address(self, url: str) -> str:
        hostport = urllib.parse.urlsplit(url if "//" in url else f"//{url}").netloc
        if hostport not in self.published:
            raise SystemExit(f"no published port for {hostport} (data source URL {url})")
        return self.published[hostport]

    def source(self, kind: str) -> dict[str, Any]:
        return next(d for d in self.sources.values() if d["type"] == kind)

    def promql(self, expr: str, source: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        base = self.address((source or self.source("prometheus"))["url"])
        url = f"http://{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise RuntimeError(f"{expr}: {body}")
        return body["data"]["result"]  # type: ignore[no-any-return]

    def prom_api(self, path: str) -> dict[str, Any]:
        base = self.address(self.source("prometheus")["url"])
        with urllib.request.urlopen(f"http://{base}{path}", timeout=10) as resp:
            return json.load(resp)["data"]  # type: ignore[no-any-return]

    def sql(self, query: str, source: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        ds = source or self.source("grafana-postgresql-datasource")
        host, _, port = self.address(ds["url"]).rpartition(":")
        conn = psycopg2.connect(
            host=host,
            port=int(port),
            user=ds["user"],
            dbname=ds["jsonData"]["database"],
            password=ds["secureJsonData"]["password"],
            connect_timeout=5,
        )
        try:
            conn.set_session(readonly=True, autocommit=True)
            with conn.cursor() as cur:
                cur.execute(query)
                return list(cur.fetchall())
        finally:
            conn.close()


def poll(what: str, timeout: float, attempt: Any) -> Any:
    """Call attempt() until it returns something true; the last error or value on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = attempt()
            last: object = result
            if result:
                return result
        except Exception as exc:  # the service may still be starting
            last = exc
        if time.monotonic() > deadline:
            raise SystemExit(f"FAIL: {what}: not within {timeout:.0f} s (last: {last!r})")
        time.sleep(1)


def wait_odds(stack: Stack, timeout: float) -> None:
    role = stack.source("grafana-postgresql-datasource")["user"]
    n = poll(
        f"rows in odds, read as {role}",
        timeout,
        lambda: stack.sql("SELECT count(*) FROM odds")[0][0],
    )
    print(f"odds: {n} rows, read as {role} through the published port")


def check_prometheus(stack: Stack, timeout: float) -> None:
    def targets() -> list[str]:
        active = stack.prom_api("/api/v1/targets")["activeTargets"]
        return [f"{t['labels']['job']} {t['scrapeUrl']}" for t in active if t["health"] == "up"]

    # Prometheus runs with the compose file's command (config file, storage path, retention).
    command = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["prometheus"]
    flags = stack.prom_api("/api/v1/status/flags")
    for arg in command.get("command", []):
        name, _, value = arg.removeprefix("--").partition("=")
        if flags.get(name) != value:
            raise SystemExit(f"FAIL: Prometheus runs with {name}={flags.get(name)!r}, not {value}")
    print(f"prometheus flags as compose says: {' '.join(command.get('command', []))}")

    up = poll(
        "the ingestor target up in Prometheus",
        timeout,
        lambda: [t for t in targets() if t.startswith("ingestor ")],
    )
    print(f"prometheus target up: {up[0]}")
    # The image built the hot path's C twins (the Dockerfile's build stage), and runs them.
    built = poll(
        "ingestor_build_info scraped",
        timeout,
        lambda: stack.promql('ingestor_build_info{job="ingestor"} == 1'),
    )
    compiled = [b["metric"].get("compiled") for b in built]
    if compiled != ["true"]:
        raise SystemExit(f"FAIL: the image runs without its C twins: compiled={compiled}")
    print("ingestor_build_info: compiled=true (the image built its C twins)")

    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    expected = {r["alert"] for g in alerts["groups"] for r in g["rules"] if "alert" in r}

    def rules() -> dict[str, str]:
        groups = stack.prom_api("/api/v1/rules")["groups"]
        found = {r["name"]: r["health"] for g in groups for r in g["rules"]}
        return found if expected <= found.keys() and set(found.values()) == {"ok"} else {}

    found = poll(f"alert rules {sorted(expected)} loaded and evaluated ok", timeout, rules)
    print(f"prometheus alert rules: {len(found)} loaded, all health ok: {', '.join(sorted(found))}")


def panels() -> list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(dashboard file, panel, target, its variables) for every target of every dashboard."""
    out = []
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        variables = dict(GRAFANA_GLOBALS)
        for var in board.get("templating", {}).get("list", []):
            # "All", as the dashboards open: Grafana puts the allValue in the query.
            if not var.get("includeAll") or "allValue" not in var:
                raise SystemExit(f"{path.name}: variable {var['name']} has no allValue to use")
            variables[var["name"]] = var["allValue"]
        stack = list(board["panels"])
        while stack:
            panel = stack.pop(0)
            stack.extend(panel.get("panels", []))  # collapsed rows hold their panels
            for target in panel.get("targets", []):
                out.append((path.name, panel, target, variables))
    return out


# Grafana's SQL macros, as its PostgreSQL data source expands them for "last 15 minutes".
SQL_MACROS = {"__timeFilter": "{0} BETWEEN now() - interval '15 minutes' AND now()"}


def substitute(text: str, variables: dict[str, str]) -> str:
    """A panel's query as Grafana sends it: its macros and variables filled in."""

    def macro(m: re.Match[str]) -> str:
        name, column = m.group(1), m.group(2).strip()
        if name not in SQL_MACROS:
            raise SystemExit(f"unknown Grafana macro ${name} in {text!r}")
        return SQL_MACROS[name].format(column)

    text = re.sub(r"\$(__\w+)\(([^)]*)\)", macro, text)

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in variables:
            raise SystemExit(f"unknown Grafana variable ${name} in {text!r}")
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, text)


def run_target(
    stack: Stack, panel: dict[str, Any], target: dict[str, Any], variables: dict[str, str]
) -> tuple[str, int]:
    uid = (target.get("datasource") or panel["datasource"])["uid"]
    source = stack.sources.get(uid)
    if source is None:
        raise SystemExit(f"panel {panel['title']!r}: data source uid {uid} is not provisioned")
    if source["type"] == "prometheus":
        result = stack.promql(substitute(target["expr"], variables), source)
        # NaN (a quantile of no observations) is drawn as no data.
        finite = [s for s in result if not math.isnan(float(s["value"][1]))]
        return "promql", len(finite)
    if source["type"] == "grafana-postgresql-datasource":
        return "sql", len(stack.sql(substitute(target["rawSql"], variables), source))
    raise SystemExit(f"panel {panel['title']!r}: no check for data source type {source['type']}")


def check_panels(stack: Stack, timeout: float) -> None:
    todo = panels()
    deadline = time.monotonic() + timeout
    while True:
        rows, empty = [], []
        for board, panel, target, variables in todo:
            error = ""
            try:
                kind, n = run_target(stack, panel, target, variables)
            except (OSError, RuntimeError, psycopg2.Error) as exc:
                kind, n, error = "error", 0, str(exc).strip().splitlines()[0]
            name = f"{panel['title']} [{target.get('refId', '?')}]"
            rows.append((board, name, kind, n, error))
            if n == 0:
                empty.append(f"{board}: {name}")
        # Rates need two scrapes in their window: wait a while before calling a panel empty.
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(2)
    width = max(len(r[1]) for r in rows)
    print(f"{'dashboard':<15} {'panel [target]':<{width}} {'query':<6} result")
    for board, name, kind, n, error in rows:
        shown = f"{n} {'rows' if kind == 'sql' else 'series'}" if n else f"EMPTY {error}"
        print(f"{board:<15} {name:<{width}} {kind:<6} {shown}")
    if empty:
        raise SystemExit(f"FAIL: {len(empty)} panel target(s) without data: " + "; ".join(empty))
    print(f"all {len(rows)} panel targets of {len({r[0] for r in rows})} dashboards return data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("check", choices=["wait-odds", "prometheus", "panels"])
    parser.add_argument("--publish", action="append", default=[], metavar="SERVICE:PORT=ADDR")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    stack = Stack(dict(p.split("=", 1) for p in args.publish))
    {"wait-odds": wait_odds, "prometheus": check_prometheus, "panels": check_panels}[args.check](
        stack, args.timeout
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
