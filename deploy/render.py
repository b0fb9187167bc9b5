"""Render the Helm chart (deploy/helm/streaming) into plain manifests, without a helm binary:
Helm's own Go SDK through helm-python-sdk. deploy/kubernetes/ holds the result for operators
without helm; tests/test_deploy.py checks that it is in step with the chart.

    python deploy/render.py            # rewrite deploy/kubernetes/*.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
CHART = DEPLOY / "helm" / "streaming"
OUT = DEPLOY / "kubernetes"
# Plain manifests per values file: the defaults (CPU), and the GPU values on top of them.
VARIANTS = {"streaming-cpu.yaml": [], "streaming-gpu.yaml": [CHART / "values-gpu.yaml"]}
HEADER = "# Rendered from deploy/helm/streaming by deploy/render.py ({values}); do not edit by hand.\n"


def render(values_files: list[Path], extra: dict[str, Any] | None = None) -> str:
    """The chart's manifests as one YAML stream, in a stable order, empty templates left out."""
    import helm_python

    values: dict[str, Any] = {}
    for path in values_files:
        values.update(yaml.safe_load(path.read_text()) or {})
    values.update(extra or {})
    chart = helm_python.Chart.load(str(CHART))
    rendered = chart.render(values, name="streaming", namespace="default", is_install=True)
    documents = [
        f"# Source: {name}\n{text.strip()}\n"
        for name, text in sorted(rendered.items())
        if text.strip() and not name.endswith("NOTES.txt")
    ]
    return "---\n".join(documents)


def expected() -> dict[Path, str]:
    out = {}
    for filename, values_files in VARIANTS.items():
        names = ", ".join(str(p.relative_to(DEPLOY.parent)) for p in values_files) or "default values"
        out[OUT / filename] = HEADER.format(values=names) + render(values_files)
    return out


def main() -> int:
    for path, text in expected().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(DEPLOY.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
