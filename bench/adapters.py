"""End of speech to final text through each protocol: ours, Deepgram's, OpenAI Realtime's.

    python -m bench.adapters [--longform 43-70] [--rounds 2] [--out bench/results/adapters.json]

Starts the real server once and streams the same speech (the ``ljspeech`` clips LJ001-FIRST
to LAST joined with 0.3 s gaps) in real time, one stream at a time, over ``/v1/stream``,
``/v1/listen`` (Deepgram: binary linear16 at 16 kHz) and ``/v1/realtime`` (OpenAI: base64
PCM at 24 kHz, server VAD), in turn, ``--rounds`` times, so the protocols share the machine's
state alike. Per reference utterance: from the send of its last audio to the arrival of the
first final text that reaches its end (ours: a ``segment``; Deepgram: a final ``Results``;
Realtime: the ``completed`` transcript of the turn whose speech ended there: its words come
only once the turn is committed, as OpenAI's protocol has it). Also the WER of each
protocol's final text.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import websockets

from bench import provenance
from bench.latency import ROOT, longform, pct, send_time
from streaming.testing import free_port, serve_process
from tests.wer import wer

CHUNK = 0.1  # seconds of audio per frame
TOLERANCE = 0.6  # a final's end may fall this far before an LJ clip's (trailing silence)

# (path, query): the audio rate and how a frame is sent
Protocol = tuple[str, int, Callable[[bytes], str | bytes]]
PROTOCOLS: dict[str, Protocol] = {
    "ours": ("/v1/stream?encoding=pcm_s16le&sample_rate=16000", 16000, lambda pcm: pcm),
    "deepgram": (
        "/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000&interim_results=true",
        16000,
        lambda pcm: pcm,
    ),
    "realtime": (
        "/v1/realtime?intent=transcription",
        24000,
        lambda pcm: json.dumps(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
        ),
    ),
}
END = {"ours": '{"type": "end"}', "deepgram": '{"type": "CloseStream"}', "realtime": None}


def finals_of(protocol: str, message: dict[str, Any], stopped: dict[str, float]) -> tuple[float, str] | None:
    """(stream seconds the final text reaches, its text), or None for other messages."""
    kind = message.get("type")
    if protocol == "ours" and kind == "segment":
        return message["segment"]["end"], message["segment"]["text"]
    if protocol == "deepgram" and kind == "Results" and message["is_final"]:
        text = message["channel"]["alternatives"][0]["transcript"]
        return (message["start"] + message["duration"], text) if text else None
    if protocol == "realtime":
        if kind == "input_audio_buffer.speech_stopped":
            stopped[message["item_id"]] = message["audio_end_ms"] / 1000
        elif kind == "conversation.item.input_audio_transcription.completed" and message["transcript"]:
            return stopped[message["item_id"]], message["transcript"]
    return None


async def run_one(
    base: str, protocol: str, samples: np.ndarray
) -> tuple[list[tuple[float, float, str]], dict[float, float]]:
    path, rate, frame = PROTOCOLS[protocol]
    audio = soxr.resample(samples, 16000, rate) if rate != 16000 else samples
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    step = round(CHUNK * rate) * 2
    finals: list[tuple[float, float, str]] = []  # (arrival, stream seconds reached, text)
    sent_at: dict[float, float] = {}
    stopped: dict[str, float] = {}
    async with websockets.connect(base + path, max_size=None) as ws:
        started = time.perf_counter()

        async def read() -> None:
            async for raw in ws:
                found = finals_of(protocol, json.loads(raw), stopped)
                if found is not None:
                    finals.append((time.perf_counter() - started, *found))

        reader = asyncio.create_task(read())
        for index, offset in enumerate(range(0, len(pcm), step)):
            await asyncio.sleep(max(0.0, started + index * CHUNK - time.perf_counter()))
            await ws.send(frame(pcm[offset : offset + step]))
            sent_at[min((offset + step) / 2 / rate, len(audio) / rate)] = time.perf_counter() - started
        if END[protocol] is not None:
            await ws.send(END[protocol])
        else:  # Realtime has no end: silence closes the last turn, then the client leaves
            await ws.send(frame(bytes(2 * rate)))
            await asyncio.sleep(3.0)
            await ws.close()
        await asyncio.wait_for(reader, 60)
    return finals, sent_at


def measure(
    finals: list[tuple[float, float, str]], sent_at: dict[float, float], entry: dict[str, Any]
) -> dict[str, Any]:
    latencies = []
    for _, _, end in entry["segments"]:
        arrival = next((t for t, reached, _ in finals if reached >= end - TOLERANCE), None)
        if arrival is not None:
            latencies.append(arrival - send_time(sent_at, end))
    return {
        "final_latency_s": pct(latencies),
        "wer": wer(entry["text"], " ".join(text for _, _, text in finals)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--longform", default="43-70", help="FIRST-LAST: LJ001 clip numbers to join")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "adapters.json")
    args = parser.parse_args()
    first, _, last = args.longform.partition("-")
    recording, entry = longform(int(first), int(last))
    samples = recording.samples[:, 0]
    port = free_port()
    server = serve_process(port, cwd=str(ROOT))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in PROTOCOLS}
    try:
        for _ in range(args.rounds):
            for name in PROTOCOLS:
                finals, sent_at = asyncio.run(run_one(f"ws://127.0.0.1:{port}", name, samples))
                runs[name].append(measure(finals, sent_at, entry))
                print(name, json.dumps(runs[name][-1]), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    report = {
        **provenance(),
        "file": f"LJ001-{args.longform} joined",
        "audio_seconds": recording.duration,
        "rounds": runs,
        "p50_by_protocol": {
            n: float(np.median([r["final_latency_s"]["p50"] for r in rs])) for n, rs in runs.items()
        },
        "p95_by_protocol": {
            n: float(np.median([r["final_latency_s"]["p95"] for r in rs])) for n, rs in runs.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("p50_by_protocol", "p95_by_protocol")}, indent=2))


if __name__ == "__main__":
    main()
