"""The README names every metric and every log event the package emits, and no other metric."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from ingestor.metrics import Metrics

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
LOG_CALL = re.compile(r"\blog\.(?:debug|info|warning|error|exception)\(\s*\"([a-z_]+)\"")


def test_the_metrics_table_names_every_metric_and_no_other() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    exposed = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in registry.collect()
    }
    table = README.split("## Metrics", 1)[1].split("\n\n", 3)[2]  # the table under the title
    documented = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    assert exposed - documented == set(), "metrics missing from the README's table"
    assert documented - exposed == set(), "the README's table names metrics that do not exist"


def test_every_log_event_is_named_in_the_readme() -> None:
    events = {
        name
        for path in (ROOT / "ingestor").rglob("*.py")
        for name in LOG_CALL.findall(path.read_text())
    }
    assert len(events) > 40  # the pattern still finds the calls
    missing = {e for e in events if f"`{e}`" not in README and not e.startswith("simulator_")}
    assert missing == set(), "log events the README does not name"
    assert "`simulator_*`" in README
