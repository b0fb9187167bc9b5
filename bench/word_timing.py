"""Word timing against forced alignment: how far each word's start and end fall from where it
was said, on the clips with ``words_silver`` (pocketsphinx forced alignment, about +-50 ms).

    python -m bench.word_timing [--stream] [--out bench/results/word_timing.json]

Starts the real server and sends each clip to ``POST /predict`` (and with ``--stream``, streams
it in real time over ``/v1/stream`` and takes the ``segment`` words). Words are matched to the
reference in order (difflib on normalised words). The clips are split in two halves by their
place in the manifest (even: ``tune``, odd: ``held_out``), so that anything tuned on one half is
scored on the other. Reports, per half: the median absolute start and end error, the share of
starts (and ends) within 200 ms, and the mean signed error (positive: later than said).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import difflib
import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import provenance, publish
from bench.latency import DATA
from clients.stream import read_audio, stream_file
from streaming.testing import free_port, serve_process

_NORMAL = re.compile(r"[^a-z0-9']+")


def clips() -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in (DATA / "manifest.jsonl").read_text().splitlines()]
    return [e for e in entries if e.get("words_silver")]


def normal(word: str) -> str:
    return _NORMAL.sub("", word.lower())


def errors(reference: list[list[Any]], words: list[tuple[str, float, float]]) -> list[tuple[float, float]]:
    """(start error, end error) in seconds of every hypothesis word matched to a reference word."""
    ref = [normal(w) for w, _, _ in reference]
    hyp = [normal(w) for w, _, _ in words]
    out = []
    for block in difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            _, ref_start, ref_end = reference[block.a + k]
            _, start, end = words[block.b + k]
            out.append((start - ref_start, end - ref_end))
    return out


def summary(pairs: list[tuple[float, float]]) -> dict[str, float]:
    starts = np.array([s for s, _ in pairs])
    ends = np.array([e for _, e in pairs])
    return {
        "words": len(pairs),
        "start_median_abs_ms": float(np.median(np.abs(starts)) * 1000),
        "start_within_200ms": float(np.mean(np.abs(starts) <= 0.2)),
        "start_mean_ms": float(np.mean(starts) * 1000),
        "end_median_abs_ms": float(np.median(np.abs(ends)) * 1000),
        "end_within_200ms": float(np.mean(np.abs(ends) <= 0.2)),
        "end_mean_ms": float(np.mean(ends) * 1000),
    }


def predicted_words(http: httpx.Client, base: str, clip: Path) -> list[tuple[str, float, float]]:
    body = {"audio": base64.b64encode(clip.read_bytes()).decode()}
    answer = http.post(f"{base}/predict", json=body, timeout=300).json()
    return [(w["word"], w["start"], w["end"]) for w in answer["response"]["word_segments"]]


async def streamed_words(url: str, clip: Path) -> list[tuple[str, float, float]]:
    result = await stream_file(url, read_audio(clip), realtime=True)
    return [
        (w["word"], w["start"], w["end"])
        for m in result.messages
        if m["type"] == "segment"
        for w in m["segment"]["words"]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stream", action="store_true", help="also stream every held-out clip")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--pairs", type=Path, help="write every (start error, end error) here, per mode and half"
    )
    args = parser.parse_args()
    port = free_port()
    server = serve_process(port, "--model", args.model)
    base = f"http://127.0.0.1:{port}"
    found: dict[str, dict[str, list[tuple[float, float]]]] = {"predict": {}, "stream": {}}
    try:
        with httpx.Client() as http:
            for i, entry in enumerate(clips()):
                half = "tune" if i % 2 == 0 else "held_out"
                clip = DATA / entry["audio"]
                pairs = errors(entry["words_silver"], predicted_words(http, base, clip))
                found["predict"].setdefault(half, []).extend(pairs)
                if args.stream and half == "held_out":
                    words = asyncio.run(streamed_words(base.replace("http", "ws") + "/v1/stream", clip))
                    found["stream"].setdefault(half, []).extend(errors(entry["words_silver"], words))
    finally:
        server.kill()
        server.wait()
    report: dict[str, Any] = {**provenance(), "model": args.model, "clips": len(clips())}
    for mode, halves in found.items():
        for half, pairs in halves.items():
            report[f"{mode}_{half}"] = summary(pairs)
    if args.pairs:
        args.pairs.write_text(json.dumps(found))
    publish(report, args.out)


if __name__ == "__main__":
    main()
