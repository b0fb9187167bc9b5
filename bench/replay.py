"""Committed WER against offline, without the noise of real time: each file replayed through a
session on a manual clock.

    python -m bench.replay [--sets read,calls,ljspeech,long] [--model tiny.en]
                           [--partial-time 0.25] [--final-time 0.4] [--out bench/results/replay.json]
                           [--serve-flag=--commit-bound=2 ...]

``bench.sessions`` and ``bench.latency`` stream through the real server in real time: when a
decode lands depends on what else the two cores did, so which words a partial commits changes
from run to run, and single runs of one rule differ by more than two rules do (the ``read`` set:
0.058 and 0.065 for the same code). Here every file is fed in 0.1 s chunks to a
:class:`~streaming.session.Session` with the real engine and the real VAD, and a decode's result
comes back a fixed model time after it starts (``--partial-time``, ``--final-time``; two
workers, as the server runs on two cores), however long it really took. The run is the same
each time, so a change to the commit rule shows as what it does to the words, on all the speech
at hand (about 28 minutes), and nothing else. It measures accuracy, not latency: the waits it
reports are in model time.

Sets: ``read`` (16 clips), ``calls`` (``mono-call`` and ``telephony``), ``ljspeech`` (160 clips,
each a session: a stream's start, where a decode has heard a second or two), and ``long``: the
5-minute LJ file, ``LJ001-0043..0090`` and ``0091..0160`` joined with 0.3 s gaps, and the
LibriVox sonnet. Scored as corpus WER under our normaliser and Whisper's, against offline
faster-whisper (same model, beam 5, no VAD) on the same audio in the same run.
"""

from __future__ import annotations

import argparse
import heapq
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import provenance, publish
from bench.engine import engine, manifest
from bench.latency import longform
from bench.predict import DATA, ROOT, corpus_wer
from bench.sessions import corpus_whisper_wer
from clients.stream import Recording, read_audio
from streaming.audio import decode_file
from streaming.cli import build_parser, config_from
from streaming.clock import ManualClock
from streaming.config import Config, StreamConfig
from streaming.messages import ServerMessage
from streaming.session import Session
from streaming.settings import SessionSettings
from streaming.vad import Segmenter, SileroVad, VadParams

CHUNK = 0.1  # seconds of audio per message, as a browser or a call feed sends it
WORKERS = 2
LONG = ("long/ljspeech_5min.flac", "LJ:43-90", "LJ:91-160", "long/sonnet_librivox.flac")


@dataclass(frozen=True)
class Times:
    """Model time a decode takes: a partial's, and a final's (beam 5)."""

    partial: float
    final: float


def _joined(name: str) -> tuple[Recording, dict[str, Any]]:
    """``LJ:A-B``: the ``ljspeech`` clips LJ001-A to B joined as ``bench.latency`` joins them."""
    first, _, last = name[3:].partition("-")
    return longform(int(first), int(last))


def recordings(sets: list[str]) -> list[tuple[str, str]]:
    """(name, reference) of every mono file of ``sets``; ``LJ:A-B`` names joined clips."""
    entries = list(manifest())
    members = {
        "read": {"read"},
        "calls": {"mono-call", "telephony"},
        "ljspeech": {"ljspeech"},
    }
    out = []
    for name in sets:
        if name == "long":
            for audio in LONG:
                if audio.startswith("LJ:"):
                    out.append((audio, _joined(audio)[1]["text"]))
                else:
                    out.append((audio, next(e["text"] for e in entries if e["audio"] == audio)))
            continue
        out += [(e["audio"], e["text"]) for e in entries if e["set"] in members[name] and e["channels"] == 1]
    return out


def audio_of(name: str) -> tuple[np.ndarray, int]:
    recording = _joined(name)[0] if name.startswith("LJ:") else read_audio(DATA / name)
    return recording.samples.reshape(-1).astype(np.float32), recording.sample_rate


