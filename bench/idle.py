"""What an open but quiet stream costs the server: RSS and file descriptors per idle session.

    python -m bench.idle [--sessions 200] [--model tiny.en]

Starts the real server, measures its RSS and open file descriptors, opens ``--sessions`` real
websocket streams on loopback, sends each 2 s of low noise (scored by the VAD, no speech, so
no decode) and waits until every stream has been read, then measures again and closes them
all. The difference divided by the number of sessions is the cost of one idle session: its
socket, its tasks, its VAD state and its buffers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import numpy as np
import psutil

from bench import provenance
from bench.latency import ROOT
from streaming.testing import free_port, serve_process

NOISE_SECONDS = 2.0


def settle(process: psutil.Process) -> tuple[int, int]:
    return process.memory_info().rss, process.num_fds()


async def hold(url: str, n: int, measure: Any) -> tuple[int, int]:
    import websockets

    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(int(16000 * NOISE_SECONDS)) * 30).astype("<i2").tobytes()
    sockets = []
    for _ in range(n):
        ws = await websockets.connect(f"{url}?encoding=pcm_s16le&sample_rate=16000", ping_interval=None)
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
        sockets.append(ws)
    for ws in sockets:
        for offset in range(0, len(noise), 3200):
            await ws.send(noise[offset : offset + 3200])
        await ws.send(json.dumps({"type": "keepalive"}))
    await asyncio.sleep(3.0)  # the server scores every window meanwhile
    held = measure()
    for ws in sockets:
        await ws.send(json.dumps({"type": "end"}))
    for ws in sockets:
        async for raw in ws:
            if json.loads(raw)["type"] == "final":
                break
        await ws.close()
    return held  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--model", default="tiny.en")
    args = parser.parse_args()
    port = free_port()
    server = serve_process(
        port, "--model", args.model, "--max-sessions", str(args.sessions + 1), cwd=str(ROOT)
    )
    process = psutil.Process(server.pid)
    url = f"ws://127.0.0.1:{port}/v1/stream"
    try:
        # A first session warms the code paths (imports, allocator pools) out of the figure.
        asyncio.run(hold(url, 1, lambda: settle(process)))
        rss0, fds0 = settle(process)
        rss1, fds1 = asyncio.run(hold(url, args.sessions, lambda: settle(process)))
        rss2, fds2 = settle(process)
    finally:
        server.terminate()
        server.wait(timeout=60)
    report = {
        **provenance(),
        "model": args.model,
        "sessions": args.sessions,
        "rss_before_mib": rss0 / 2**20,
        "rss_held_mib": rss1 / 2**20,
        "rss_after_mib": rss2 / 2**20,
        "kib_per_idle_session": (rss1 - rss0) / args.sessions / 1024,
        "fds_before": fds0,
        "fds_held": fds1,
        "fds_after": fds2,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
