"""Kubernetes manifests: valid against the schemas (offline), and every reference they make
(command, config file, port, probe path, secret key, setting) exists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ingestor.cli.main import _parser
from ingestor.config import Settings, load_settings
from ingestor.metrics import Metrics
from ingestor.web import make_app

K8S = Path(__file__).parents[2] / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((K8S / name).read_text())  # type: ignore[no-any-return]


def test_manifests_pass_the_kubernetes_schemas() -> None:
    tool = Path(sys.executable).parent / "kubernetes-validate"
    out = subprocess.run(
        [str(tool), "--strict", *map(str, MANIFESTS)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("passed") == len(MANIFESTS)


def test_kustomization_lists_every_manifest() -> None:
    assert set(_load("kustomization.yaml")["resources"]) == {p.name for p in MANIFESTS}


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["deployment.yaml", "migrate-job.yaml"])
def test_commands_and_secrets_exist(name: str) -> None:
    doc = _load(name)
    args = _container(doc)["args"]
    assert _parser().parse_args(args).command == args[0]
    secret = _load("secret.yaml")
    for env in _container(doc)["env"]:
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["stringData"]
        name_ok = env["name"] in ("OPTICODDS_API_KEY_FILE", "OPTICODDS_API_KEY") or (
            env["name"].removeprefix("INGESTOR_").lower() in Settings.model_fields
        )
        assert name_ok, env["name"]


def test_deployment_references_exist(tmp_path: Path) -> None:
    doc = _load("deployment.yaml")
    pod = doc["spec"]["template"]["spec"]
    c = _container(doc)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    # --config points at the ConfigMap's file, and that file is a valid configuration.
    config_path = Path(c["args"][c["args"].index("--config") + 1])
    assert mounts["config"] == str(config_path.parent)
    configmap = _load("configmap.yaml")
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    toml = configmap["data"][config_path.name]
    (tmp_path / "c.toml").write_text(toml)
    settings = load_settings(tmp_path / "c.toml")
    # The key file is the mounted secret item.
    key_file = next(e["value"] for e in c["env"] if e["name"] == "OPTICODDS_API_KEY_FILE")
    item = volumes["api-key"]["secret"]["items"][0]
    assert key_file == f"{mounts['api-key']}/{item['path']}"
    assert item["key"] in _load("secret.yaml")["stringData"]
    # Ports, probes and scraping agree with the daemon.
    port = c["ports"][0]["containerPort"]
    assert port == settings.metrics_port
    assert doc["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    routes = {
        r.resource.canonical
        for r in make_app(Metrics(), _ready).router.routes()
        if r.resource is not None
    }
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" in routes
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" in routes
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_timeout_s
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
    service = _load("service.yaml")
    assert service["spec"]["selector"] == doc["spec"]["selector"]["matchLabels"]


async def _ready() -> tuple[bool, str]:
    return True, "ok"
