"""Short sessions against offline: each file of a set streamed as a session of its own.

    python -m bench.sessions [--sets read] [--clips 91-160] [--model tiny.en]
                             [--out bench/results/sessions.json] [--serve-flag=--commit-bound=2 ...]

A voice agent's turn, a browser's dictation, a clip sent by a call-center pipeline: most
sessions are short, and everything about them happens at a stream's start, where a decode has
heard a second or two and no context. ``bench.latency`` streams one long file; this streams
every mono file of the chosen sets (default ``read``: 16 clips from 6 LibriSpeech and LibriVox
readers, JFK and TIMIT) through the real server (``python -m streaming serve``) on loopback,
one session each, paced in real time, and scores the ``final``s against offline
faster-whisper on the same files (same model, beam 5, no VAD), as corpus WER under our
normaliser and Whisper's. It also counts what a reader sees and WER does not: transcripts that
begin in lower case, and words split by a space from a piece they were written against
("old -sposed").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path
from typing import Any

from bench import provenance
from bench.latency import punctuation
from bench.predict import DATA, ROOT, corpus_wer, offline
from clients.stream import read_audio, stream_file
from streaming.testing import free_port, serve_process
from tests.wer import whisper_wer

# A hyphen or an apostrophe with a space before it and none after: a word joined to the one
# before it as if it were a word of its own.
_SPLIT_WORD = re.compile(r"\w \-\w|\w '\w")


def streamed(port: int, clips: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each clip streamed in real time as a session of its own: its final and its messages."""
    out = []
    for clip in clips:
        result = asyncio.run(
            stream_file(f"ws://127.0.0.1:{port}/v1/stream", read_audio(DATA / clip["audio"]), realtime=True)
        )
        assert result.final is not None, (clip["audio"], result.errors)
        out.append(
            {
                "transcription": result.final["transcription"],
                "segments": sum(m["type"] == "segment" for m in result.messages),
                "partials": sum(m["type"] == "partial" for m in result.messages),
            }
        )
    return out


def corpus_whisper_wer(pairs: list[tuple[str, str]]) -> float:
    """Whisper's normaliser over the whole set: the clips joined (it scores one text)."""
    return whisper_wer(" ".join(r for r, _ in pairs), " ".join(h for _, h in pairs))


def visible(texts: list[str]) -> dict[str, int]:
    """What a reader sees that WER does not: a lower-case first letter, words split apart, and
    how the text is cut into sentences (a run-on shows as a longest sentence far over
    offline's)."""
    marks = [punctuation(t) for t in texts]
    return {
        "lower_case_starts": sum(t.lstrip()[:1].islower() for t in texts),
        "split_words": sum(len(_SPLIT_WORD.findall(t)) for t in texts),
        "sentences": sum(m["sentences"] for m in marks),
        "longest_sentence": max((m["longest_sentence"] for m in marks), default=0),
        "commas": sum(m["commas"] for m in marks),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--sets", default="read")
    parser.add_argument("--clips", help="FIRST-LAST: only these of the sets' files (1-based, manifest order)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sessions.json")
    parser.add_argument("--serve-flag", action="append", default=[], help="passed to the server")
    args = parser.parse_args()
    sets = args.sets.split(",")
    clips = [
        entry
        for entry in (json.loads(line) for line in (DATA / "manifest.jsonl").read_text().splitlines())
        if entry["set"] in sets and entry["channels"] == 1 and entry["audio"] != "long/ljspeech_5min.flac"
    ]
    if args.clips:
        first, _, last = args.clips.partition("-")
        clips = clips[int(first) - 1 : int(last)]
    port = free_port()
    server = serve_process(port, "--model", args.model, *args.serve_flag, cwd=str(ROOT))
    try:
        stream = streamed(port, clips)
    finally:
        server.terminate()
        server.wait(timeout=30)
    offline_texts, offline_seconds = offline(args.model, clips)
    references = [clip["text"] for clip in clips]
    stream_texts = [s["transcription"] for s in stream]
    streamed_pairs = list(zip(references, stream_texts, strict=True))
    offline_pairs = list(zip(references, offline_texts, strict=True))
    files = [
        {
            "audio": clip["audio"],
            "streaming_wer": corpus_wer([s]),
            "offline_wer": corpus_wer([o]),
            **streamed_clip,
            "offline_transcription": o[1],
        }
        for clip, s, o, streamed_clip in zip(clips, streamed_pairs, offline_pairs, stream, strict=True)
    ]
    report = {
        **provenance(),
        "model": args.model,
        "sets": sets,
        "serve_flags": args.serve_flag,
        "files": len(clips),
        "audio_seconds": round(sum(clip["duration"] for clip in clips), 1),
        "streaming_wer": corpus_wer(streamed_pairs),
        "offline_wer": corpus_wer(offline_pairs),
        "whisper_normaliser": {
            "streaming_wer": corpus_whisper_wer(streamed_pairs),
            "offline_wer": corpus_whisper_wer(offline_pairs),
        },
        "offline_seconds": offline_seconds,
        "visible": {"stream": visible(stream_texts), "offline": visible(offline_texts)},
        # Worst first: where the stream loses to offline, and by how much.
        "worse_than_offline": sorted(
            (f for f in files if f["streaming_wer"] > f["offline_wer"]),
            key=lambda f: f["offline_wer"] - f["streaming_wer"],
        ),
        "per_file": files,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    summary = {k: v for k, v in report.items() if k not in ("per_file", "worse_than_offline")}
    print(json.dumps(summary, indent=2))
    for f in report["worse_than_offline"]:
        print(f"{f['audio']}: {f['streaming_wer']:.3f} against {f['offline_wer']:.3f}")
        print(f"  stream:  {f['transcription']}\n  offline: {f['offline_transcription']}")


if __name__ == "__main__":
    main()
