"""Speaker labels on one channel (``diarize=true``), scored on the ``mono-call`` set.

    python -m bench.speakers [--stream] [--out bench/results/speakers.json]
    python -m bench.speakers --tune      # the threshold's evidence, on speech not in mono-call

Scoring: each word the server returns is given the speaker of the reference turn (the exact
``speaker_segments``) that holds its middle, or the nearest turn; the labels are mapped one to
one onto the speakers in the way that gets most words right (labels left over score nothing).
Reports, per file: the share of words with the right speaker, and the speakers found against
the true count. ``--stream`` also streams each file in real time and scores the ``segment`` words.

``--tune`` embeds clips that are *not* in mono-call (24 LJ Speech clips not used there, the JFK
clip, LibriSpeech 1272, the OSR Harvard reader cut in 7, two Austen clips not used there) at
16 kHz and through an 8 kHz telephone band, and prints how well each cosine threshold tells
same-speaker pairs from different-speaker pairs (the evidence for ``streaming.diarize.THRESHOLD``),
and, in conversations built from those clips and cut by the stream's VAD, how well each tells a
run that goes on its turn from a change of speaker (``CHANGE``). mono-call never chooses either.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soxr

from bench import provenance, publish
from bench.capacity import scrape
from bench.latency import DATA
from clients.stream import read_audio, stream_file
from streaming.config import Config
from streaming.testing import free_port, serve_process
from streaming.vad import Segmenter, SileroVad, VadParams
from streaming.voices import VoiceEncoder


def manifest() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / "manifest.jsonl").read_text().splitlines()]


def calls() -> list[dict[str, Any]]:
    return [entry for entry in manifest() if entry["set"] == "mono-call"]


def true_speaker(turns: list[list[Any]], start: float, end: float) -> str:
    middle = (start + end) / 2
    return min(
        turns, key=lambda t: 0 if t[2] <= middle <= t[3] else min(abs(middle - t[2]), abs(middle - t[3]))
    )[0]


def score(turns: list[list[Any]], words: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of words right under the best one-to-one mapping of labels onto speakers."""
    pairs = Counter((str(w["speaker"]), true_speaker(turns, w["start"], w["end"])) for w in words)
    labels = sorted({str(w["speaker"]) for w in words})
    speakers = sorted({t[0] for t in turns})
    best = 0
    for chosen in itertools.permutations(labels, min(len(labels), len(speakers))):
        for order in itertools.permutations(speakers, len(chosen)):
            best = max(best, sum(pairs[(lab, spk)] for lab, spk in zip(chosen, order, strict=True)))
    return {
        "words": len(words),
        "right_speaker": round(best / max(len(words), 1), 3),
        "speakers_found": len(labels),
        "speakers_true": len(speakers),
    }


def predicted(http: httpx.Client, base: str, clip: Path) -> list[dict[str, Any]]:
    body = {"audio": base64.b64encode(clip.read_bytes()).decode(), "diarize": True}
    answer = http.post(f"{base}/predict", json=body, timeout=300)
    answer.raise_for_status()
    words: list[dict[str, Any]] = answer.json()["response"]["word_segments"]
    return words


async def streamed(url: str, clip: Path) -> list[dict[str, Any]]:
    result = await stream_file(url, read_audio(clip), realtime=True, params={"diarize": "true"})
    return [w for m in result.messages if m["type"] == "segment" for w in m["segment"]["words"]]


def voice_seconds(base: str) -> float:
    return scrape(base).get("streaming_voice_seconds_total", 0.0)


def load(name: str) -> np.ndarray:
    found = read_audio(DATA / name)
    mono = found.samples[:, 0]
    return soxr.resample(mono, found.sample_rate, 16000) if found.sample_rate != 16000 else mono


def telephone(audio: np.ndarray) -> np.ndarray:
    """Through an 8 kHz band and back, as a call's audio reaches the model."""
    return soxr.resample(soxr.resample(audio, 16000, 8000), 8000, 16000).astype(np.float32)


def tune_clips() -> list[tuple[str, np.ndarray]]:
    """(speaker, audio) of speech that is not in mono-call."""
    entries = manifest()
    used = " ".join(t[1].lower() for e in entries if e["set"] == "mono-call" for t in e["speaker_segments"])

    def parts(audio: np.ndarray, n: int) -> list[np.ndarray]:
        return list(np.array_split(audio, n))

    unused_lj = [e for e in entries if e["set"] == "ljspeech" and e["text"].lower()[:30] not in used]
    items = [("lj", load(e["audio"])) for e in unused_lj[:24]]
    items += [("jfk", a) for a in parts(load("read/jfk.flac"), 2)]
    items += [("1272", a) for a in parts(load("read/test.flac"), 2)]
    items += [("osr", a) for a in parts(load("telephony/OSR_us_000_0034_8k.flac"), 7)]
    items += [("austen", load(f"read/sense_and_sensibility_01_austen_64kb-0{n}.flac")) for n in (920, 930)]
    return items


