"""Benchmarks: each starts its own server and prints a JSON report (docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import platform
from datetime import date
from pathlib import Path
from typing import Any


def provenance() -> dict[str, str]:
    """When and where a report was measured: the head of every benchmark's report."""
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return {"date": date.today().isoformat(), "machine": machine}


def publish(report: dict[str, Any], out: Path | None) -> None:
    """Print a report, and write it to ``out`` when asked."""
    text = json.dumps(report, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    print(text)
