"""Streaming latency and accuracy against offline, on long-form speech with short pauses.

    python -m bench.latency [--speed 1.0] [--model tiny.en] [--out bench/results/latency.json]
                            [--longform 43-90] [--serve-flag=--commit-bound=2 ...]

Starts the real server (``python -m streaming serve``) on a free loopback port, streams
``long/ljspeech_5min.flac`` (or, with ``--longform FIRST-LAST``, the ``ljspeech`` clips
LJ001-FIRST to LJ001-LAST joined with 0.3 s gaps: speech the defaults were not tuned on, since
the 5-minute file is LJ001-0001 to 0042) paced in real time over the websocket, and reports:

- final latency per reference utterance: from the send of its last audio to the arrival of
  the ``segment`` message that holds its end (p50, p95, max);
- time to first partial: from the send of an utterance's first audio to the first ``partial``
  that covers it;
- committed WER of the stream's ``final``, and offline WER of the same model (faster-whisper
  on the whole file, beam 5, no VAD) measured in the same run, as the yardstick;
- the final's segment count against the reference's sentence count.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from bisect import bisect_left
from pathlib import Path
from typing import Any

import numpy as np

from bench import provenance
from clients.stream import Recording, read_audio, stream_file
from streaming.sentences import ends_sentence
from streaming.testing import free_port, serve_process
from tests.wer import wer, whisper_wer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FILE = "long/ljspeech_5min.flac"
GAP = 0.3  # seconds between joined clips: the 5-minute file's own pauses


def longform(first: int, last: int) -> tuple[Recording, dict[str, Any]]:
    """The ``ljspeech`` clips LJ001-``first`` to ``last`` joined with ``GAP`` of silence, and a
    manifest entry for it (text and exact utterance boundaries)."""
    entries = {
        e["audio"]: e
        for e in (json.loads(line) for line in (DATA / "manifest.jsonl").read_text().splitlines())
    }
    parts, segments, at = [], [], 0.0
    gap = np.zeros((round(GAP * 16000), 1), np.float32)
    for number in range(first, last + 1):
        entry = entries[f"ljspeech/LJ001-{number:04d}.flac"]
        clip = read_audio(DATA / entry["audio"])
        assert clip.sample_rate == 16000
        parts += [clip.samples, gap]
        segments.append([entry["text"], at, at + len(clip.samples) / 16000])
        at += (len(clip.samples) + len(gap)) / 16000
    text = " ".join(s[0] for s in segments)
    return Recording(np.concatenate(parts), 16000), {"text": text, "segments": segments}


def send_time(sent_at: dict[float, float], stream_time: float) -> float:
    """Wall time (since the first send) at which the audio at ``stream_time`` left the client."""
    ends = sorted(sent_at)
    return sent_at[ends[min(bisect_left(ends, stream_time), len(ends) - 1)]]


def utterance_latencies(
    result: Any, sent_at: dict[float, float], reference: list[list[Any]]
) -> tuple[list[float], list[float], list[float]]:
    """Per reference utterance: final latency (send of its last audio to the ``segment`` that
    holds its end), first-partial latency (send of its first audio to the first ``partial``
    covering it) and first-words latency (the same to the first ``partial`` or ``segment``
    covering it: under load a partial may come late enough to commit its words, which then
    reach the screen as a ``segment`` and no ``partial`` shows them). Utterances that got
    none are left out."""
    shown = [
        (m["type"], m["segment"], t)
        for m, t in zip(result.messages, result.arrivals, strict=True)
        if m["type"] in ("segment", "partial")
    ]
    finals, firsts, words = [], [], []
    for _, start, end in reference:
        # A segment ends with its last word, up to about 0.6 s before an LJ clip does.
        holder = next(
            (t for kind, s, t in shown if kind == "segment" and s["start"] <= end <= s["end"] + 0.6), None
        )
        if holder is not None:
            finals.append(holder - send_time(sent_at, end))
        sent = send_time(sent_at, start)
        covering = [(kind, t) for kind, s, t in shown if s["end"] > start and t > sent and s["start"] < end]
        first = next((t for kind, t in covering if kind == "partial"), None)
        if first is not None:
            firsts.append(first - sent)
        if covering:
            words.append(covering[0][1] - sent)
    return finals, firsts, words


def pct(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"p50": float("nan"), "p95": float("nan"), "max": float("nan"), "n": 0}
    return {
        "p50": float(np.percentile(xs, 50)),
        "p95": float(np.percentile(xs, 95)),
        "max": float(max(xs)),
        "n": len(xs),
    }


def word_waits(result: Any, sent_at: dict[float, float]) -> list[float]:
    """Per committed word: from the send of its last audio to the arrival of its ``segment``
    (what the commit bound limits)."""
    return [
        arrival - send_time(sent_at, word["end"])
        for m, arrival in zip(result.messages, result.arrivals, strict=True)
        if m["type"] == "segment"
        for word in m["segment"]["words"]
    ]


def latencies(result: Any, sent_at: dict[float, float], reference: list[list[Any]]) -> dict[str, Any]:
    finals, firsts, first_words = utterance_latencies(result, sent_at, reference)
    return {
        # TTFS as the pipecat STT benchmark defines it: end of the utterance's speech to its
        # final text.
        "final_latency_s": pct(finals),
        "word_commit_s": pct(word_waits(result, sent_at)),
        "first_partial_s": pct(firsts),
        "first_words_s": pct(first_words),
        "partials": sum(m["type"] == "partial" for m in result.messages),
        "segments": sum(m["type"] == "segment" for m in result.messages),
    }


def offline_wer(model: str, text: str, recording: Recording) -> tuple[float, float, str]:
    from faster_whisper import WhisperModel

    from streaming.models import resolve_model

    path, _ = resolve_model(model)
    whisper = WhisperModel(path, device="cpu", compute_type="int8")
    audio = recording.samples[:, 0]
    assert recording.sample_rate == 16000
    started = time.perf_counter()
    segments, _ = whisper.transcribe(audio, beam_size=5, language="en")
    hypothesis = " ".join(s.text.strip() for s in segments)
    return wer(text, hypothesis), time.perf_counter() - started, hypothesis


def punctuation(text: str) -> dict[str, int]:
    """How a transcript is punctuated, beside offline's: its sentences, the longest of them in
    words, and its commas. A stream that ends sentences where offline writes a comma has more
    sentences; one whose prefix lost its marks runs them together (a longest sentence of 174
    words against offline's 65, in a change that was reverted: docs/benchmarks.md)."""
    lengths = [0]
    for word in text.split():
        lengths[-1] += 1
        if ends_sentence(word):
            lengths.append(0)
    sentences = [n for n in lengths if n]
    return {
        "sentences": len(sentences),
        "longest_sentence": max(sentences, default=0),
        "commas": sum(word.endswith((",", ";", ":")) for word in text.split()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--speed", type=float, default=1.0, help="pacing: 1.0 is real time")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latency.json")
    parser.add_argument(
        "--longform", help="FIRST-LAST: LJ001 clip numbers to join instead of the 5-minute file"
    )
    parser.add_argument("--serve-flag", action="append", default=[], help="passed to the server")
    args = parser.parse_args()
    if args.longform:
        first, _, last = args.longform.partition("-")
        recording, entry = longform(int(first), int(last))
    else:
        entry = next(
            json.loads(line)
            for line in (DATA / "manifest.jsonl").read_text().splitlines()
            if json.loads(line)["audio"] == FILE
        )
        recording = read_audio(DATA / FILE)
    port = free_port()
    server = serve_process(port, "--model", args.model, *args.serve_flag, cwd=str(ROOT))
    try:
        sent_at: dict[float, float] = {}
        result = asyncio.run(
            stream_file(
                f"ws://127.0.0.1:{port}/v1/stream",
                recording,
                realtime=True,
                speed=args.speed,
                sent_at=sent_at,
            )
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    final = result.final
    assert final is not None, result.errors
    report = {
        **provenance(),
        "model": args.model,
        "file": f"LJ001-{args.longform} joined" if args.longform else FILE,
        "serve_flags": args.serve_flag,
        "speed": args.speed,
        "audio_seconds": recording.duration,
        "streaming_wer": wer(entry["text"], final["transcription"]),
        "final_segments": len(final["response"]["segments"]),
        "reference_sentences": sum(entry["text"].count(mark) for mark in ".?!"),
        # A full stop followed by a lower-case word: a sentence the model ended where its clip
        # stopped, and went on.
        "stray_stops": sum(
            ends_sentence(a) and b[:1].islower()
            for a, b in itertools.pairwise(final["transcription"].split())
        ),
        **latencies(result, sent_at, entry["segments"]),
    }
    report["offline_wer"], report["offline_seconds"], report["offline_transcription"] = offline_wer(
        args.model, entry["text"], recording
    )
    report["whisper_normaliser"] = {
        "streaming_wer": whisper_wer(entry["text"], final["transcription"]),
        "offline_wer": whisper_wer(entry["text"], report["offline_transcription"]),
    }
    report["punctuation"] = {
        "stream": punctuation(final["transcription"]),
        "offline": punctuation(report["offline_transcription"]),
    }
    report["transcription"] = final["transcription"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
