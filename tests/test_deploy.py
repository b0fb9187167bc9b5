"""What ships for operators, checked against the running server: the Grafana dashboard refers
only to metrics the server exports."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from tests.conftest import RunningServer

DASHBOARD = Path(__file__).parents[1] / "deploy" / "grafana-dashboard.json"
METRIC = re.compile(r"\b(?:streaming|process)_[a-z0-9_]+\b")
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")


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
    assert named - exported(server) == set()
    # Every panel has a unique id and a place; every query a legend.
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    assert all(target["legendFormat"] for panel in dashboard["panels"] for target in panel["targets"])
