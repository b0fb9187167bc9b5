"""Stream an audio file to the service and print what comes back.

    python -m clients.stream recording.mp3                      # as fast as possible
    python -m clients.stream call.wav --realtime --out final.json
    python -m clients.stream call.flac --encoding mulaw         # send G.711 mu-law (or alaw)

Any format and rate PyAV can decode (wav, flac, mp3, ogg, ...; 8 kHz and stereo included) is
sent at its own rate and channel count; the server resamples and downmixes. The partial
hypothesis is shown on one updating line, finished segments are printed as they come, the
final JSON is written with ``--out`` (captions with ``--srt`` and ``--vtt``), and the exit
status is 1 on a server error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from streaming import subtitles
from streaming.config import StreamConfig

CHUNK_SECONDS = 0.1


@dataclass
class Recording:
    """Interleaved float32 samples at the file's own rate."""

    samples: npt.NDArray[np.float32]  # shape (frames, channels)
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def read_audio(path: str | Path) -> Recording:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        channels = stream.codec_context.channels
        resampler = av.AudioResampler(format="flt", layout=stream.layout.name, rate=rate)
        parts = [
            np.asarray(out.to_ndarray(), dtype=np.float32).reshape(-1, channels)
            for frame in container.decode(stream)
            for out in resampler.resample(frame)
        ]
        parts += [
            np.asarray(out.to_ndarray(), dtype=np.float32).reshape(-1, channels)
            for out in resampler.resample(None)
        ]
    return Recording(np.concatenate(parts), rate)


def encode(samples: npt.NDArray[np.float32], encoding: str) -> bytes:
    flat = np.clip(samples.reshape(-1), -1.0, 1.0)
    if encoding == "pcm_s16le":
        return (flat * 32767.0).astype("<i2").tobytes()
    if encoding == "pcm_f32le":
        return flat.astype("<f4").tobytes()
    if encoding == "mulaw":
        from streaming.audio import encode_mulaw

        return encode_mulaw(flat.astype(np.float32))
    if encoding == "alaw":
        from streaming.audio import encode_alaw

        return encode_alaw(flat.astype(np.float32))
    raise ValueError(f"unknown encoding {encoding!r}")


