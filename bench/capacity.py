"""How many live streams one server holds: N concurrent real-time streams, N = 1, 2, 4, 8 ...

    python -m bench.capacity [--levels 1,2,4,8,12,16] [--seconds 90] [--model tiny.en]
                             [--server-args "--batch-size 4"] [--out bench/results/capacity.json]
                             [--plot docs/capacity-cpu.png]

Starts the real server (``python -m streaming serve``) once, then for each N opens N real
websocket clients on loopback, each streaming the first ``--seconds`` of the 5-minute LJ
Speech recording (cut at a sentence end) in real time. The streams carry the same speech so
that every level is scored against the same reference, and start spread over 3 s so that
their utterances do not end in lockstep. For each N it reports:

- final latency p50/p95/max: from the send of an utterance's last audio to the ``segment``
  holding its end (per reference utterance, over all streams);
- time to first partial (p50/p95), partials received, and partials the server shed (from
  ``/metrics``);
- committed WER over all streams, and its ratio to one stream's; each stream's, and its
  transcript (in the report file);
- the server process's CPU (share of one core) and peak RSS;
- whether it kept up: the median final latency of each stream's last third is within 0.5 s of
  its first third's (lag does not grow), and every stream got its final.

The capacity figure is the largest N that kept up with p95 final latency under 1.5 s and WER
within 5 % (relative) of one stream's. Levels stop after the first one that does not keep up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import statistics
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench import provenance
from bench.latency import DATA, FILE, ROOT, pct, utterance_latencies
from clients.stream import Recording, StreamResult, read_audio, stream_file
from streaming.testing import free_port, serve_process
from tests.wer import wer

P95_LIMIT = 1.5
WER_TOLERANCE = 1.05
STAGGER = 3.0


@dataclass
class Window:
    recording: Recording
    reference: list[list[Any]]  # [text, start, end] of the reference utterances inside it
    text: str
    encoding: str = "pcm_s16le"
    params: dict[str, str] | None = None


def call_window(name: str) -> Window:
    """A two-channel call, one speaker per channel, sent as G.711 mu-law with multichannel=true;
    its reference is both channels' exact segments in start order."""
    entry = next(
        json.loads(line)
        for line in (DATA / "manifest.jsonl").read_text().splitlines()
        if json.loads(line)["audio"] == name
    )
    segments = sorted((s for channel in entry["channel_segments"] for s in channel), key=lambda s: s[1])
    return Window(
        read_audio(DATA / name),
        segments,
        " ".join(s[0] for s in segments),
        encoding="mulaw",
        params={"multichannel": "true"},
    )


def window(seconds: float) -> Window:
    entry = next(
        json.loads(line)
        for line in (DATA / "manifest.jsonl").read_text().splitlines()
        if json.loads(line)["audio"] == FILE
    )
    inside = [s for s in entry["segments"] if s[2] <= seconds]
    following = entry["segments"][len(inside) :]
    # Cut in the pause after the last utterance, halfway to the next one.
    end = (inside[-1][2] + following[0][1]) / 2 if following else inside[-1][2]
    full = read_audio(DATA / FILE)
    samples = full.samples[: int(end * full.sample_rate)]
    return Window(Recording(samples, full.sample_rate), inside, " ".join(s[0] for s in inside))


def scrape(base: str) -> dict[str, float]:
    """The server's counters, flattened: ``name{labels}`` -> value."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


class Sampler:
    """Peak RSS of the server process, sampled every 0.25 s on a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._cpu = self.process.cpu_times()
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        cpu = self.process.cpu_times()
        self.cpu_cores = (cpu.user - self._cpu.user + cpu.system - self._cpu.system) / (
            time.monotonic() - self._started
        )

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)


async def run_level(url: str, clip: Window, n: int) -> list[tuple[StreamResult, dict[float, float]]]:
    async def one(i: int) -> tuple[StreamResult, dict[float, float]]:
        await asyncio.sleep(STAGGER * i / n)
        sent_at: dict[float, float] = {}
        result = await stream_file(
            url, clip.recording, realtime=True, sent_at=sent_at, encoding=clip.encoding, params=clip.params
        )
        return result, sent_at

    return await asyncio.gather(*(one(i) for i in range(n)))


