"""One stream's logic as a sans-I/O state machine: frames in, messages and decode jobs out.

The I/O layer (:mod:`streaming.transport`, or a test) feeds :class:`Session` with
:meth:`~Session.receive_bytes`, :meth:`~Session.receive_text`, the results of the decode jobs it
asked for (:meth:`~Session.receive_result`, :meth:`~Session.receive_failure`) and
:meth:`~Session.tick` at :meth:`~Session.next_deadline`; it drains
:meth:`~Session.messages_to_send` and :meth:`~Session.jobs_to_start` after each call, and closes
the socket with :attr:`~Session.close_code` once :attr:`~Session.phase` is ``CLOSED``.

Nothing here touches a socket, a model or the system clock, and nothing is raised into the
I/O layer: a client's error becomes an ``error`` message, the audio already received is still
transcribed into the ``final``, and then the session closes with the error's close code.

Phases: ``OPEN`` (taking audio) -> ``ENDING`` (no more audio; finishing decodes) -> ``CLOSED``.

Each speaker has a :class:`Track`: a mono stream has one, a ``multichannel`` stream one per
channel, each with its own VAD, utterances, prompt context and decodes in flight, so the
channels of a call are transcribed independently and only meet in the ``final``.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

import numpy as np

from streaming import messages
from streaming.audio import Samples, StreamDecoder
from streaming.clock import Clock
from streaming.config import Config, StreamConfig
from streaming.context import PromptContext
from streaming.engine import Decoded, DecodeOptions, keep_spoken_words
from streaming.errors import (
    FrameTooLarge,
    IdleTimeout,
    InternalError,
    Overloaded,
    SessionTooLong,
    ShuttingDown,
    SlowConsumer,
    StreamingError,
    UnexpectedMessage,
)
from streaming.messages import SAMPLE_RATE, Transcript, Word
from streaming.vad import Segmenter, Utterance

logger = logging.getLogger(__name__)

JobKind = Literal["final", "partial"]
# A partial is not worth a decode until the open utterance has grown this much.
MIN_PARTIAL_GROWTH = SAMPLE_RATE // 5


class Phase(Enum):
    OPEN = "open"
    ENDING = "ending"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Job:
    """A decode the session needs: its result comes back through ``receive_result(ticket)``."""

    ticket: int
    kind: JobKind
    session_id: str
    audio: Samples
    options: DecodeOptions
    utterance: int  # which utterance of the stream (partials of a closed one are stale)
    start: int  # stream sample of audio[0]
    # Clock time since which the stream's captions show nothing newer: the last partial sent,
    # or the end of the previous utterance. Under load, the stalest partial is decoded first.
    stale_since: float = 0.0
    track: int = 0  # which channel of a multichannel stream

    @property
    def stream_key(self) -> tuple[str, int]:
        """One waiting partial per (session, channel)."""
        return (self.session_id, self.track)


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """The server-side settings one session runs with (defaults live in :class:`Config`)."""

    model: str
    beam_size: int
    partial_beam_size: int
    partial_interval: float
    condition_on_previous_text: bool
    prompt_chars: int
    max_frame_bytes: int
    max_session_seconds: float
    max_buffered_seconds: float
    idle_timeout: float
    max_unsent_messages: int

    @classmethod
    def from_config(cls, config: Config, model: str) -> SessionSettings:
        return cls(
            model=model,
            beam_size=config.beam_size,
            partial_beam_size=config.partial_beam_size,
            partial_interval=config.partial_interval,
            condition_on_previous_text=config.condition_on_previous_text,
            prompt_chars=config.prompt_chars,
            max_frame_bytes=config.max_frame_bytes,
            max_session_seconds=config.max_session_seconds,
            max_buffered_seconds=config.max_buffered_seconds,
            idle_timeout=config.idle_timeout,
            max_unsent_messages=config.max_unsent_messages,
        )


class Track:
    """One channel's utterances: its VAD, its prompt context, the utterances waiting for the
    model, and the final and partial being decoded. A mono stream has one track; a
    multichannel stream has one per channel, each its own speaker."""

    def __init__(
        self, index: int, speaker: str | None, segmenter: Segmenter, context: PromptContext, now: float
    ) -> None:
        self.index = index
        self.speaker = speaker
        self.segmenter = segmenter
        self.context = context
        self.waiting: deque[tuple[int, Utterance]] = deque()  # closed, not yet decoding
        self.in_flight: tuple[Job, Utterance] | None = None  # the final being decoded
        self.partial: Job | None = None  # the partial being decoded
        self.utterance = 0  # index of the open (or next) utterance
        self.last_partial_at = now
        self.last_partial_size = 0
        self.shown_at = now

    @property
    def busy(self) -> bool:
        """Utterances wait for, or are in, a final decode."""
        return self.in_flight is not None or bool(self.waiting)

    def waiting_samples(self) -> int:
        in_flight = len(self.in_flight[1].audio) if self.in_flight else 0
        return in_flight + sum(len(u.audio) for _, u in self.waiting)

    def clear(self) -> None:
        self.waiting.clear()
        self.in_flight = None
        self.partial = None


class Session:
    """One client's stream."""

    def __init__(
        self,
        *,
        session_id: str,
        stream: StreamConfig,
        settings: SessionSettings,
        new_segmenter: Callable[[], Segmenter],
        clock: Clock,
    ) -> None:
        self.id = session_id
        self.stream = stream
        self.settings = settings
        self.phase = Phase.OPEN
        self.close_code: int | None = None
        self.error: StreamingError | None = None
        self._clock = clock
        self._decoder = StreamDecoder(stream)
        now = clock.now()
        speakers: list[str | None] = list(stream.speaker_labels) if stream.multichannel else [None]
        self._tracks = [
            Track(
                i,
                speaker,
                new_segmenter(),
                PromptContext(enabled=settings.condition_on_previous_text, max_chars=settings.prompt_chars),
                now,
            )
            for i, speaker in enumerate(speakers)
        ]
        self._tickets = itertools.count(1)
        self._outbox: list[messages.ServerMessage] = []
        self._jobs: list[Job] = []
        self._last_activity = now
        self._told_ended = False
        self._transcripts: list[Transcript] = []
        self._model_seconds = 0.0
        self._max_samples = round(settings.max_session_seconds * SAMPLE_RATE)
        self._max_buffered = round(settings.max_buffered_seconds * SAMPLE_RATE)
        self._outbox.append(messages.ready(session_id, self._effective_config()))

    # ------------------------------------------------------------------ inputs

    def receive_bytes(self, data: bytes) -> None:
        """A binary frame: raw audio in the declared encoding."""
        if self._check_frame(len(data)):
            self._take_audio(data)

    def receive_text(self, text: str) -> None:
        """A text frame: a JSON control or base64 audio message."""
        if not self._check_frame(len(text)):
            return
        try:
            message = messages.parse_client_text(text)
        except StreamingError as exc:
            self._fail(exc)
            return
        match message:
            case messages.AudioData(data):
                self._take_audio(data)
            case messages.KeepAlive():
                if self._expect_open("keepalive"):
                    self._last_activity = self._clock.now()
            case messages.Finalize():
                if self._expect_open("finalize"):
                    self._last_activity = self._clock.now()
                    for track in self._tracks:
                        self._close_utterance(track, track.segmenter.cut())
                    self._dispatch()
            case messages.EndOfStream():
                if self._expect_open("end"):
                    self._finish(None)

    def receive_result(self, ticket: int, decoded: Decoded) -> None:
        """The result of the job with this ticket."""
        for track in self._tracks:
            if track.partial is not None and track.partial.ticket == ticket:
                self._on_partial(track, track.partial, decoded)
                track.partial = None
            elif track.in_flight is not None and track.in_flight[0].ticket == ticket:
                _, utterance = track.in_flight
                track.in_flight = None
                self._last_activity = max(self._last_activity, self._clock.now())
                self._on_final(track, utterance, decoded)
        self._dispatch()

    def receive_failure(self, ticket: int, reason: str) -> None:
        """The job with this ticket could not be decoded (model error): a partial is skipped; a
        final's utterance is lost, and the stream ends with ``internal_error`` once the rest of
        what it received is transcribed."""
        for track in self._tracks:
            if track.partial is not None and track.partial.ticket == ticket:
                track.partial = None  # partials are best effort
                self._dispatch()
                return
        failed = next((t for t in self._tracks if t.in_flight and t.in_flight[0].ticket == ticket), None)
        if failed is None:
            return
        failed.in_flight = None
        # This utterance is lost; the stream ends, but what else was received is still
        # transcribed (a poisoned item fails alone: the scheduler retries batches one by one).
        if not isinstance(self.error, InternalError):
            self._fail(InternalError(f"transcription failed ({reason}); the stream cannot go on"))
        self._dispatch()

    def tick(self) -> None:
        """Let time pass: idle timeout and partial cadence. Call it at :meth:`next_deadline`."""
        now = self._clock.now()
        if self.phase is Phase.OPEN and now >= self._idle_deadline():
            self._finish(
                IdleTimeout(
                    f"no audio for {self.settings.idle_timeout:g} s; send "
                    '{"type":"keepalive"} to keep an idle stream open'
                )
            )
        self._dispatch()

    def going_away(self) -> None:
        """The server is shutting down: take no more audio, transcribe what was received, send
        the final and close with 1001."""
        if self.phase is Phase.OPEN:
            self._finish(
                ShuttingDown(
                    "the server is shutting down; everything received is transcribed, reconnect to go on"
                )
            )

    def slow_consumer(self, limit: int) -> None:
        """More than ``limit`` messages wait for a client that does not read: take no more
        audio, transcribe what was received, queue the final and close with 1008."""
        if self.phase is Phase.OPEN:
            self._finish(
                SlowConsumer(
                    f"more than {limit} messages are waiting for this client to read them; read "
                    "the socket while streaming"
                )
            )

    def client_gone(self) -> None:
        """The client disconnected: nothing more can be sent, so stop all work."""
        for track in self._tracks:
            track.clear()
        self._jobs.clear()
        self.phase = Phase.CLOSED
        self.close_code = self.close_code or 1001

    # ------------------------------------------------------------------ outputs

    def messages_to_send(self) -> list[messages.ServerMessage]:
        out, self._outbox = self._outbox, []
        return out

    def jobs_to_start(self) -> list[Job]:
        out, self._jobs = self._jobs, []
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (None: only input can change things)."""
        if self.phase is not Phase.OPEN:
            return None
        deadline = self._idle_deadline()
        for track in self._tracks:
            if self._partial_ready(track):
                deadline = min(deadline, track.last_partial_at + self.settings.partial_interval)
        return deadline

    def _partial_ready(self, track: Track) -> bool:
        """A partial would be worth a decode now, cadence aside: there is new audio to hear."""
        if self.phase is not Phase.OPEN or not self._wants_partials() or track.partial is not None:
            return False
        if track.segmenter.trailing_silence:
            # A pause adds no words, and the utterance's final may be due any moment: keep the
            # worker free for it.
            return False
        growing = track.segmenter.open_samples
        return growing > 0 and growing >= track.last_partial_size + MIN_PARTIAL_GROWTH

    def _idle_deadline(self) -> float:
        """Idle means the client sent nothing while we had nothing to do: while a backlog is
        transcribed the transport holds reads back, so that silence is ours, not the client's."""
        if any(track.busy for track in self._tracks):
            return self._clock.now() + self.settings.idle_timeout
        return self._last_activity + self.settings.idle_timeout

    @property
    def waiting_seconds(self) -> float:
        """Closed utterances not yet transcribed, in seconds of audio (over every channel)."""
        return sum(track.waiting_samples() for track in self._tracks) / SAMPLE_RATE

    # ------------------------------------------------------------------ audio

    def _take_audio(self, data: bytes) -> None:
        if not self._expect_open("audio"):
            return
        self._last_activity = self._clock.now()
        try:
            samples = self._decoder.decode(data)
        except StreamingError as exc:
            self._fail(exc)
            return
        room = self._max_samples - max(track.segmenter.received for track in self._tracks)
        too_long = len(samples) > room
        if too_long:
            samples = samples[: max(room, 0)]
        self._push(samples)
        if too_long:
            self._finish(
                SessionTooLong(
                    f"the stream reached the limit of {self.settings.max_session_seconds:g} s of "
                    "audio; everything before it is transcribed, open a new stream to go on"
                )
            )
        elif self._buffered_samples() > self._max_buffered:
            self._finish(
                Overloaded(
                    f"more than {self.settings.max_buffered_seconds:g} s of audio is waiting for the "
                    "model, which cannot keep up; everything received is transcribed, retry later "
                    "or send audio no faster than real time"
                )
            )
        self._dispatch()

    def _push(self, samples: Samples) -> None:
        """Decoded audio: one column per channel of a multichannel stream, else mono."""
        if samples.ndim == 1:
            self._push_track(self._tracks[0], samples)
            return
        for track in self._tracks:
            self._push_track(track, np.ascontiguousarray(samples[:, track.index]))

    def _push_track(self, track: Track, samples: Samples) -> None:
        for utterance in track.segmenter.push(samples):
            self._close_utterance(track, utterance)

    def _close_utterance(self, track: Track, utterance: Utterance | None) -> None:
        if utterance is None:
            return
        track.waiting.append((track.utterance, utterance))
        track.utterance += 1
        track.last_partial_size = 0
        track.shown_at = self._clock.now()

    def _buffered_samples(self) -> int:
        return sum(t.waiting_samples() + t.segmenter.open_samples for t in self._tracks)

    # ------------------------------------------------------------------ decoding

    def _options(self, track: Track, *, partial: bool) -> DecodeOptions:
        return DecodeOptions(
            language=self.stream.language,
            task=self.stream.task,
            beam_size=self.settings.partial_beam_size if partial else self.settings.beam_size,
            word_timestamps=not partial,
            prompt=track.context.prompt(self.stream.prompt),
            hotwords=self.stream.hotwords or None,
            temperature_fallback=not partial,
        )

    def _dispatch(self) -> None:
        """Ask for the decodes that are due: per channel, finals one at a time and in order
        (each is prompted with the text of the one before), partials when the cadence says so."""
        if self.phase is Phase.CLOSED:
            return
        for track in self._tracks:
            if track.in_flight is None and track.waiting:
                index, utterance = track.waiting.popleft()
                track.in_flight = (self._job(track, "final", utterance, index), utterance)
            self._maybe_partial(track)
        self._maybe_final()

    def _job(self, track: Track, kind: JobKind, utterance: Utterance, index: int) -> Job:
        job = Job(
            ticket=next(self._tickets),
            kind=kind,
            session_id=self.id,
            audio=utterance.audio,
            options=self._options(track, partial=kind == "partial"),
            utterance=index,
            start=utterance.start,
            stale_since=track.shown_at,
            track=track.index,
        )
        self._jobs.append(job)
        return job

    def _wants_partials(self) -> bool:
        return self.stream.interim_results and self.settings.partial_interval > 0

    def _maybe_partial(self, track: Track) -> None:
        now = self._clock.now()
        if not self._partial_ready(track) or now < track.last_partial_at + self.settings.partial_interval:
            return
        current = track.segmenter.current()
        assert current is not None
        track.last_partial_at = now
        track.last_partial_size = len(current.audio)
        track.partial = self._job(track, "partial", current, track.utterance)

    def _on_partial(self, track: Track, job: Job, decoded: Decoded) -> None:
        if self.phase is not Phase.OPEN or job.utterance != track.utterance or not decoded.text:
            return  # the utterance closed meanwhile: its segment supersedes this
        track.shown_at = self._clock.now()
        transcript = Transcript(
            start=job.start, end=job.start + len(job.audio), text=decoded.text, speaker=track.speaker
        )
        self._outbox.append(messages.partial(transcript))

    def _on_final(self, track: Track, utterance: Utterance, decoded: Decoded) -> None:
        self._model_seconds += decoded.seconds
        speech = [
            ((lo - utterance.start) / SAMPLE_RATE, (hi - utterance.start) / SAMPLE_RATE)
            for lo, hi in utterance.speech
        ]
        kept = keep_spoken_words(decoded.words, speech)
        text = "".join(w.text for w in kept).strip() if decoded.words else decoded.text
        if not text:
            return
        words = tuple(
            Word(
                text=w.text.strip(),
                start=utterance.start + round(w.start * SAMPLE_RATE),
                end=utterance.start + round(w.end * SAMPLE_RATE),
                probability=w.probability,
            )
            for w in kept
        )
        transcript = Transcript(
            start=utterance.start, end=utterance.end, text=text, words=words, speaker=track.speaker
        )
        self._transcripts.append(transcript)
        track.context.add(text)
        self._outbox.append(messages.segment(transcript))

    # ------------------------------------------------------------------ ending

    def _expect_open(self, what: str) -> bool:
        if self.phase is Phase.OPEN:
            return True
        # Report once, and only when the client ended the stream itself: after a server-side
        # end (a limit, a shutdown) frames already in flight are expected and dropped quietly.
        if self.phase is Phase.ENDING and self.error is None and not self._told_ended:
            self._told_ended = True
            self._report(
                UnexpectedMessage(
                    f"{what} after the end of the stream; no more messages are taken, "
                    "the final transcript follows"
                )
            )
        return False

    def _check_frame(self, size: int) -> bool:
        if size <= self.settings.max_frame_bytes:
            return True
        self._fail(
            FrameTooLarge(
                f"a frame of {size} bytes exceeds the limit of {self.settings.max_frame_bytes}; "
                "send audio in smaller frames (100 ms each is typical)"
            )
        )
        return False

    def _report(self, exc: StreamingError) -> None:
        """Tell the client; the first error decides the close code."""
        logger.info("session %s: %s: %s", self.id, exc.code, exc.message)
        self._outbox.append(messages.error(exc))
        if self.error is None:
            self.error = exc

    def _fail(self, exc: StreamingError) -> None:
        if self.phase is Phase.OPEN:
            self._finish(exc)
        elif self.phase is Phase.ENDING:
            self._report(exc)

    def _finish(self, exc: StreamingError | None) -> None:
        """No more audio: transcribe what was received, then send the final and close."""
        if exc is not None:
            self._report(exc)
        self.phase = Phase.ENDING
        self._push(self._decoder.flush())
        for track in self._tracks:
            self._close_utterance(track, track.segmenter.cut())
        self._dispatch()

    def _maybe_final(self) -> None:
        if self.phase is Phase.ENDING and not any(track.busy for track in self._tracks):
            self._close_now()

    def _close_now(self) -> None:
        self._outbox.append(messages.final(self._transcripts, round(self._model_seconds * 1000)))
        self.phase = Phase.CLOSED
        self.close_code = self.error.close_code if self.error else 1000
        self._jobs.clear()
        for track in self._tracks:
            track.partial = None

    def _effective_config(self) -> dict[str, Any]:
        stream, settings = self.stream, self.settings
        return {
            "model": settings.model,
            "encoding": stream.encoding,
            "sample_rate": stream.sample_rate,
            "channels": stream.channels,
            "multichannel": stream.multichannel,
            "speakers": list(stream.speaker_labels) if stream.multichannel else [],
            "language": stream.language or "auto",
            "task": stream.task,
            "interim_results": stream.interim_results and settings.partial_interval > 0,
            "limits": {
                "max_frame_bytes": settings.max_frame_bytes,
                "max_session_seconds": settings.max_session_seconds,
                "max_buffered_seconds": settings.max_buffered_seconds,
                "idle_timeout": settings.idle_timeout,
                "max_unsent_messages": settings.max_unsent_messages,
            },
        }
