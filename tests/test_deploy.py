"""What ships for operators, checked against the running server: the Grafana dashboard refers
only to metrics the server exports; the Helm chart passes Helm's own strict lint (Helm's Go SDK,
no helm binary), renders into the plain manifests kept beside it, and validates against the
newest Kubernetes schemas kubernetes-validate knows."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from tests.conftest import RunningServer

DASHBOARD = Path(__file__).parents[1] / "deploy" / "grafana-dashboard.json"
METRIC = re.compile(r"\b(?:streaming|process)_[a-z0-9_]+\b")
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")
LATEST = kubernetes_validate.latest_version()


def exported(server: RunningServer) -> set[str]:
    """Every series name the server's /metrics can hold, from its TYPE lines (a labelled
    counter nobody has counted yet has no sample, but has its TYPE)."""
    with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    families = re.findall(r"^# TYPE (\S+) \S+$", text, re.MULTILINE)
    return {family + suffix for family in families for suffix in SUFFIXES}


def test_the_dashboard_queries_only_metrics_the_server_exports(server: RunningServer) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    named = {name for query in queries for name in METRIC.findall(query)}
    assert len(named) >= 15
    # The capacity estimate is exported once a minute of speech was decoded (tests/test_capacity.py).
    assert named - exported(server) - {"streaming_capacity_streams"} == set()
    # Every panel has a unique id and a place; every query a legend.
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    assert all(target["legendFormat"] for panel in dashboard["panels"] for target in panel["targets"])


# ---------------------------------------------------------------------------- Kubernetes

CHART = Path(__file__).parents[1] / "deploy" / "helm" / "streaming"
# Every template rendered: the GPU values, an Ingress, and API keys the chart puts in a Secret.
EVERYTHING = {"ingress": {"enabled": True, "tlsSecret": "streaming-tls"}, "apiKeys": {"keys": ["k1", "k2"]}}


def _render_module() -> Any:
    spec = importlib.util.spec_from_file_location("render", CHART.parents[1] / "render.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documents(text: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(text) if d}


def test_the_chart_passes_helm_lint_strict() -> None:
    import helm_python

    for values in ({}, yaml.safe_load((CHART / "values-gpu.yaml").read_text()), EVERYTHING):
        report = helm_python.lint(str(CHART), values, strict=True, kube_version=f"v{LATEST}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
        assert problems == [], problems
        assert report["errors"] == []


def test_the_plain_manifests_are_the_chart_rendered_and_in_step_with_it() -> None:
    render = _render_module()
    for path, text in render.expected().items():
        assert path.read_text() == text, f"{path.name} is stale: run python deploy/render.py"


def test_every_manifest_validates_against_the_current_kubernetes_schemas() -> None:
    render = _render_module()
    streams = [p.read_text() for p in (CHART.parents[1] / "kubernetes").glob("*.yaml")]
    streams.append(render.render([CHART / "values-gpu.yaml"], EVERYTHING))
    kinds = set()
    for text in streams:
        for document in yaml.safe_load_all(text):
            if document:
                kubernetes_validate.validate(document, LATEST, strict=True)
                kinds.add(document["kind"])
    assert kinds == {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Ingress",
        "Secret",
    }


def test_the_chart_drains_probes_and_scales_as_the_server_behaves(server: RunningServer) -> None:
    from streaming.cli import env_var
    from streaming.config import Config

    render = _render_module()
    docs = _documents(render.render([CHART / "values-gpu.yaml"], EVERYTHING))
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    # Every variable is one of the server's own (a typo would be ignored by the server).
    assert set(env) <= {env_var(f.name) for f in dataclasses.fields(Config)}
    assert pod["terminationGracePeriodSeconds"] > float(env["STREAMING_DRAIN_TIMEOUT"])
    assert "kill -TERM 1" in " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthcheck"
    for probe in ("/ready", "/healthcheck"):  # probes send no key, and must not need one
        with urllib.request.urlopen(f"{server.http_url}{probe}", timeout=10) as response:
            assert response.status == 200
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env["STREAMING_DEVICE"] == "cuda"
    # API keys: a file from the Secret, never the environment.
    assert env["STREAMING_API_KEY_FILE"].startswith(container["volumeMounts"][1]["mountPath"])
    assert docs["Secret"]["stringData"]["keys"].split() == ["k1", "k2"]
    assert "STREAMING_API_KEY" not in env
    assert docs["Service"]["spec"]["sessionAffinity"] == "None"
    assert docs["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    annotations = docs["Ingress"]["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    # The autoscaler's metric is one the server exports, per pod.
    metric = docs["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert metric in exported(server)
