"""A short soak (the hour-long one is bench/soak.py): sessions churn against the real server,
some vanishing mid-utterance; nothing may grow and no error may appear."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[1]


def test_a_minute_of_churn_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    subprocess.run(
        [sys.executable, "-m", "bench.soak", "--minutes", "1", "--streams", "4", "--out", str(out)],
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    report = json.loads(out.read_text())
    assert report["sessions_completed"] >= 8
    assert report["sessions_vanished"] >= 1
    assert report["errors"] == []
    assert report["closes"] == [1000]
    assert report["median_wer"] <= 0.2
    # Descriptors come back once sessions close (each open stream holds one socket).
    samples = report["samples"]
    assert samples[-1]["fds"] - samples[-1]["sessions"] <= samples[0]["fds"] - samples[0]["sessions"] + 2