class Replay:
    """One process's engine, VAD and offline model; files are replayed one at a time."""

    def __init__(self, model: str, config: Config, times: Times) -> None:
        from faster_whisper import WhisperModel

        from streaming.models import resolve_model

        self.engine = engine(model, threads=1)
        self.offline_model = WhisperModel(
            resolve_model(model)[0], device="cpu", compute_type="int8", cpu_threads=1
        )
        self.vad = SileroVad()
        self.config = config
        self.times = times

    def session(self, clock: ManualClock, rate: int) -> Session:
        vad = VadParams.from_config(self.config)
        return Session(
            session_id="replay",
            stream=StreamConfig(encoding="pcm_f32le", sample_rate=rate),
            settings=SessionSettings.from_config(self.config, self.engine.name),
            new_segmenter=lambda: Segmenter(self.vad.scorer(), vad),
            clock=clock,
        )

    def stream(self, samples: np.ndarray, rate: int) -> tuple[list[ServerMessage], list[float]]:
        """Every message the session sent for ``samples``, its final last, and how long each
        word committed while the audio went on waited for its segment (model time: clock time
        is stream time here)."""
        clock = ManualClock()
        session = self.session(clock, rate)
        free = [0.0] * WORKERS  # when each worker is next free, in clock time
        landing: list[tuple[float, int, Any]] = []  # (at, ticket, decoded), soonest first
        sent: list[ServerMessage] = []
        waits: list[float] = []

        def pump() -> None:
            while True:
                sent.extend(session.messages_to_send())
                while landing and landing[0][0] <= clock.now() + 1e-9:
                    _, ticket, decoded = heapq.heappop(landing)
                    session.receive_result(ticket, decoded)
                    sent.extend(session.messages_to_send())
                jobs = session.jobs_to_start()
                if not jobs:
                    return
                for job in jobs:
                    [decoded] = self.engine.transcribe_batch([job.clip], job.options)
                    worker = min(range(WORKERS), key=free.__getitem__)
                    took = self.times.final if job.kind == "final" else self.times.partial
                    free[worker] = max(free[worker], clock.now()) + took
                    heapq.heappush(landing, (free[worker], job.ticket, decoded))

        step = rate // round(1 / CHUNK)
        for i in range(0, len(samples), step):
            clock.advance(CHUNK)
            session.receive_bytes(samples[i : i + step].astype("<f4").tobytes())
            session.tick()
            seen = len(sent)
            pump()
            waits += [
                clock.now() - word["end"]
                for m in sent[seen:]
                if m["type"] == "segment"
                for word in m["segment"]["words"]
            ]
        session.receive_text(json.dumps({"type": "end"}))
        for _ in range(round(60 / CHUNK)):
            if sent and sent[-1]["type"] == "final":
                return sent, waits
            clock.advance(CHUNK)
            session.tick()
            pump()
        raise RuntimeError(f"no final a minute after the end: {sent[-3:]}")

    def offline(self, name: str, samples: np.ndarray) -> str:
        """Offline faster-whisper on the file as ``/predict`` reads it (resampled to 16 kHz)."""
        audio = samples if name.startswith("LJ:") else decode_file((DATA / name).read_bytes())
        segments, _ = self.offline_model.transcribe(audio, beam_size=5, language="en")
        return " ".join(s.text.strip() for s in segments)

    def file(self, name: str) -> dict[str, Any]:
        samples, rate = audio_of(name)
        sent, waits = self.stream(samples, rate)
        final = sent[-1]
        assert final["type"] == "final"
        return {
            "audio": name,
            "transcription": final["transcription"],
            "offline_transcription": self.offline(name, samples),
            "partials": sum(m["type"] == "partial" for m in sent),
            "segments": sum(m["type"] == "segment" for m in sent),
            "commit_waits": [round(w, 2) for w in waits],
        }


_PROCESS: dict[str, Replay] = {}  # this pool process's Replay, made once by its initializer


def _start(model: str, flags: list[str], times: Times) -> None:
    _PROCESS["replay"] = Replay(model, config_from(build_parser().parse_args(["serve", *flags]), {}), times)


def _replay(name: str) -> dict[str, Any]:
    return _PROCESS["replay"].file(name)


def score(files: list[dict[str, Any]]) -> dict[str, Any]:
    waits = [w for f in files for w in f["commit_waits"]]
    streamed = [(f["reference"], f["transcription"]) for f in files]
    offline = [(f["reference"], f["offline_transcription"]) for f in files]
    return {
        "files": len(files),
        "streaming_wer": round(corpus_wer(streamed), 4),
        "offline_wer": round(corpus_wer(offline), 4),
        "whisper_normaliser": {
            "streaming_wer": round(corpus_whisper_wer(streamed), 4),
            "offline_wer": round(corpus_whisper_wer(offline), 4),
        },
        # Model time from a word's end to its segment, while the audio went on.
        "word_commit_s": {
            "p50": round(float(np.percentile(waits, 50)), 2) if waits else None,
            "p95": round(float(np.percentile(waits, 95)), 2) if waits else None,
            "max": max(waits, default=None),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--sets", default="read,calls,ljspeech,long")
    parser.add_argument("--partial-time", type=float, default=0.25, help="model seconds per partial")
    parser.add_argument("--final-time", type=float, default=0.4, help="model seconds per final")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "replay.json")
    parser.add_argument("--serve-flag", action="append", default=[], help="a server flag")
    args = parser.parse_args()
    sets = args.sets.split(",")
    named = {name: (s, reference) for s in sets for name, reference in recordings([s])}
    times = Times(args.partial_time, args.final_time)
    # Longest first, so that the two processes finish together.
    order = sorted(named, key=lambda n: -len(named[n][1]))
    with ProcessPoolExecutor(
        WORKERS, initializer=_start, initargs=(args.model, args.serve_flag, times)
    ) as pool:
        done = {f["audio"]: f for f in pool.map(_replay, order)}
    files = [{**done[n], "set": named[n][0], "reference": named[n][1]} for n in named]
    report = {
        **provenance(),
        "model": args.model,
        "serve_flags": args.serve_flag,
        "decode_times": {"partial": times.partial, "final": times.final, "workers": WORKERS},
        "all": score(files),
        "sets": {s: score([f for f in files if f["set"] == s]) for s in sets},
        "per_file": files,
    }
    publish(report, args.out, detail="per_file")


if __name__ == "__main__":
    main()
