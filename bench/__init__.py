"""Benchmarks: each starts its own server and prints a JSON report (docs/benchmarks.md)."""

from __future__ import annotations

import os
import platform
from datetime import date


def provenance() -> dict[str, str]:
    """When and where a report was measured: the head of every benchmark's report."""
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return {"date": date.today().isoformat(), "machine": machine}
