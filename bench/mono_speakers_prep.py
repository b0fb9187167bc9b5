"""Speaker labels on one channel, step 1 of 2: the stereo calls mixed down to mono, transcribed by
the real server (mono: no channel tells who speaks), saved with their segments.

    python -m bench.mono_speakers_prep          # writes bench/results/mono_speakers/
    # step 2, in a separate venv that has resemblyzer (it ships its 17 MB model in the wheel):
    python3 -m venv /tmp/rz && /tmp/rz/bin/pip install torch==2.13.0 resemblyzer "setuptools<81"
    /tmp/rz/bin/python bench/mono_speakers_eval.py 0.8
"""

from __future__ import annotations

import asyncio
import json

import numpy as np

from bench.latency import DATA, ROOT
from clients.stream import Recording, read_audio, stream_file
from streaming.testing import free_port, serve_process

OUT = ROOT / "bench" / "results" / "mono_speakers"
CALLS = ["stereo/call_0_16k.flac", "stereo/call_1_16k.flac", "stereo/call_0_8k.flac", "stereo/call_1_8k.flac"]


def main() -> None:
    entries = {
        json.loads(line)["audio"]: json.loads(line)
        for line in (DATA / "manifest.jsonl").read_text().splitlines()
    }
    OUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = serve_process(port, cwd=str(ROOT))
    found = {}
    try:
        for name in CALLS:
            call = read_audio(DATA / name)
            mono = Recording(call.samples.mean(axis=1, keepdims=True).astype(np.float32), call.sample_rate)
            result = asyncio.run(stream_file(f"ws://127.0.0.1:{port}/v1/stream", mono))
            assert result.final is not None
            np.save(OUT / (name.replace("/", "_") + ".npy"), mono.samples[:, 0])
            found[name] = {
                "rate": call.sample_rate,
                "segments": result.final["response"]["segments"],
                "channel_segments": entries[name]["channel_segments"],
            }
    finally:
        server.terminate()
        server.wait(timeout=60)
    (OUT / "segments.json").write_text(json.dumps(found))
    print({name: len(v["segments"]) for name, v in found.items()})


if __name__ == "__main__":
    main()
