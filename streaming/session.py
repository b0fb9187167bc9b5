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
from collections.abc import Callable, Sequence
from enum import Enum

import numpy as np

from streaming import events, messages
from streaming.audio import Samples, StreamDecoder
from streaming.captions import Captions
from streaming.clock import Clock
from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.config import StreamConfig
from streaming.diarize import Clusters, Diarizer
from streaming.engine import ALIGNMENT_LAG, Decoded, has_word
from streaming.errors import (
    FrameTooLarge,
    IdleTimeout,
    InternalError,
    InvalidParameter,
    Overloaded,
    SessionTooLong,
    ShuttingDown,
    SlowConsumer,
    StreamingError,
    UnexpectedMessage,
)
from streaming.jobs import NOT_BEHIND, Behind, Due, Job
from streaming.messages import Transcript, Word
from streaming.outcome import Outcome, TrackStats
from streaming.settings import SessionSettings
from streaming.timing import Observer, Timing
from streaming.track import Track
from streaming.vad import Segmenter

logger = logging.getLogger(__name__)


class Phase(Enum):
    OPEN = "open"
    ENDING = "ending"
    CLOSED = "closed"


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
        observer: Observer | None = None,
        behind: Callable[[], Behind] | None = None,
    ) -> None:
        self.id = session_id
        # Are the model workers behind? Then decodes are made cheaper (see :class:`Behind`).
        self._behind = behind or (lambda: NOT_BEHIND)
        self.stream = stream
        self.settings = settings
        self.phase = Phase.OPEN
        self.close_code: int | None = None
        self.error: StreamingError | None = None
        self._clock = clock
        self._decoder = StreamDecoder(stream)
        now = clock.now()
        speakers: list[str | None] = list(stream.speaker_labels) if stream.multichannel else [None]
        track_settings = settings.track_settings()
        self._tracks = [
            Track(i, speaker, new_segmenter(), track_settings, now) for i, speaker in enumerate(speakers)
        ]
        self._captions = Captions(settings, len(speakers))
        self._word_lag = round(ALIGNMENT_LAG.get(settings.model, 0.0) * SAMPLE_RATE)
        # diarize=true (one channel): speakers from voiceprints, a sentence cutter per speaker.
        self._diarizer = Diarizer(Clusters(max_speakers=stream.max_speakers)) if stream.diarize else None
        self._tickets = itertools.count(1)
        self._outbox: list[events.Event] = []
        self._jobs: list[Job] = []
        self._last_activity = now
        self._told_ended = False
        self._flushing = False  # a finalize waits for its decodes
        self._model_seconds = 0.0
        self._received_bytes = 0
        self._timing = Timing(observer)  # latencies and audio received, for the metrics
        self._max_samples = round(settings.max_session_seconds * SAMPLE_RATE)
        self._max_buffered = round(settings.max_buffered_seconds * SAMPLE_RATE)
        self._outbox.append(events.Ready(session_id, settings.effective(stream)))

    # ------------------------------------------------------------------ inputs

    # Our protocol's frames (receive_bytes, receive_text) are parsed here; other protocols'
    # adapters (Twilio, /predict) parse their own and drive the core beneath them:
    # accept_frame, receive_audio, keep_alive, finalize, end and fail.

    def receive_bytes(self, data: bytes) -> None:
        """A binary frame: raw audio in the declared encoding."""
        if self.accept_frame(len(data)):
            self.receive_audio(data)

    def receive_text(self, text: str) -> None:
        """A text frame: a JSON control or base64 audio message."""
        if not self.accept_frame(len(text)):
            return
        try:
            message = messages.parse_client_text(text)
        except StreamingError as exc:
            self.fail(exc)
            return
        match message:
            case messages.AudioData(data):
                self.receive_audio(data)
            case messages.KeepAlive():
                self.keep_alive()
            case messages.Finalize():
                self.finalize()
            case messages.EndOfStream():
                self.end()

    def accept_frame(self, size: int) -> bool:
        """Is a frame of ``size`` bytes within the limit? If not, the stream ends with
        ``frame_too_large`` (everything before it is still transcribed)."""
        if size <= self.settings.max_frame_bytes:
            return True
        self.fail(FrameTooLarge.of(size, self.settings.max_frame_bytes))
        return False

    def receive_audio(self, data: bytes) -> None:
        """Audio in the stream's declared encoding, however it was framed."""
        if self._expect_open("audio"):
            self._take_audio(data)

    def keep_alive(self) -> None:
        """Hold an idle stream open."""
        if self._expect_open("keepalive"):
            self._last_activity = self._clock.now()

    def finalize(self) -> None:
        """Close every open utterance now and transcribe it; the stream stays open."""
        if self._expect_open("finalize"):
            self._last_activity = self._clock.now()
            self._flushing = True
            self._cut_all()

    def end(self) -> None:
        """No more audio: transcribe what was received, then the ``final``."""
        if self._expect_open("end"):
            self._finish(None)

    def fail(self, exc: StreamingError) -> None:
        """End the stream with this error (an adapter's malformed event, a limit): what was
        received is still transcribed, and the error's close code closes it."""
        if self.phase is Phase.OPEN:
            self._finish(exc)
        elif self.phase is Phase.ENDING:
            self._report(exc)

    def reconfigure(self, stream: StreamConfig) -> None:
        """Change the stream's settings mid-stream (another protocol's session update): its
        language, prompt and hotwords apply to the decodes that follow; its audio encoding and
        rate only before any audio came. Raises :class:`InvalidParameter` otherwise (the stream
        goes on as it was)."""
        old = self.stream
        if (stream.channels, stream.multichannel) != (old.channels, old.multichannel):
            raise InvalidParameter("the number of channels cannot change once a stream is open")
        if (stream.encoding, stream.sample_rate) != (old.encoding, old.sample_rate):
            if self._received_samples() or self._decoder.pending_bytes:
                raise InvalidParameter("the audio format cannot change once audio was received")
            self._decoder = StreamDecoder(stream)
        self.stream = stream

    def receive_result(self, ticket: int, decoded: Decoded) -> None:
        """The result of the job with this ticket."""
        for track in self._tracks:
            if track.preview is not None and track.preview.ticket == ticket:
                self._emit(track, track.on_preview(decoded))
            if track.displaced is not None and track.displaced.ticket == ticket:
                self._emit(track, track.on_displaced(decoded))
            if track.in_flight is not None and track.in_flight[0].ticket == ticket:
                job = track.in_flight[0]
                if job.kind == "final":
                    self._model_seconds += decoded.seconds
                    self._last_activity = max(self._last_activity, self._clock.now())
                if self._diarizer is not None:
                    # An eager final's pause may yet give way to more speech: its runs may go on.
                    self._diarizer.learn(decoded.voices, over=job.kind == "final" and not job.speculative)
                self._emit(track, track.on_result(job, decoded))
        self._dispatch()

    def receive_failure(self, ticket: int, reason: str, error: StreamingError | None = None) -> None:
        """The job with this ticket was not decoded: shed or superseded under load, refused
        (``error``: the scheduler's own, such as :class:`Overloaded`), or a model error. A
        partial is skipped, and an eager final falls back to a plain one; a final's utterance is
        lost, and the stream ends with ``error`` (``internal_error`` when there is none) once the
        rest of what it received is transcribed."""
        for track in self._tracks:
            if track.preview is not None and track.preview.ticket == ticket:
                track.previews.lost()
            track.on_displaced_lost(ticket)
            if track.in_flight is None or track.in_flight[0].ticket != ticket:
                continue
            if track.on_lost(track.in_flight[0]) is None:
                continue
            failure = error or InternalError(f"transcription failed ({reason}); the stream cannot go on")
            if not isinstance(self.error, type(failure)):
                # A poisoned item fails alone (the scheduler retries batches one by one): what
                # else was received is still transcribed.
                self.fail(failure)
        self._dispatch()

    def tick(self) -> None:
        """Let time pass: idle timeout and partial cadence. Call it at :meth:`next_deadline`."""
        now = self._clock.now()
        if self.phase is Phase.OPEN and now >= self._idle_deadline():
            self._finish(IdleTimeout.after(self.settings.idle_timeout))
        self._dispatch()

    def going_away(self) -> None:
        """The server is shutting down: take no more audio, transcribe what was received, send
        the final and close with 1001."""
        if self.phase is Phase.OPEN:
            self._finish(ShuttingDown.stream())

    def slow_consumer(self, limit: int) -> None:
        """More than ``limit`` messages wait for a client that does not read: take no more
        audio, transcribe what was received, queue the final and close with 1008."""
        if self.phase is Phase.OPEN:
            self._finish(SlowConsumer.unread(limit))

    def client_gone(self) -> None:
        """The client disconnected: nothing more can be sent, so stop all work."""
        for track in self._tracks:
            track.clear()
        self._jobs.clear()
        self.phase = Phase.CLOSED
        self.close_code = self.close_code or 1001

    # ------------------------------------------------------------------ outputs

    def events_to_send(self) -> list[events.Event]:
        """What happened since the last call, for a protocol adapter to render."""
        out, self._outbox = self._outbox, []
        self._timing.saw(out, self._clock.now())
        return out

    def messages_to_send(self) -> list[messages.ServerMessage]:
        """What happened since the last call, as our protocol's messages."""
        rendered = (events.to_message(event) for event in self.events_to_send())
        return [message for message in rendered if message is not None]

    def jobs_to_start(self) -> list[Job]:
        out, self._jobs = self._jobs, []
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (None: only input can change things)."""
        if self.phase is not Phase.OPEN:
            return None
        deadline = self._idle_deadline()
        for track in self._tracks:
            due = track.partial_due_at(partials=self._wants_partials())
            if due is not None:
                deadline = min(deadline, due)
        return deadline

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

    @property
    def received_samples(self) -> int:
        """Stream time taken in so far (the longest channel's), in 16 kHz samples."""
        return self._received_samples()

    @property
    def received_seconds(self) -> float:
        """Stream time taken in so far (the longest channel's), in seconds."""
        return self._received_samples() / SAMPLE_RATE

    @property
    def received_bytes(self) -> int:
        """Audio taken in so far, in bytes of the stream's declared encoding, as sent."""
        return self._received_bytes

    @property
    def track_stats(self) -> list[TrackStats]:
        """Per channel: commits by agreement and by the time bound, eager finals used and not."""
        return [track.stats for track in self._tracks]

    # ------------------------------------------------------------------ audio

    def _take_audio(self, data: bytes) -> None:
        self._last_activity = self._clock.now()
        self._received_bytes += len(data)
        try:
            samples = self._decoder.decode(data)
        except StreamingError as exc:
            self.fail(exc)
            return
        room = self._max_samples - self._received_samples()
        too_long = len(samples) > room
        if too_long:
            samples = samples[: max(room, 0)]
        self._push(samples)
        self._timing.arrived(self._received_samples(), self._clock.now())
        if too_long:
            self._finish(SessionTooLong.at(self.settings.max_session_seconds))
        elif self._buffered_samples() > self._max_buffered:
            self._finish(Overloaded.buffered(self.settings.max_buffered_seconds))
        self._dispatch()

    def _push(self, samples: Samples) -> None:
        """Decoded audio: one column per channel of a multichannel stream, else mono."""
        now = self._clock.now()
        for track in self._tracks:
            column = samples if samples.ndim == 1 else np.ascontiguousarray(samples[:, track.index])
            track.push(column, now)
            self._take_events(track)
            self._emit(track, track.take_eager())
        if self._diarizer is not None:  # a pause long enough ends a speaker's turn
            self._send(self._tracks[0], self._diarizer.heard(self._tracks[0].segmenter.received))

    def _received_samples(self) -> int:
        return max(track.segmenter.received for track in self._tracks)

    def _buffered_samples(self) -> int:
        return sum(track.buffered_samples() for track in self._tracks)

    # ------------------------------------------------------------------ decoding

    def _dispatch(self) -> None:
        """Ask for the decodes that are due: per channel one at a time, each prefixed with
        what the one before committed."""
        if self.phase is Phase.CLOSED:
            return
        now = self._clock.now()
        partials = self.phase is Phase.OPEN and self._wants_partials()
        behind = self._behind()
        for track in self._tracks:
            preview = track.preview_job(partials=partials)
            if preview is not None:
                self._start(track, preview, now)
            due = track.next_job(now, partials=partials, behind=behind)
            if due is not None:
                self._start(track, due, now)
        self._maybe_final()

    def _start(self, track: Track, due: Due, now: float) -> None:
        voices: tuple[tuple[int, int], ...] = ()
        final = due.kind == "final"
        if self._diarizer is not None and not due.preview:  # a preview's words are never committed
            utterance = track.waiting[0] if final and not due.speculative else None
            speech = utterance.speech if utterance else track.segmenter.speech_ranges()
            # A final's runs are over (an eager one's pause has begun): all of them are embedded.
            voices = self._diarizer.spans(speech, due.start, due.start + len(due.clip.audio), whole=final)
        job = due.ticketed(
            ticket=next(self._tickets),
            session_id=self.id,
            options=self.settings.decode_options(
                self.stream,
                prompt=self._captions.prompt(track.index, self.stream.prompt),
                partial=not final,
                load_window=due.load_window,
                after_loop=due.after_loop,
            ),
            stale_since=track.shown_at,
            track=track.index,
            voices=voices,
        )
        track.started(job, now)
        self._jobs.append(job)

    def _wants_partials(self) -> bool:
        return self.stream.interim_results and self.settings.partial_interval > 0

    def _emit(self, track: Track, outcome: Outcome) -> None:
        """Send what a decode committed, as sentence pieces, and the uncommitted rest."""
        if outcome.amended is not None:
            spoken, text = outcome.amended
            self._captions.amend(track.index, spoken.raw, text)
        if outcome.committed:
            words = [w.placed(track.history, self._word_lag) for w in outcome.committed]
            if self._diarizer is None:
                self._send(track, [(track.speaker, words)])
            else:
                self._send(track, self._diarizer.take(words))
            track.shown_at = self._clock.now()
        text = "".join(w.raw for w in outcome.partial or ()).strip()
        # A lone mark ("." at the end of audio) is no caption: it would linger under the line.
        if has_word(text) and self.phase is Phase.OPEN and self._wants_partials():
            start, end = outcome.partial_span
            self._outbox.append(
                events.Partial(
                    track.index, Transcript(start=start, end=end, text=text, speaker=track.speaker)
                )
            )
            track.shown_at = self._clock.now()
        self._take_events(track)  # an utterance done comes after its words

    def _take_events(self, track: Track) -> None:
        """The channel's voice activity and utterances done, for the client (and the diarizer,
        whose turns end in silence)."""
        found = track.take_events()
        if self._diarizer is not None:
            for event in found:
                if isinstance(event, events.SpeechStarted | events.SpeechStopped):
                    self._diarizer.voice(started=isinstance(event, events.SpeechStarted), at=event.at)
        self._outbox += found

    def _send(self, track: Track, runs: Sequence[tuple[str | None, list[Word]]]) -> None:
        """Committed words, in runs of one speaker each, as that speaker's sentence pieces."""
        self._outbox += self._captions.segments(track.index, runs)

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

    def _report(self, exc: StreamingError) -> None:
        """Tell the client; the first error decides the close code."""
        logger.info("session %s: %s: %s", self.id, exc.code, exc.message)
        self._outbox.append(events.Failed(exc))
        if self.error is None:
            self.error = exc

    def _finish(self, exc: StreamingError | None) -> None:
        """No more audio: transcribe what was received, then send the final and close."""
        if exc is not None:
            self._report(exc)
        self.phase = Phase.ENDING
        self._push(self._decoder.flush())
        self._cut_all()

    def _cut_all(self) -> None:
        """Close every open utterance now and decode it."""
        now = self._clock.now()
        for track in self._tracks:
            track.cut(now)
            self._take_events(track)
            self._emit(track, track.take_eager())
        self._dispatch()

    def _maybe_final(self) -> None:
        if any(track.busy for track in self._tracks):
            return
        if self._flushing:
            self._flushing = False
            self._outbox.append(events.Flushed())
        if self.phase is Phase.ENDING:
            self._close_now()

    def _close_now(self) -> None:
        if self._diarizer is not None:
            self._send(self._tracks[0], self._diarizer.flush())
        sentences = self._captions.sentences()
        self._outbox.append(events.Final(sentences, round(self._model_seconds * 1000)))
        self.phase = Phase.CLOSED
        self.close_code = self.error.close_code if self.error else 1000
        self._jobs.clear()
