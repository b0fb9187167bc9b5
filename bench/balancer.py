"""Three replicas behind the balancers we ship: latency through them against direct, how streams
spread, and the timeline of a replica's drain.

    python -m bench.balancer [--longform 43-58] [--rounds 2] [--out bench/results/balancer.json]

Starts three ``python -m streaming serve`` replicas (``--max-sessions 4``, one model worker
each: they share this machine's cores), HAProxy on deploy/haproxy.cfg and nginx on
deploy/nginx.conf (tests/balancers.py), all on loopback, and reports:

- **latency**: one real-time stream at a time of long-form speech (bench.latency's
  ``--longform``), straight to a replica, through HAProxy and through nginx, in turn, each
  ``--rounds`` times: final latency and first partial (p50, p95, max), and WER;
- **spread**: twelve real-time streams at once through HAProxy, how many each replica got, and
  what a thirteenth got;
- **drain**: three streams through HAProxy, one per replica; 3 s in, SIGTERM to one replica:
  when HAProxy took it out, when its stream got its final, when it exited, and what a new
  stream started at the signal got.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import provenance, publish
from bench.latency import DATA, latencies, longform
from clients.stream import read_audio, stream_file
from tests import balancers
from tests.wer import wer

CLIPS = [f"ljspeech/LJ001-{n:04d}.flac" for n in (43, 84, 95, 37, 54, 94, 114, 135, 79, 11, 81, 53)]


async def one_stream(url: str, first: int, last: int) -> dict[str, Any]:
    recording, reference = longform(first, last)
    sent_at: dict[float, float] = {}
    result = await stream_file(url, recording, realtime=True, sent_at=sent_at)
    assert result.final is not None, result.messages[-3:]
    report = latencies(result, sent_at, reference["segments"])
    report["wer"] = wer(reference["text"], result.final["transcription"])
    return report


async def spread(fleet: balancers.Fleet) -> dict[str, Any]:
    before = fleet.sessions()
    streams = [
        asyncio.create_task(stream_file(fleet.url, read_audio(DATA / clip), realtime=True)) for clip in CLIPS
    ]
    await asyncio.to_thread(
        balancers.wait_for, lambda: all(fleet.status(n) == "DOWN" for n in fleet.replicas), 15, "a full fleet"
    )
    per_replica = {n: fleet.sessions()[n] - before[n] for n in fleet.replicas}
    extra = await stream_file(fleet.url, read_audio(DATA / CLIPS[0]), realtime=True)
    results = await asyncio.gather(*streams)
    return {
        "streams_per_replica": per_replica,
        "thirteenth": {"errors": [e["code"] for e in extra.errors], "close_code": extra.close_code},
        "finals": sum(r.final is not None for r in results),
    }


async def drain(fleet: balancers.Fleet) -> dict[str, Any]:
    clip = read_audio(DATA / "ljspeech/LJ001-0001.flac")
    streams: dict[str, asyncio.Task[Any]] = {}
    for _ in fleet.replicas:  # one by one, to know which replica each went to
        before = fleet.sessions()
        task = asyncio.create_task(stream_file(fleet.url, clip, realtime=True))
        await asyncio.to_thread(
            balancers.wait_for, lambda before=before: fleet.sessions() != before, 10, "a replica"
        )
        streams[next(n for n, c in fleet.sessions().items() if c > before[n])] = task
    await asyncio.sleep(3.0)
    stopped = fleet.replicas["r1"]
    signalled = time.monotonic()
    stopped.send_signal(signal.SIGTERM)
    new = asyncio.create_task(stream_file(fleet.url, clip, realtime=True, resume=True))
    await asyncio.to_thread(balancers.wait_for, lambda: fleet.status("r1") != "UP", 10, "r1 out")
    out = time.monotonic() - signalled
    own = await streams["r1"]
    final_at = time.monotonic() - signalled
    exit_code = await asyncio.to_thread(stopped.wait, 120)
    exited = time.monotonic() - signalled
    others = await asyncio.gather(*(t for n, t in streams.items() if n != "r1"))
    started = await new
    return {
        "out_of_rotation_s": round(out, 3),
        "its_stream_final_s": round(final_at, 3),
        "exited_s": round(exited, 3),
        "exit_code": exit_code,
        "its_stream": {"close_code": own.close_code, "final": own.final is not None},
        "other_streams_final": all(r.final is not None for r in others),
        "new_stream": {
            "close_code": started.close_code,
            "restarts": started.restarts,
            "final": started.final is not None,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--longform", default="43-58", help="LJ001 clips FIRST-LAST joined (bench.latency)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    first, last = map(int, args.longform.split("-"))
    report: dict[str, Any] = {**provenance(), "longform": args.longform, "latency": {}}
    flags = ("--max-sessions", "4", "--drain-timeout", "60", "--workers", "1")
    with tempfile.TemporaryDirectory() as tmp, balancers.fleet(Path(tmp), *flags) as fleet:
        (Path(tmp) / "nginx").mkdir()
        with balancers.nginx(fleet.ports, Path(tmp) / "nginx") as nginx:
            routes = {
                "direct": f"ws://127.0.0.1:{fleet.ports['r2']}/v1/stream",
                "haproxy": fleet.url,
                "nginx": f"ws://{nginx}/v1/stream",
            }
            for round_ in range(args.rounds):
                for route, url in routes.items():
                    measured = asyncio.run(one_stream(url, first, last))
                    report["latency"].setdefault(route, []).append(measured)
                    finals = measured["final_latency_s"]
                    print(
                        f"round {round_ + 1} {route}: final p50 {finals['p50']:.2f} p95 {finals['p95']:.2f}"
                    )
        report["spread"] = asyncio.run(spread(fleet))
        print("spread", report["spread"])
        balancers.wait_for(lambda: all(fleet.status(n) == "UP" for n in fleet.replicas), 30, "room")
        report["drain"] = asyncio.run(drain(fleet))
        print("drain", report["drain"])
    publish(report, args.out)


if __name__ == "__main__":
    main()
