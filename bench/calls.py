"""Per-channel accuracy of the two-party calls at 16 kHz and at 8 kHz G.711.

    python -m bench.calls [--model tiny.en]

Starts the real server and streams each of ``stereo/call_{0,1}_{16k,8k}.flac`` with
``multichannel=true`` (16 kHz as s16le, 8 kHz as mu-law and as A-law), unpaced, and reports per
channel the WER against the channel's exact segments, and the share of words given to the
speaker who was talking. The 8 kHz files hold the same speech as the 16 kHz ones, so the gap
between the two is what telephone bandwidth and G.711 cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from bench.latency import DATA, ROOT
from clients.stream import read_audio, stream_file
from streaming.testing import free_port, serve_process
from tests.test_callcenter import SPEAKERS, attribution, per_speaker
from tests.wer import wer

RUNS = [
    ("stereo/call_0_16k.flac", "pcm_s16le"),
    ("stereo/call_0_8k.flac", "mulaw"),
    ("stereo/call_0_8k.flac", "alaw"),
    ("stereo/call_1_16k.flac", "pcm_s16le"),
    ("stereo/call_1_8k.flac", "mulaw"),
    ("stereo/call_1_8k.flac", "alaw"),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny.en")
    args = parser.parse_args()
    entries = {
        json.loads(line)["audio"]: json.loads(line)
        for line in (DATA / "manifest.jsonl").read_text().splitlines()
    }
    port = free_port()
    server = serve_process(port, "--model", args.model, cwd=str(ROOT))
    try:
        for name, encoding in RUNS:
            entry = entries[name]
            params = {"multichannel": "true", "speakers": ",".join(SPEAKERS)}
            result = asyncio.run(
                stream_file(
                    f"ws://127.0.0.1:{port}/v1/stream",
                    read_audio(DATA / name),
                    encoding=encoding,
                    params=params,
                )
            )
            assert result.final is not None, result.errors
            texts = per_speaker(result.final)
            references = [" ".join(s[0] for s in channel) for channel in entry["channel_segments"]]
            print(
                json.dumps(
                    {
                        "file": name,
                        "encoding": encoding,
                        **{
                            f"wer_{s}": round(wer(r, texts[s]), 3)
                            for s, r in zip(SPEAKERS, references, strict=True)
                        },
                        "wer_both": round(wer(" ".join(references), " ".join(texts[s] for s in SPEAKERS)), 3),
                        "right_speaker": round(attribution(result.final, entry), 3),
                    }
                ),
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
