"""What resuming costs: memory per dropped stream kept for a resume, and latency around a resume.

    python -m bench.resume [--kept 100] [--longform 43-58] [--cuts 6] [--model tiny.en]

Starts the real server (``--resume-grace 600``) and measures:

- **Kept streams.** Opens ``--kept`` resumable streams on loopback, sends each 2 s of low noise
  (scored by the VAD, never decoded) and waits for its ack; measures the server's RSS with them
  connected, then resets every connection (TCP RST, as a dropped network) and measures again
  with them kept, and the open file descriptors. The streams still count in ``/ready``.
- **A stream cut again and again.** Streams the ``ljspeech`` clips LJ001-FIRST to LAST joined
  with 0.3 s gaps (``bench.latency``'s held-out long form) in real time, resumable, once
  directly (twice) and once through a TCP proxy that resets the connection ``--cuts`` times at random
  (seeded) points. Reports the time from each cut to the resumed ``ready`` (the client waits
  0.1 s before its first try), the audio sent again, the final latency and word-commit latency
  of each run (as ``bench.latency`` measures them), and the WER of each; a second uncut run
  shows how much two uncut runs differ.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import urllib.request
from typing import Any

import numpy as np
import psutil

from bench import provenance
from bench.latency import ROOT, latencies, longform, pct
from clients.stream import stream_file
from streaming.testing import free_port, serve_process
from tests.proxy import CuttingProxy
from tests.wer import wer

NOISE_SECONDS = 2.0


def sessions(http: str) -> int:
    try:
        with urllib.request.urlopen(f"{http}/ready") as response:
            return int(json.load(response)["sessions"])
    except urllib.error.HTTPError as exc:  # 503 when full: the body says the same
        return int(json.load(exc)["sessions"])


async def kept_streams(url: str, http: str, n: int, process: psutil.Process) -> dict[str, Any]:
    import websockets

    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(int(16000 * NOISE_SECONDS)) * 30).astype("<i2").tobytes()
    before = process.memory_info().rss, process.num_fds()
    sockets = []
    for _ in range(n):
        ws = await websockets.connect(f"{url}?resumable=true", ping_interval=None)
        assert json.loads(await ws.recv())["type"] == "ready"
        sockets.append(ws)
    for ws in sockets:
        for offset in range(0, len(noise), 3200):
            await ws.send(noise[offset : offset + 3200])
        await ws.send(json.dumps({"type": "keepalive"}))
    for ws in sockets:
        while json.loads(await ws.recv())["audio_bytes"] < len(noise):
            pass
    await asyncio.sleep(2.0)
    connected = process.memory_info().rss, process.num_fds()
    for ws in sockets:
        ws.transport.abort()  # a reset, no close frame: the network dropped
    await asyncio.sleep(3.0)
    kept = process.memory_info().rss, process.num_fds()
    counted = sessions(http)
    return {
        "streams": n,
        "rss_before_mib": before[0] / 2**20,
        "rss_connected_mib": connected[0] / 2**20,
        "rss_kept_mib": kept[0] / 2**20,
        "kib_per_connected_stream": (connected[0] - before[0]) / n / 1024,
        "kib_per_kept_stream": (kept[0] - before[0]) / n / 1024,
        "fds": {"before": before[1], "connected": connected[1], "kept": kept[1]},
        "sessions_counted_while_kept": counted,
    }


async def cut_at(proxy: CuttingProxy, times: list[float], started: float, cut_times: list[float]) -> None:
    """Reset the proxy's connections at each of ``times`` (seconds after ``started``)."""
    for at in times:
        await asyncio.sleep(max(started + at - time.monotonic(), 0))
        cut_times.append(time.monotonic())
        proxy.cut()


async def cut_stream(url: str, port: int, first: int, last: int, cuts: int) -> dict[str, Any]:
    recording, entry = longform(first, last)
    runs: dict[str, Any] = {}
    # Two uncut runs: with partials, commits depend on when each partial was decoded, so two
    # uncut runs differ too; the second shows by how much.
    for name in ("direct", "direct again", "cut"):
        sent_at: dict[float, float] = {}
        resumed: list[float] = []  # when each resumed ready came
        cut_times: list[float] = []
        started = time.monotonic()

        def on_message(message: dict[str, Any], resumed: list[float] = resumed) -> None:
            if message["type"] == "ready" and "resumed" in message:
                resumed.append(time.monotonic())

        async with CuttingProxy(port) as proxy:
            target = f"ws://127.0.0.1:{proxy.port}/v1/stream" if name == "cut" else url
            rng = random.Random(1)
            times = sorted(rng.uniform(5.0, recording.duration - 5.0) for _ in range(cuts))

            cutting = asyncio.create_task(cut_at(proxy, times, started, cut_times)) if name == "cut" else None
            result = await stream_file(
                target,
                recording,
                realtime=True,
                params={},
                on_message=on_message,
                sent_at=sent_at,
                resume=True,
            )
            if cutting is not None:
                await cutting
        final = result.final
        assert final is not None, result.errors
        waits = [r - c for c, r in zip(cut_times, resumed, strict=False)]
        runs[name] = {
            "wer": wer(entry["text"], final["transcription"]),
            "resumes": result.resumes,
            "audio_sent_again_s": result.resent_bytes / 2 / recording.sample_rate,
            "cut_to_resumed_ready_s": pct(waits),
            **latencies(result, sent_at, entry["segments"]),
        }
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kept", type=int, default=100)
    parser.add_argument("--longform", default="43-58")
    parser.add_argument("--cuts", type=int, default=6)
    parser.add_argument("--model", default="tiny.en")
    args = parser.parse_args()
    first, last = (int(x) for x in args.longform.split("-"))
    port = free_port()
    server = serve_process(
        port,
        "--model",
        args.model,
        "--max-sessions",
        str(args.kept + 4),
        "--resume-grace",
        "600",
        cwd=str(ROOT),
    )
    process = psutil.Process(server.pid)
    url, http = f"ws://127.0.0.1:{port}/v1/stream", f"http://127.0.0.1:{port}"
    try:
        runs = asyncio.run(cut_stream(url, port, first, last, args.cuts))
        # A first kept stream warms the code paths out of the figure (it stays kept).
        asyncio.run(kept_streams(url, http, 1, process))
        kept = asyncio.run(kept_streams(url, http, args.kept, process))
    finally:
        server.terminate()
        server.wait(timeout=60)
    report = {
        **provenance(),
        "model": args.model,
        "longform": args.longform,
        "cuts": args.cuts,
        "kept": kept,
        "runs": runs,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