@dataclass
class StreamResult:
    """Everything the server said, with arrival times (seconds since the first audio sent)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    close_code: int | None = None
    resumes: int = 0  # connections that dropped and were resumed
    resent_bytes: int = 0  # audio sent again after resumes (the server had not received it)
    restarts: int = 0  # starts refused by a stopping replica, and tried again (RETRY_ELSEWHERE)

    @property
    def final(self) -> dict[str, Any] | None:
        return next((m for m in self.messages if m["type"] == "final"), None)

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "error"]


async def chunks(
    recording: Recording, encoding: str, *, realtime: bool, speed: float = 1.0
) -> AsyncIterator[tuple[float, bytes]]:
    """``(stream time of the chunk's end, bytes)``, paced when ``realtime``."""
    step = max(int(recording.sample_rate * CHUNK_SECONDS), 1)
    started = time.monotonic()
    for offset in range(0, len(recording.samples), step):
        block = recording.samples[offset : offset + step]
        end = (offset + len(block)) / recording.sample_rate
        if realtime:
            delay = started + end / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        yield end, encode(block, encoding)


class Unacked:
    """Audio sent but not yet acknowledged by the server, to send again after a resume.
    Bounded: ``room()`` waits while it holds ``limit`` bytes (None: it keeps nothing, for a
    stream that is not resumable)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.sent = 0  # bytes sent so far: where the next chunk starts
        self._chunks: deque[tuple[int, bytes]] = deque()  # (offset, bytes)
        self._size = 0
        self._freed = asyncio.Event()

    def add(self, data: bytes) -> None:
        if self.limit is not None:
            self._chunks.append((self.sent, data))
            self._size += len(data)
        self.sent += len(data)

    def acked(self, upto: int) -> None:
        """The server holds every byte before ``upto``."""
        while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= upto:
            self._size -= len(self._chunks.popleft()[1])
        self._freed.set()

    def since(self, upto: int) -> list[bytes]:
        """What to send again when the server holds the bytes before ``upto``."""
        self.acked(upto)
        return [data[max(upto - offset, 0) :] for offset, data in self._chunks if offset + len(data) > upto]

    async def room(self) -> None:
        while self.limit is not None and self._size >= self.limit:
            self._freed.clear()
            await self._freed.wait()


# Closes after which the stream is resumed: the connection failed (no close frame, a proxy or
# server restarting). Any other close was the server's decision, and its error says why.
RESUMABLE_CLOSES = frozenset({1001, 1005, 1006, 1011, 1012, 1014})
RESUME_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0)  # about the server's grace
# Refusals before `ready` that another replica behind the same address would not give: the
# one the balancer chose is stopping and has not left its rotation yet. Such a stream is
# started again; nothing was taken, and a resumable stream still holds all its audio.
RETRY_ELSEWHERE = frozenset({"shutting_down"})
RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0)  # a balancer's health check notices within this


async def stream_file(
    url: str,
    recording: Recording,
    *,
    encoding: str = "pcm_s16le",
    realtime: bool = False,
    speed: float = 1.0,
    params: dict[str, str] | None = None,
    on_message: Callable[[dict[str, Any]], None] | None = None,
    sent_at: dict[float, float] | None = None,
    resume: bool = False,
    max_unacked_seconds: float = 60.0,
) -> StreamResult:
    """Stream ``recording``, return every message. ``sent_at`` records wall time per chunk end.

    With ``resume``, the stream is resumable: audio is kept until the server acknowledges it
    (at most ``max_unacked_seconds`` of it: sending waits beyond that), and a connection that
    drops is resumed, with what the server did not get sent again, so the stream goes on as one.
    """
    query = {
        "encoding": encoding,
        "sample_rate": str(recording.sample_rate),
        "channels": str(recording.channels),
        **(params or {}),
    }
    if resume:
        query["resumable"] = "true"
    frame_bytes = recording.channels * StreamConfig(encoding=encoding).bytes_per_sample  # type: ignore[arg-type]
    # Without resume nothing is acknowledged, and nothing is kept.
    limit = max(int(max_unacked_seconds * recording.sample_rate), 1) * frame_bytes if resume else None
    source = chunks(recording, encoding, realtime=realtime, speed=speed)
    stream = _Stream(source, Unacked(limit), on_message=on_message, sent_at=sent_at)
    return await stream.run(url, query, resume)


class _Stream:
    """One stream over one connection, or over several when it resumes."""

    def __init__(
        self,
        source: AsyncIterator[tuple[float, bytes]],
        unacked: Unacked,
        *,
        on_message: Callable[[dict[str, Any]], None] | None,
        sent_at: dict[float, float] | None,
    ) -> None:
        self.result = StreamResult()
        self.unacked = unacked
        self._on_message = on_message
        self._sent_at = sent_at
        self._source = source
        self._started = time.monotonic()
        self._ended = False  # the source is exhausted
        self._end_sent = False
        self._session: tuple[str, str] | None = None  # (session id, resume token)
        self._segments = 0
        self._ready = asyncio.Event()
        self._resend: list[bytes] = []
        self._restarted = False  # a refused start was tried again: the audio so far goes first

    async def run(self, url: str, query: dict[str, str], resume: bool) -> StreamResult:
        import websockets

        target = f"{url}?{urllib.parse.urlencode(query)}"
        delays = iter(RESUME_DELAYS)
        retries = iter(RETRY_DELAYS)
        while True:
            self._ready.clear()
            try:
                code = await self._connection(target)
            except (OSError, websockets.InvalidHandshake, TimeoutError):
                if self._session is None:
                    raise
                code = 1006  # the server or the network is not back yet
            self.result.close_code = code
            if resume and self._refused_elsewhere():
                retry = next(retries, None)
                if retry is not None:
                    self.result.messages.pop()  # that replica's refusal: another takes the stream
                    self.result.arrivals.pop()
                    self._restarted = True
                    self.result.restarts += 1
                    await asyncio.sleep(retry)
                    continue
            if self._ready.is_set():
                delays = iter(RESUME_DELAYS)  # it was up: the next drop starts the backoff afresh
            finished = self.result.final is not None or bool(self.result.errors)
            if finished or not resume or self._session is None or code not in RESUMABLE_CLOSES:
                return self.result
            delay = next(delays, None)
            if delay is None:
                return self.result
            await asyncio.sleep(delay)
            session_id, token = self._session
            resumed = {"resume": session_id, "resume_token": token, "segments": str(self._segments)}
            target = f"{url}?{urllib.parse.urlencode(resumed)}"

    def _refused_elsewhere(self) -> bool:
        """Was this connection refused before `ready`, for a reason of that replica's own?"""
        if self._ready.is_set() or self._session is not None or not self.result.messages:
            return False
        last = self.result.messages[-1]
        return last["type"] == "error" and last["code"] in RETRY_ELSEWHERE

    async def _connection(self, target: str) -> int:
        """One connection, until it closes; its close code (1006 if it just dropped)."""
        import websockets

        async with websockets.connect(
            # No keepalive pings: while the server slows a faster-than-real-time sender through TCP
            # backpressure, pings wait in the same pipe and would time out.
            target,
            max_size=None,
            open_timeout=30,
            ping_interval=None,
        ) as ws:
            receiver = asyncio.create_task(self._receive(ws))
            with contextlib.suppress(websockets.ConnectionClosed):
                await self._send(ws, receiver)
            await receiver
            return ws.close_code if ws.close_code is not None else 1006

    async def _receive(self, ws: Any) -> None:
        import websockets

        try:
            async for raw in ws:
                message = json.loads(raw)
                kind = message["type"]
                if kind == "ack":
                    self.unacked.acked(message["audio_bytes"])
                    continue
                if kind == "ready":
                    self._ready_for(message)
                    if "resumed" in message:  # the stream goes on: its first ready is recorded
                        if self._on_message is not None:
                            self._on_message(message)
                        continue
                elif kind == "segment":
                    self._segments += 1
                self.result.messages.append(message)
                self.result.arrivals.append(time.monotonic() - self._started)
                if self._on_message is not None:
                    self._on_message(message)
        except websockets.ConnectionClosedError:
            pass  # the close code tells what happened

    def _ready_for(self, message: dict[str, Any]) -> None:
        if "resume_token" in message:
            self._session = (message["session_id"], message["resume_token"])
        resumed = message.get("resumed")
        if resumed is not None:
            self.result.resumes += 1
            self._end_sent = resumed["ended"]
            # An ended stream takes no more audio: it had all of it before the end.
            self._resend = [] if self._end_sent else self.unacked.since(resumed["audio_bytes"])
            self.result.resent_bytes += sum(map(len, self._resend))
        else:  # a new stream: everything sent to a replica that refused it goes again
            self._resend = self.unacked.since(0) if self._restarted else []
        self._ready.set()

    async def _send(self, ws: Any, receiver: asyncio.Task[None]) -> None:
        if self._session is not None or self._restarted:  # first what the server did not get
            ready = asyncio.ensure_future(self._ready.wait())
            await asyncio.wait((ready, receiver), return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if receiver.done():
                return
            for data in self._resend:
                await ws.send(data)
        while not self._ended and not receiver.done():
            if self._end_sent:
                return
            await self.unacked.room()
            item = await anext(self._source, None)
            if item is None:
                self._ended = True
                break
            end, data = item
            self.unacked.add(data)
            await ws.send(data)
            if self._sent_at is not None:
                self._sent_at[end] = time.monotonic() - self._started
        if self._ended and not self._end_sent and not receiver.done():
            self._end_sent = True
            await ws.send(json.dumps({"type": "end"}))


class Printer:
    """Shows the partial on one updating line and prints finished segments."""

    def __init__(self, out: TextIO, *, tty: bool) -> None:
        self._out = out
        self._tty = tty
        self._partial_shown = False

    def __call__(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "ready" and "resumed" in message:
            self._clear()
            at = message["resumed"]["time"]
            self._out.write(f"(the connection dropped; resumed at {at:.2f} s, nothing lost)\n")
        elif kind == "partial" and self._tty:
            segment = message["segment"]
            who = f"{segment['speaker']}: " if segment.get("speaker") else ""
            self._out.write("\r\033[K\033[2m" + who + segment["text"][-150:] + "\033[0m")
            self._partial_shown = True
        elif kind == "segment":
            self._clear()
            s = message["segment"]
            who = f"{s['speaker']}: " if s.get("speaker") else ""
            self._out.write(f"[{s['start']:8.2f} - {s['end']:8.2f}] {who}{s['text']}\n")
        elif kind == "error":
            self._clear()
            self._out.write(f"error: {message['code']}: {message['message']}\n")
        self._out.flush()

    def _clear(self) -> None:
        if self._partial_shown:
            self._out.write("\r\033[K")
            self._partial_shown = False


def query_of(args: argparse.Namespace) -> dict[str, str]:
    """The stream's query parameters, from the command line's flags."""
    params = {
        k: v
        for k, v in {
            "language": args.language,
            "task": args.task,
            "prompt": args.prompt,
            "hotwords": args.hotwords,
        }.items()
        if v is not None
    }
    if args.no_interim:
        params["interim_results"] = "false"
    if args.multichannel:
        params["multichannel"] = "true"
    if args.speakers:
        params["speakers"] = args.speakers
    if args.diarize:
        params["diarize"] = "true"
    return params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.stream", description=__doc__.split("\n")[0])
    parser.add_argument("file", help="audio file to stream (wav, flac, mp3, ogg, ...)")
    parser.add_argument("--url", default="ws://127.0.0.1:8000/v1/stream")
    parser.add_argument(
        "--encoding", default="pcm_s16le", choices=("pcm_s16le", "pcm_f32le", "mulaw", "alaw")
    )
    parser.add_argument("--realtime", action="store_true", help="pace the audio in real time")
    parser.add_argument("--language", default=None)
    parser.add_argument("--task", default=None, choices=("transcribe", "translate"))
    parser.add_argument("--prompt", default=None)
    parser.add_argument("--hotwords", default=None)
    parser.add_argument("--no-interim", action="store_true", help="ask for no partial results")
    parser.add_argument(
        "--multichannel", action="store_true", help="one speaker per channel (call recordings), not a downmix"
    )
    parser.add_argument("--speakers", default=None, help="names of the channels' speakers: agent,customer")
    parser.add_argument(
        "--diarize", action="store_true", help="label the speakers of one channel (speaker_0, speaker_1, ...)"
    )
    parser.add_argument(
        "--no-resume",
        action="store_true",
        help="do not resume a dropped connection (by default the stream is resumable: audio is "
        "kept until the server acknowledges it, and a dropped connection picks up where it was)",
    )
    parser.add_argument("--out", type=Path, help="write the final JSON here")
    parser.add_argument("--srt", type=Path, help="write the captions as SubRip here")
    parser.add_argument("--vtt", type=Path, help="write the captions as WebVTT here")
    args = parser.parse_args(argv)

    params = query_of(args)
    try:
        recording = read_audio(args.file)
    except Exception as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    printer = Printer(sys.stdout, tty=sys.stdout.isatty())
    try:
        result = asyncio.run(
            stream_file(
                args.url,
                recording,
                encoding=args.encoding,
                realtime=args.realtime,
                params=params,
                on_message=printer,
                resume=not args.no_resume,
            )
        )
    except OSError as exc:
        print(f"error: cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 2
    final = result.final
    if final is not None:
        segments = final["response"]["segments"]
        if args.srt:
            args.srt.write_text(subtitles.to_srt(segments))
        if args.vtt:
            args.vtt.write_text(subtitles.to_vtt(segments))
        text = json.dumps({k: v for k, v in final.items() if k != "type"}, indent=2, ensure_ascii=False)
        if args.out:
            args.out.write_text(text + "\n")
        elif sys.stdout.isatty():
            # A person reads the segments above; the full JSON is for programs (--out, or a pipe).
            print(f"\n{final['transcription']}\n(write the full JSON with --out FILE)")
        else:
            print(text)
    if result.errors or final is None:
        print(f"server closed the stream with code {result.close_code}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
