"""`POST /predict` against offline faster-whisper, file by file: short read clips and long files.

    python -m bench.predict [--model tiny.en] [--sets ljspeech,read,telephony,long] [--out ...]
                            [--serve-flag=--file-min-silence=0.3 ...]

Starts the real server (``python -m streaming serve``, with any ``--serve-flag``s) on a free
loopback port and posts every mono file of the chosen sets (the hosted request: the file in
base64), one at a time. In the same run, the same model decodes the same files offline with
faster-whisper (beam 5, no VAD; a clip in one window, a long file in 30 s windows, each
prompted with the text before it, as faster-whisper does by default), as the yardstick. Both are
scored as corpus WER (errors over all reference words, normalised as tests/wer.py does), over
all files and per set, and the files where /predict is worse than offline are listed, worst first.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jiwer

from bench import provenance
from streaming.testing import free_port, serve_process
from tests.wer import normalise

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    references = [normalise(r) for r, _ in pairs]
    hypotheses = [normalise(h) or "<empty>" for _, h in pairs]
    return float(jiwer.wer(references, hypotheses))


def offline(model: str, clips: list[dict[str, Any]]) -> tuple[list[str], float]:
    from faster_whisper import WhisperModel

    from streaming.audio import decode_file
    from streaming.models import resolve_model

    path, _ = resolve_model(model)
    whisper = WhisperModel(path, device="cpu", compute_type="int8")
    texts, started = [], time.perf_counter()
    for clip in clips:
        audio = decode_file((DATA / clip["audio"]).read_bytes())
        segments, _ = whisper.transcribe(audio, beam_size=5, language="en")
        texts.append(" ".join(s.text.strip() for s in segments))
    return texts, time.perf_counter() - started


def served(port: int, clips: list[dict[str, Any]]) -> tuple[list[str], float]:
    texts, started = [], time.perf_counter()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
        for clip in clips:
            audio = base64.b64encode((DATA / clip["audio"]).read_bytes()).decode()
            response = client.post("/predict", json={"audio": audio, "language": "en"})
            response.raise_for_status()
            texts.append(response.json()["transcription"])
    return texts, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--sets", default="ljspeech,read,telephony,long")
    parser.add_argument("--serve-flag", action="append", default=[], help="passed to the server")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "predict.json")
    args = parser.parse_args()
    sets = args.sets.split(",")
    manifest = [json.loads(line) for line in (DATA / "manifest.jsonl").read_text().splitlines()]
    clips = [c for c in manifest if c["set"] in sets and c["channels"] == 1]
    port = free_port()
    server = serve_process(port, "--model", args.model, *args.serve_flag, cwd=str(ROOT))
    try:
        ours, ours_seconds = served(port, clips)
    finally:
        server.terminate()
        server.wait(timeout=30)
    theirs, theirs_seconds = offline(args.model, clips)
    rows = [
        {
            "audio": c["audio"],
            "set": c["set"],
            "reference": c["text"],
            "predict": o,
            "offline": t,
            "predict_wer": corpus_wer([(c["text"], o)]),
            "offline_wer": corpus_wer([(c["text"], t)]),
        }
        for c, o, t in zip(clips, ours, theirs, strict=True)
    ]
    per_set = {
        name: {
            "clips": sum(r["set"] == name for r in rows),
            "predict_wer": corpus_wer([(r["reference"], r["predict"]) for r in rows if r["set"] == name]),
            "offline_wer": corpus_wer([(r["reference"], r["offline"]) for r in rows if r["set"] == name]),
        }
        for name in sets
    }
    worse = sorted(rows, key=lambda r: r["offline_wer"] - r["predict_wer"])
    report = {
        **provenance(),
        "model": args.model,
        "serve_flags": args.serve_flag,
        "clips": len(rows),
        "audio_seconds": sum(c["duration"] for c in clips),
        "predict_wer": corpus_wer([(r["reference"], r["predict"]) for r in rows]),
        "offline_wer": corpus_wer([(r["reference"], r["offline"]) for r in rows]),
        "predict_seconds": ours_seconds,
        "offline_seconds": theirs_seconds,
        "per_set": per_set,
        "worse_than_offline": [r for r in worse if r["predict_wer"] > r["offline_wer"]][:15],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**report, "rows": rows}, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