def tune_threshold(encoder: VoiceEncoder, items: list[tuple[str, np.ndarray]], band: str) -> dict[str, Any]:
    """How well each cosine threshold tells same-speaker clips from different-speaker ones."""
    vectors = np.stack(encoder.embed([a if band == "16k" else telephone(a) for _, a in items]))
    similarity = vectors @ vectors.T
    same, different = [], []
    for i, j in itertools.combinations(range(len(items)), 2):
        (same if items[i][0] == items[j][0] else different).append(float(similarity[i, j]))
    return {
        "same_min": round(min(same), 3),
        "different_max": round(max(different), 3),
        "balanced_accuracy": balanced(same, different, np.arange(0.6, 0.851, 0.025)),
    }


def tune_change(encoder: VoiceEncoder, items: list[tuple[str, np.ndarray]], band: str) -> dict[str, Any]:
    """Conversations built from the same clips (LJ Speech taking three turns with each other
    reader, whose speech is cut in three; 0.4 to 0.9 s apart), cut into runs by the stream's
    VAD: each run's similarity to the turn before it, when the speaker goes on and when it
    changes."""
    rng = np.random.default_rng(0)
    lj = [a for s, a in items if s == "lj"]
    others: dict[str, list[np.ndarray]] = {}
    for speaker, audio in items:
        if speaker != "lj":
            others.setdefault(speaker, []).append(audio)
    vad, params = SileroVad(), VadParams.from_config(Config())
    goes_on, changes = [], []
    for n, (speaker, clips) in enumerate(others.items()):
        thirds = np.array_split(np.concatenate(clips), 3)
        turns = [
            t for i, third in enumerate(thirds) for t in (("lj", lj[(3 * n + i) % len(lj)]), (speaker, third))
        ]
        audio, spans, at = [], [], 0
        for who, clip in turns:
            gap = np.zeros(int(rng.uniform(0.4, 0.9) * 16000), np.float32)
            spans.append((who, at, at + len(clip)))
            audio += [clip, gap]
            at += len(clip) + len(gap)
        whole = np.concatenate(audio).astype(np.float32)
        whole = whole if band == "16k" else telephone(whole)
        segmenter = Segmenter(vad.scorer(), params)
        runs = [
            r
            for i in range(0, len(whole), 1600)
            for u in segmenter.push(whole[i : i + 1600])
            for r in u.speech
        ]
        turn, owner = None, None
        for (lo, hi), vector in zip(runs, encoder.embed([whole[lo:hi] for lo, hi in runs]), strict=True):
            who = true_speaker([[s, "", a / 16000, b / 16000] for s, a, b in spans], lo / 16000, hi / 16000)
            if turn is not None:
                alike = float(vector @ (turn / np.linalg.norm(turn)))
                (goes_on if who == owner else changes).append(alike)
            weighted = vector * (hi - lo) / 16000
            turn, owner = (turn + weighted, owner) if turn is not None and who == owner else (weighted, who)
    return {
        "runs_going_on": len(goes_on),
        "changes": len(changes),
        "going_on_min": round(min(goes_on), 3),
        "change_max": round(max(changes), 3),
        "balanced_accuracy": balanced(goes_on, changes, np.arange(0.5, 0.751, 0.025)),
    }


def balanced(positive: list[float], negative: list[float], thresholds: np.ndarray) -> dict[str, float]:
    above, below = np.array(positive), np.array(negative)
    return {f"{t:.3f}": round(float((np.mean(above >= t) + np.mean(below < t)) / 2), 3) for t in thresholds}


def tune() -> dict[str, Any]:
    encoder = VoiceEncoder.load()
    items = tune_clips()
    report: dict[str, Any] = {"clips": len(items), "speakers": len({s for s, _ in items})}
    for band in ("16k", "8k"):
        report[f"threshold_{band}"] = tune_threshold(encoder, items, band)
        report[f"change_{band}"] = tune_change(encoder, items, band)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stream", action="store_true", help="also stream each file in real time")
    parser.add_argument("--tune", action="store_true", help="the threshold's evidence (no server)")
    parser.add_argument("--only", default="", help="only the files whose name holds this")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.tune:
        publish({**provenance(), **tune()}, args.out)
        return
    port = free_port()
    server = serve_process(port)
    base = f"http://127.0.0.1:{port}"
    report: dict[str, Any] = {**provenance(), "predict": {}, "stream": {}}
    spent = {"predict": 0.0, "stream": 0.0}  # the speaker model's seconds, per mode
    audio = {"predict": 0.0, "stream": 0.0}
    try:
        with httpx.Client() as http:
            for entry in [e for e in calls() if args.only in e["audio"]]:
                clip, turns = DATA / entry["audio"], entry["speaker_segments"]
                before = voice_seconds(base)
                report["predict"][entry["audio"]] = score(turns, predicted(http, base, clip))
                spent["predict"] += voice_seconds(base) - before
                audio["predict"] += entry["duration"]
                if args.stream:
                    before = voice_seconds(base)
                    words = asyncio.run(streamed(base.replace("http", "ws") + "/v1/stream", clip))
                    report["stream"][entry["audio"]] = score(turns, words)
                    spent["stream"] += voice_seconds(base) - before
                    audio["stream"] += entry["duration"]
        # Seconds of the speaker model per second of audio: the share of a core one stream costs.
        report["speaker_model_cost"] = {m: round(spent[m] / audio[m], 4) for m in spent if audio[m]}
    finally:
        server.kill()
        server.wait()
    publish(report, args.out)


if __name__ == "__main__":
    main()
