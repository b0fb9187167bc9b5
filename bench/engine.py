"""Where a model call's time goes, and what the encoder window costs in accuracy.

    python -m bench.engine steps   [--model tiny.en]    # time per step, batch sizes 1, 2, 4
    python -m bench.engine windows [--model tiny.en]    # WER and time per encoder window
    python -m bench.engine workers [--model tiny.en]    # 1 worker of 2 threads vs 2 of 1
    python -m bench.engine vad                          # the VAD's cost per window and stream
    python -m bench.engine context [--model tiny.en]    # a decode's cost per context and window
    python -m bench.engine cut-partials [--model tiny.en]  # WER of clips cut mid-speech per window

``steps`` decodes the first 16 reference utterances of the 5-minute LJ Speech file (cut at
their exact boundaries, 0.1 s of margin) as partials (beam 1, text only) and as finals (beam 5,
fallback, word alignment), and splits each call into features, encoder, decoder and alignment.
``windows`` decodes 90 single-utterance clips of other speakers (the ``ljspeech`` and ``read``
sets, up to 14 s) with each encoder window and scores them. ``workers`` compares one model
worker of two threads with two workers of one thread each, both decoding the same utterances.
``context`` decodes 2 s of each of 20 utterances of the 5-minute file as a stream's partial
does (in a 15 s and a 10 s window) and as its final does (beam 5, 15 s), after 0 to 13 s of the
reference utterances before it as context (their text the forced prefix), split by step.
``cut-partials`` cuts clips that no setting was tuned on (``read``, and ``ljspeech`` from
LJ001-0091, with silver word timings) at random points mid-speech, decodes them as partials
(greedy) with each window, and scores the words the cut left whole.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from bench.latency import DATA, FILE
from clients.stream import read_audio
from streaming.audio import Samples, decode_file
from streaming.config import Config
from streaming.engine import Clip, DecodeOptions
from streaming.models import resolve_model
from streaming.whisper import WhisperEngine
from tests.fakes import FINAL, PARTIAL
from tests.wer import wer


def engine(model: str, *, threads: int = 2, workers: int = 1) -> WhisperEngine:
    config = Config()
    path, name = resolve_model(model)
    from streaming.engine import Thresholds

    return WhisperEngine(
        path,
        name=name,
        device="cpu",
        compute_type="int8",
        cpu_threads=threads * workers,
        workers=workers,
        thresholds=Thresholds(
            no_speech=config.no_speech_threshold,
            log_prob=config.log_prob_threshold,
            compression_ratio=config.compression_ratio_threshold,
        ),
    )


def manifest() -> Iterator[dict[str, Any]]:
    for line in (DATA / "manifest.jsonl").read_text().splitlines():
        yield json.loads(line)


def long_utterances(count: int) -> list[Samples]:
    entry = next(e for e in manifest() if e["audio"] == FILE)
    audio = read_audio(DATA / FILE).samples[:, 0]
    return [
        audio[max(int(s[1] * 16000) - 1600, 0) : int(s[2] * 16000) + 1600].copy()
        for s in entry["segments"][:count]
    ]


class Timer:
    """Wraps methods to add up the seconds spent in each."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, owner: Any, method: str, label: str) -> None:
        inner: Callable[..., Any] = getattr(owner, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started

        setattr(owner, method, timed)


class _TimedGenerator:
    def __init__(self, inner: Any, timer: Timer) -> None:
        self._inner = inner
        timer.wrap(self, "generate", "decoder")
        timer.wrap(self, "align", "alignment")

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.generate(*args, **kwargs)

    def align(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.align(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def timed_engine(model: str, *, threads: int) -> tuple[WhisperEngine, Timer]:
    """The engine with each step's time added up in the timer."""
    whisper = engine(model, threads=threads)
    timer = Timer()
    timer.wrap(whisper, "_features", "features")
    timer.wrap(whisper._model, "encode", "encoder")
    whisper._model.model = _TimedGenerator(whisper._model.model, timer)
    return whisper, timer


def steps(model: str) -> None:
    whisper, timer = timed_engine(model, threads=2)
    utterances = long_utterances(16)
    whisper.transcribe_batch([Clip(u) for u in utterances[:1]], FINAL)  # warm up
    for options, label in ((PARTIAL, "partial"), (FINAL, "final")):
        for size in (1, 2, 4):
            timer.seconds.clear()
            started = time.perf_counter()
            for i in range(0, len(utterances), size):
                whisper.transcribe_batch([Clip(u) for u in utterances[i : i + size]], options)
            total = time.perf_counter() - started
            parts = {k: round(v / len(utterances) * 1000) for k, v in timer.seconds.items()}
            print(
                json.dumps(
                    {
                        "kind": label,
                        "batch": size,
                        "ms_per_utterance": round(total / len(utterances) * 1000),
                        **parts,
                    }
                )
            )


def windows(model: str) -> None:
    whisper = engine(model)
    entries = [
        e
        for e in manifest()
        if e["set"] in ("ljspeech", "read") and e["channels"] == 1 and e["duration"] <= 14
    ][:90]
    clips = [decode_file((DATA / e["audio"]).read_bytes()) for e in entries]
    reference = " ".join(e["text"] for e in entries)
    for seconds in (30, 15, 10, 0):
        for base, label in ((FINAL, "final"), (PARTIAL, "partial")):
            options = dataclasses.replace(base, encoder_window=seconds)  # 0: the utterance plus 1 s
            started = time.perf_counter()
            texts = [
                d.text
                for i in range(0, len(clips), 4)
                for d in whisper.transcribe_batch([Clip(c) for c in clips[i : i + 4]], options)
            ]
            print(
                json.dumps(
                    {
                        "window_s": seconds or "utterance + 1",
                        "kind": label,
                        "wer": round(wer(reference, " ".join(texts)), 3),
                        "seconds": round(time.perf_counter() - started, 1),
                        "clips": len(clips),
                    }
                )
            )


def workers(model: str) -> None:
    utterances = long_utterances(24)
    for threads, count in ((2, 1), (1, 2)):
        whisper = engine(model, threads=threads, workers=count)
        whisper.transcribe_batch([Clip(u) for u in utterances[:2]], PARTIAL)
        for options, label in ((PARTIAL, "partial"), (FINAL, "final")):
            for size in (1, 2, 4):
                batches = [utterances[i : i + size] for i in range(0, len(utterances), size)]
                started = time.perf_counter()
                _run_concurrently(whisper, batches, options, count)
                ms = (time.perf_counter() - started) / len(utterances) * 1000
                print(
                    json.dumps(
                        {
                            "workers": count,
                            "threads_each": threads,
                            "kind": label,
                            "batch": size,
                            "ms_per_utterance": round(ms),
                        }
                    )
                )


def _run_concurrently(
    whisper: WhisperEngine, batches: Sequence[list[Samples]], options: DecodeOptions, count: int
) -> None:
    work = iter(batches)
    lock = threading.Lock()

    def run() -> None:
        while True:
            with lock:
                batch = next(work, None)
            if batch is None:
                return
            whisper.transcribe_batch([Clip(u) for u in batch], options)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def vad(model: str) -> None:
    """The VAD's cost per 32 ms window of one stream: the server's scorer (silero-vad's ONNX
    network on ONNX Runtime) against the package's TorchScript model, on 10 s of a real clip."""
    import silero_vad
    import torch

    from streaming.vad import WINDOW, SileroVad

    torch.set_num_threads(1)
    audio = decode_file((DATA / "read/jfk.flac").read_bytes())[: 10 * 16000]
    windows = [audio[i : i + WINDOW] for i in range(0, len(audio) - WINDOW + 1, WINDOW)]
    packaged = silero_vad.load_silero_vad(onnx=False)
    scorer = SileroVad().scorer()
    with torch.inference_mode():
        for label, score in (
            ("torchscript", lambda w: float(packaged(torch.from_numpy(w), 16000))),
            ("onnxruntime (served)", scorer),
        ):
            started = time.perf_counter()
            for window in windows:
                score(window)
            ms = (time.perf_counter() - started) / len(windows) * 1000
            print(json.dumps({"vad": label, "ms_per_window": round(ms, 3), "windows": len(windows)}))


def context(model: str) -> None:
    """What a stream partial's context costs: CTranslate2 forces a prefix on the decoder token
    by token, at about the cost of decoding as many new tokens."""
    whisper, timer = timed_engine(model, threads=1)
    entry = next(e for e in manifest() if e["audio"] == FILE)
    audio = read_audio(DATA / FILE).samples[:, 0]
    segments = entry["segments"]
    options = dataclasses.replace(PARTIAL, word_timestamps=True)

    def clips(seconds: float) -> list[Clip]:
        out = []
        for segment in segments[1:21]:
            new_start = int(segment[1] * 16000)
            before = [
                p
                for p in segments
                if p[2] * 16000 <= new_start and p[1] * 16000 >= new_start - seconds * 16000
            ]
            start = int(before[0][1] * 16000) if before else new_start
            prefix = " ".join(p[0] for p in before)
            out.append(Clip(audio[start : new_start + 32000].copy(), prefix))
        return out

    whisper.transcribe_batch(clips(0)[:1], options)  # warm up
    runs = [("partial", options, window) for window in (15.0, 10.0)] + [("final", FINAL, 15.0)]
    for seconds in (0, 4, 8, 13):
        batch = clips(seconds)
        for kind, kind_options, window in runs:
            timer.seconds.clear()
            started = time.perf_counter()
            for clip in batch:
                whisper.transcribe_batch([clip], dataclasses.replace(kind_options, encoder_window=window))
            total = time.perf_counter() - started
            parts = {k: round(v / len(batch) * 1000) for k, v in timer.seconds.items()}
            mean_clip = sum(len(c.audio) for c in batch) / len(batch) / 16000
            print(
                json.dumps(
                    {
                        "kind": kind,
                        "context_s": seconds,
                        "window_s": window,
                        "mean_clip_s": round(mean_clip, 1),
                        "ms_per_decode": round(total / len(batch) * 1000),
                        **parts,
                    }
                )
            )


def cut_partials(model: str) -> None:
    """Greedy partials of clips cut mid-speech, per encoder window: a partial's clip ends in
    speech, where a window too small for Whisper loses words (the last word of both the
    reference and the decode is left out, since the cut falls inside it)."""
    whisper = engine(model, threads=1)
    rng = random.Random(7)
    items: list[tuple[Samples, str]] = []
    for e in manifest():
        held_out = e["set"] == "read" or (
            e["set"] == "ljspeech" and int(re.search(r"LJ001-(\d+)", e["audio"]).group(1)) >= 91  # type: ignore[union-attr]
        )
        if not (e.get("words_silver") and e["channels"] == 1 and held_out):
            continue
        audio = read_audio(DATA / e["audio"]).samples[:, 0]
        words = e["words_silver"]
        for _ in range(2):
            cut = rng.uniform(1.0, min(9.0, words[-1][2]))
            said = " ".join(w[0] for w in words if w[2] <= cut)
            items.append((audio[: int(cut * 16000)].copy(), said))
    aligned = dataclasses.replace(PARTIAL, word_timestamps=True)  # as a stream's partials are
    whisper.transcribe_batch([Clip(items[0][0])], aligned)  # warm up
    for window in (15.0, 10.0, 8.0):
        options = dataclasses.replace(aligned, encoder_window=window)
        started = time.perf_counter()
        heard = [whisper.transcribe_batch([Clip(a)], options)[0].text for a, _ in items]
        seconds = time.perf_counter() - started
        reference = " ".join(" ".join(said.split()[:-1]) for _, said in items)
        hypothesis = " ".join(" ".join(text.split()[:-1]) for text in heard)
        print(
            json.dumps(
                {
                    "window_s": window,
                    "clips": len(items),
                    "wer": round(wer(reference, hypothesis), 4),
                    "ms_per_partial": round(seconds / len(items) * 1000),
                }
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=("steps", "windows", "workers", "vad", "context", "cut-partials"))
    parser.add_argument("--model", default="tiny.en")
    args = parser.parse_args()
    chosen = {
        "steps": steps,
        "windows": windows,
        "workers": workers,
        "vad": vad,
        "context": context,
        "cut-partials": cut_partials,
    }
    chosen[args.what](args.model)


if __name__ == "__main__":
    main()