def lag_growth(result: StreamResult, sent_at: dict[float, float], reference: list[list[Any]]) -> float:
    """Median final latency of the last third of the utterances minus that of the first."""
    per_utterance, _, _ = utterance_latencies(result, sent_at, reference)
    third = max(len(per_utterance) // 3, 1)
    return statistics.median(per_utterance[-third:]) - statistics.median(per_utterance[:third])


def measure(base: str, pid: int, clip: Window, n: int) -> dict[str, Any]:
    url = base.replace("http", "ws") + "/v1/stream"
    before = scrape(base)
    with Sampler(pid) as sampler:
        runs = asyncio.run(run_level(url, clip, n))
    after = scrape(base)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    finals = [r.final for r, _ in runs]
    complete = all(f is not None for f in finals)
    hypotheses = [f["transcription"] if f else "" for f in finals]
    # Latencies pooled over every stream's utterances.
    finals_s, firsts_s, words_s = [], [], []
    for result, sent_at in runs:
        f, p, w = utterance_latencies(result, sent_at, clip.reference)
        finals_s += f
        firsts_s += p
        words_s += w
    growth = max(lag_growth(r, s, clip.reference) for r, s in runs)
    batches = delta("streaming_batches_total")
    return {
        "streams": n,
        "final_latency_s": pct(finals_s),
        "first_partial_s": pct(firsts_s),
        "first_words_s": pct(words_s),
        "partials_sent": sum(m["type"] == "partial" for r, _ in runs for m in r.messages),
        "partials_decoded": delta('streaming_decodes_total{kind="partial"}'),
        "partials_shed": delta('streaming_partials_dropped_total{reason="shed"}'),
        "finals_decoded": delta('streaming_decodes_total{kind="final"}'),
        # Decodes made cheaper while the workers were behind (less context, a smaller window).
        "lean_decodes": delta("streaming_lean_decodes_total"),
        "mean_batch": delta("streaming_batched_items_total") / batches if batches else 0.0,
        "model_seconds": delta("streaming_model_seconds_total"),
        # What the finals cost (streaming.capacity): model seconds, decodes, utterances done
        # (their last words sent), audio; and the server's estimate at the end of the level.
        "final_model_seconds": delta("streaming_final_model_seconds_total"),
        "utterances": delta("streaming_final_latency_seconds_count"),
        "audio_seconds": delta("streaming_audio_seconds_total"),
        "capacity_estimate": after.get("streaming_capacity_streams"),
        "wer": wer(" ".join([clip.text] * n), " ".join(hypotheses)),
        # Per stream, and what each wrote: a word lost in one stream is a few hundredths of
        # the pooled figure, and was found only by reading the transcripts (docs/benchmarks.md).
        "stream_wer": [round(wer(clip.text, h), 4) for h in hypotheses],
        "transcripts": hypotheses,
        "errors": sum(len(r.errors) for r, _ in runs),
        "server_cpu_cores": sampler.cpu_cores,
        "server_peak_rss_mib": sampler.peak_rss / 2**20,
        "lag_growth_s": growth,
        "kept_up": complete and growth < 0.5,
    }


def capacity(levels: list[dict[str, Any]]) -> int:
    base = levels[0]["wer"]
    good = [
        lv["streams"]
        for lv in levels
        if lv["kept_up"]
        and lv["final_latency_s"]["p95"] < P95_LIMIT
        and lv["wer"] <= max(base * WER_TOLERANCE, base + 1e-9)
    ]
    return max(good, default=0)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report["levels"]
    n = [lv["streams"] for lv in levels]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.plot(n, [lv["final_latency_s"]["p50"] for lv in levels], "o-", label="final latency p50")
    ax.plot(n, [lv["final_latency_s"]["p95"] for lv in levels], "s-", label="final latency p95")
    ax.plot(n, [lv["first_partial_s"]["p50"] for lv in levels], "^--", label="first partial p50")
    ax.axhline(P95_LIMIT, color="grey", linestyle=":", label=f"{P95_LIMIT} s p95 target")
    ax.set_xlabel("concurrent real-time streams")
    ax.set_ylabel("seconds")
    ax.set_xticks(n)
    wer_axis = ax.twinx()
    wer_axis.plot(n, [lv["wer"] for lv in levels], "x:", color="tab:red", label="WER")
    wer_axis.set_ylabel("WER", color="tab:red")
    wer_axis.set_ylim(0, max(0.2, max(lv["wer"] for lv in levels) * 1.2))
    lines = ax.get_legend_handles_labels()
    more = wer_axis.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    ax.set_title(
        f"{report['model']} on {report['machine']}: capacity {report['capacity']} streams", fontsize=9
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="1,2,4,8,12,16")
    parser.add_argument("--seconds", type=float, default=90.0, help="audio per stream")
    parser.add_argument(
        "--call", default=None, help="stream this two-channel call instead (stereo/call_1_8k.flac)"
    )
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--server-args", default="", help="more flags for the server")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "capacity.json")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the curve")
    args = parser.parse_args()
    clip = call_window(args.call) if args.call else window(args.seconds)
    port = free_port()
    flags = ["--model", args.model, "--max-sessions", "256", *shlex.split(args.server_args)]
    server = serve_process(port, *flags, cwd=str(ROOT))
    base = f"http://127.0.0.1:{port}"
    levels: list[dict[str, Any]] = []
    try:
        for n in (int(x) for x in args.levels.split(",")):
            level = measure(base, server.pid, clip, n)
            levels.append(level)
            print(json.dumps({k: v for k, v in level.items() if k != "transcripts"}), flush=True)
            if not level["kept_up"]:
                break
    finally:
        server.terminate()
        server.wait(timeout=60)
    report = {
        **provenance(),
        "model": args.model,
        "audio": args.call or FILE,
        "server_args": " ".join(flags),
        "audio_seconds_per_stream": clip.recording.duration,
        "levels": levels,
        "capacity": capacity(levels),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot is not None:
        plot(report, args.plot)
    print(f"capacity: {report['capacity']} streams (p95 final < {P95_LIMIT} s, WER within 5 %)")


if __name__ == "__main__":
    main()
