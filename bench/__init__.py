"""Benchmarks: each starts its own server and prints a JSON report (docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import platform
from datetime import date
from pathlib import Path
from typing import Any


def provenance() -> dict[str, str]:
    """When and where a report was measured: the head of every benchmark's report. The CPU's
    vector extensions and CTranslate2's version are part of it: on two machines of the same
    kind, one with AVX-512 VNNI and AMX decoded a final with 13 s of context 2.7 times as fast
    as one without (``bench.engine context``), and int8 arithmetic on each gave other words
    (offline WER 0.0508 against 0.0673 on the same file), so figures compare only within one
    machine."""
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return {
        "date": date.today().isoformat(),
        "machine": machine,
        "cpu": _cpu(),
        "ctranslate2": _version("ctranslate2"),
    }


def _cpu() -> str:
    """The CPU's model name and the vector extensions CTranslate2's int8 kernels use."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    name = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), ""
    )
    flags = next(
        (line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []
    )
    found = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{name} ({' '.join(found) or 'no AVX2'})"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def publish(report: dict[str, Any], out: Path | None, *, detail: str | None = None) -> None:
    """Write a report to ``out`` when asked, and print it, less its ``detail`` key (a row per
    file or per sample, kept in the file)."""
    text = json.dumps(report, indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != detail}, indent=2) if detail else text)
