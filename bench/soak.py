"""Sessions churning for a long time: does anything grow?

    python -m bench.soak [--minutes 60] [--streams 8] [--out bench/results/soak.json]

Starts the real server, then keeps ``--streams`` real websocket clients busy on loopback for
``--minutes``: each streams a real clip from ../shared/data in real time, reads its final,
disconnects and starts again with the next clip; every fifth session instead vanishes
mid-utterance (a dropped connection). Every 10 s it samples the server's RSS, open file
descriptors and open sessions. It reports the samples, the slope of RSS and file descriptors
over the second half of the run (after warm-up), final latency by quarter of the run, and
every error a session was told (none is provoked).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import websockets

from bench import provenance, publish
from bench.capacity import scrape
from bench.latency import DATA, ROOT
from clients.stream import Recording, read_audio, stream_file
from streaming.testing import free_port, serve_process
from tests.wer import wer

SAMPLE_EVERY = 10.0
CLIPS = [
    "read/jfk.flac",
    "read/2412-153948-0000.flac",
    "read/1089-134686-0000.flac",
    "read/test.flac",
    "ljspeech/LJ001-0001.flac",
]


def clips() -> list[tuple[str, Recording, str]]:
    texts = {
        json.loads(line)["audio"]: json.loads(line)["text"]
        for line in (DATA / "manifest.jsonl").read_text().splitlines()
    }
    return [(name, read_audio(DATA / name), texts[name]) for name in CLIPS]


async def vanish(url: str, recording: Recording) -> None:
    """Connect, send half a clip, and drop the connection without a word."""
    from clients.stream import encode

    async with websockets.connect(f"{url}?sample_rate={recording.sample_rate}", ping_interval=None) as ws:
        half = recording.samples[: len(recording.samples) // 2]
        step = recording.sample_rate // 10
        for offset in range(0, len(half), step):
            await ws.send(encode(half[offset : offset + step], "pcm_s16le"))
            await asyncio.sleep(0.1)
        ws.transport.abort()


async def churn(url: str, deadline: float, worker: int, record: dict[str, Any]) -> None:
    material = clips()
    for count in itertools.count():
        if time.monotonic() >= deadline:
            return
        _, recording, text = material[(worker + count) % len(material)]
        if count % 5 == 4:
            await vanish(url, recording)
            record["vanished"] += 1
            continue
        started = time.monotonic()
        result = await stream_file(url, recording, realtime=True)
        record["sessions"].append(
            {
                "at": started,
                "seconds": time.monotonic() - started,
                "audio": recording.duration,
                "wer": wer(text, result.final["transcription"]) if result.final else None,
                "errors": [e["code"] for e in result.errors],
                "close": result.close_code,
            }
        )


async def sample(process: psutil.Process, base: str, deadline: float, samples: list[dict[str, Any]]) -> None:
    while time.monotonic() < deadline:
        metrics = await asyncio.to_thread(scrape, base)
        samples.append(
            {
                "at": time.monotonic(),
                "rss_mib": process.memory_info().rss / 2**20,
                "fds": process.num_fds(),
                "sessions": metrics["streaming_sessions"],
            }
        )
        await asyncio.sleep(SAMPLE_EVERY)


def slope_per_hour(samples: list[dict[str, Any]], key: str) -> float:
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return float("nan")
    t = np.array([s["at"] for s in half]) / 3600
    y = np.array([s[key] for s in half], dtype=float)
    return float(np.polyfit(t - t[0], y, 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args()
    port = free_port()
    server = serve_process(port, "--max-sessions", str(args.streams * 2), cwd=str(ROOT))
    base = f"http://127.0.0.1:{port}"
    url = f"ws://127.0.0.1:{port}/v1/stream"
    process = psutil.Process(server.pid)
    record: dict[str, Any] = {"sessions": [], "vanished": 0}
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    deadline = started + args.minutes * 60

    async def run() -> None:
        await asyncio.gather(
            sample(process, base, deadline, samples),
            *(churn(url, deadline, i, record) for i in range(args.streams)),
        )

    try:
        asyncio.run(run())
    finally:
        server.terminate()
        server.wait(timeout=60)
    sessions = record["sessions"]
    quarters: list[list[float]] = [[], [], [], []]
    for s in sessions:
        index = min(int((s["at"] - started) / (deadline - started) * 4), 3)
        quarters[index].append(s["seconds"] - s["audio"])  # time past the audio's own length
    report = {
        **provenance(),
        "minutes": args.minutes,
        "streams": args.streams,
        "sessions_completed": len(sessions),
        "sessions_vanished": record["vanished"],
        "errors": sorted({code for s in sessions for code in s["errors"]}),
        "closes": sorted({s["close"] for s in sessions}),
        "median_wer": statistics.median(s["wer"] for s in sessions if s["wer"] is not None),
        "tail_seconds_by_quarter": [round(statistics.median(q), 3) if q else None for q in quarters],
        "rss_mib_first_last": [round(samples[0]["rss_mib"]), round(samples[-1]["rss_mib"])],
        "rss_mib_per_hour_second_half": round(slope_per_hour(samples, "rss_mib"), 1),
        "fds_first_last": [samples[0]["fds"], samples[-1]["fds"]],
        "fds_per_hour_second_half": round(slope_per_hour(samples, "fds"), 1),
        "samples": samples,
    }
    publish(report, args.out, detail="samples")


if __name__ == "__main__":
    main()
