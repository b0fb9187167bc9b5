"""One speaker's channel of a stream: what it heard, what it committed, and what to decode next.

The VAD utterance is not the unit of everything here. Three things are kept apart:

- **what is decoded**: the channel's recent audio, from the first committed word that still
  fits the encoder window (the window is paid for whatever it holds) to the end of the new
  speech, with the committed text of that stretch forced on the decoder as a prefix. A
  sentence cut at a pause goes on with its own case and punctuation, and only the words after
  the prefix come back.
- **what is committed**: a word becomes final when two consecutive decodes of the growing
  utterance agree on it (LocalAgreement), when it is older than the commit bound allows, or
  when its utterance ends, whichever comes first. A committed word is never revised.
- **what is shown**: the session groups committed words into sentences (:class:`Piece`, with
  ``continues``); a partial shows the words not committed yet.

A track runs one decode at a time: each depends on what the one before committed. Closed
utterances go first, then an eager final (when a pause begins; kept if the pause ends the
utterance, thrown away if speech resumes), then a partial of the open utterance.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from streaming import agreement
from streaming.audio import History, Samples
from streaming.clips import Clips
from streaming.committed import Committed
from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.eager import Eager
from streaming.engine import Decoded
from streaming.events import SpeechStarted, SpeechStopped, UtteranceDone
from streaming.jobs import NOT_BEHIND, Behind, Due, Job
from streaming.outcome import Outcome, TrackStats
from streaming.preview import Preview
from streaming.settings import TrackSettings
from streaming.spoken import Spoken, looped, skipped, spoken_words
from streaming.unheard import SKIP_RETRY_CONTEXT, SKIPPED_SPEECH, UNHEARD_TAIL, Unheard
from streaming.vad import Segmenter, Utterance

# A partial is not worth a decode until the open utterance has grown this much.
MIN_PARTIAL_GROWTH = SAMPLE_RATE // 5
WINDOW_SAMPLES = 512  # one VAD window
# Seconds an eager final is allowed for its decode (beam search and alignment: 0.3 to 0.5 s
# at one stream on 2 cores), when the partial it displaced commits what it would bring late.
EAGER_DECODE = 0.5


class Track:
    """One channel's decoding state (see the module's docstring)."""

    def __init__(
        self, index: int, speaker: str | None, segmenter: Segmenter, settings: TrackSettings, now: float
    ) -> None:
        self.index = index
        self.speaker = speaker
        self.segmenter = segmenter
        self.settings = settings
        self.history = History()
        self.committed = Committed()
        # Speech of closed utterances that no committed word covers yet: a decode that ends at
        # a pause can miss the last words (Whisper drops words at a clip's abrupt end), so the
        # audio is not given up; the next decode, prefixed with what was committed, hears it.
        self.unheard = Unheard()
        self.waiting: deque[Utterance] = deque()  # closed, not yet decoding
        self.in_flight: tuple[Job, Utterance | None] | None = None
        # The partial in flight when a pause's eager final took its place (see on_displaced).
        self.displaced: Job | None = None
        self.previews = Preview()
        self._shown_until = -1  # the end of the last clip whose decode's words were shown
        self._shown_from = -1  # the open utterance whose words are on screen (or committed)
        self.hypothesis: list[Spoken] = []  # the last partial's uncommitted words
        # The open utterance a partial of which fell into a loop (see Due.after_loop).
        self._looped_in: int | None = None
        self.eager = Eager(enabled=settings.eager_finals)
        self.last_partial_at = now
        self.last_partial_size = 0
        self.shown_at = now
        self.stats = TrackStats()
        self.clips = Clips(self.history, self.committed, self.unheard, segmenter, settings, stats=self.stats)
        # Voice activity and finished utterances, for protocols that report them.
        self.events: list[SpeechStarted | SpeechStopped | UtteranceDone] = []
        self._speech_from = 0  # where the open speech began

    # ------------------------------------------------------------------ audio

    def push(self, samples: Samples, now: float) -> None:
        self.history.append(samples)
        closed = self.segmenter.push(samples)
        self._take_voice()
        for utterance in closed:
            self.close(utterance, now)
        pending = self.eager.pending
        if pending is not None and self.segmenter.silence_start != pending.pause:
            self._drop_eager()  # speech resumed: the pause did not end the utterance
        self._trim()

    def cut(self, now: float) -> None:
        """Close the open utterance now (finalize, end of stream). Cut in a pause, it is the
        utterance an eager final was decoded for: nothing was said since."""
        pause = self.segmenter.silence_start
        utterance = self.segmenter.cut()
        self._take_voice()
        pending = self.eager.pending
        if utterance is not None and pending is not None and pause == pending.pause:
            utterance = replace(utterance, silence_start=pause)
        self.close(utterance, now)

    def close(self, utterance: Utterance | None, now: float) -> None:
        if utterance is None:
            if self.segmenter.open_start is None and self.eager.pending is not None:
                self._drop_eager()  # the utterance was too short to keep
            return
        self.last_partial_size = 0
        self.shown_at = now
        if self.eager.claims(utterance):
            return
        if self.eager.pending is not None:
            self._drop_eager()
        self.waiting.append(utterance)

    def _take_voice(self) -> None:
        for change in self.segmenter.take_voice():
            if change.started:
                self._speech_from = change.at
                self.events.append(SpeechStarted(self.index, change.at))
                continue
            self.events.append(SpeechStopped(self.index, self._speech_from, change.at, change.kept))

    def take_events(self) -> list[SpeechStarted | SpeechStopped | UtteranceDone]:
        out, self.events = self.events, []
        return out

    @property
    def busy(self) -> bool:
        """A decode is in flight, or closed utterances wait for theirs."""
        return self.in_flight is not None or bool(self.waiting) or self.eager.closed is not None

    def closed(self) -> list[Utterance]:
        """The closed utterances not transcribed yet: waiting, and the one whose final decodes."""
        if self.in_flight is not None and self.in_flight[1] is not None:
            return [*self.waiting, self.in_flight[1]]
        return list(self.waiting)

    def waiting_samples(self) -> int:
        return sum(len(u.audio) for u in self.closed())

    def buffered_samples(self) -> int:
        return self.waiting_samples() + self.segmenter.open_samples

    def clear(self) -> None:
        self.waiting.clear()
        self.in_flight = None
        self.displaced = None
        self.previews.lost()
        self.eager.drop()

    # ------------------------------------------------------------------ what to decode

    def next_job(self, now: float, *, partials: bool, behind: Behind = NOT_BEHIND) -> Due | None:
        """The decode due now, if any. While the model workers are ``behind`` on finals it
        carries at most ``load_context`` of context, which costs the decoder less (the prefix is
        forced token by token); behind on partials, a partial fits the smaller ``load_partial``
        window, which costs the encoder less: so that more streams keep up."""
        due = self._next_job(now, partials=partials, behind=behind)
        if due is None:
            return None
        if due.lean:
            self.stats.lean += 1
        return replace(due, cut_at=self.committed.count)

    def _context(self, behind: Behind) -> int:
        return self.settings.load_context if behind.finals else self.settings.max_context

    def _less_context(self, behind: Behind) -> bool:
        return behind.finals and self.settings.load_context < self.settings.max_context

    def _next_job(self, now: float, *, partials: bool, behind: Behind) -> Due | None:
        if self._eager_may_supersede():
            # The pause's eager final hears everything the partial in flight does, and more:
            # its result is what matters now, and the partial's only shows words meanwhile.
            self.displaced = self._flight_job()
            self.in_flight = None
        if self.in_flight is not None:
            return None
        if self.eager.waits():
            return None  # its eager final is still in the scheduler's hands
        if self.waiting:
            closed = self.waiting[0]
            retry = closed.start == self.unheard.skip_retry
            context = SKIP_RETRY_CONTEXT if retry else self._context(behind)
            clip, start = self.clips.clip(closed.end, closed.start, self.settings.max_decode, context)
            return Due("final", clip, start, less_context=not retry and self._less_context(behind))
        segmenter = self.segmenter
        open_start = segmenter.open_start
        if open_start is None:
            return None
        if segmenter.silence_start is not None:
            # A pause adds no words, and may end the utterance: decode its final now.
            if self.eager.wanted(segmenter.silence_start) and self._uncommitted_speech():
                clip, start = self.clips.clip(
                    segmenter.received, open_start, self.settings.max_decode, self._context(behind)
                )
                return Due("final", clip, start, speculative=True, less_context=self._less_context(behind))
            return None
        if not partials or segmenter.open_samples < self.last_partial_size + MIN_PARTIAL_GROWTH:
            return None
        if now < self.last_partial_at + self.settings.partial_interval:
            return None
        load_window = behind.partials and self.settings.load_partial < self.settings.max_partial
        clip, start = self.clips.clip(
            segmenter.received, open_start, self.clips.partial_length(load_window), self._context(behind)
        )
        # First while none of the utterance's words is on screen, even with a preview on the
        # way: that may wait behind finals, or show nothing (docs/benchmarks.md).
        first = open_start != self._shown_from
        return Due(
            "partial",
            clip,
            start,
            urgent=self._urgent(),
            first=first,
            less_context=self._less_context(behind),
            load_window=load_window,
            after_loop=self._looped_in == open_start,
        )

    @property
    def preview(self) -> Job | None:
        """The display-only partial in flight beside a final (see :mod:`streaming.preview`)."""
        return self.previews.job

    def preview_job(self, *, partials: bool) -> Due | None:
        """A preview of speech that the final in flight does not hear, if one is due: a new
        utterance's when the VAD opens it, as a first partial would (a short "Now," before a
        pause never grows by a partial interval); speech that resumed inside an utterance
        opens nothing, and waits for the interval, so that its preview hears a word."""
        if not partials:
            return None
        interval = round(self.settings.partial_interval * SAMPLE_RATE)
        return self.previews.due(
            self._flight_job(),
            self.segmenter,
            self.history,
            new_samples=MIN_PARTIAL_GROWTH,
            resumed_samples=max(MIN_PARTIAL_GROWTH, interval),
        )

    def _flight_job(self) -> Job | None:
        return self.in_flight[0] if self.in_flight is not None else None

    def on_preview(self, decoded: Decoded) -> Outcome:
        """A preview came back: its words are shown (not committed) after the last partial's
        that come before its speech, while no decode with the context has shown that speech,
        even if its utterance closed meanwhile (until its final, they are all a viewer has)."""
        speech = (*(r for u in self.closed() for r in u.speech), *self.segmenter.speech_ranges())
        found = self.previews.words(decoded, speech, shown_until=self._shown_until)
        if found is None:
            return Outcome()
        open_start = self.segmenter.open_start
        if open_start is not None and found.origin >= open_start:
            self._shown_from = open_start
        before = [w for w in self.hypothesis if w.end <= found.origin]
        return Outcome(
            partial=[*before, *found.words],
            partial_span=(self.committed.until if before else found.origin, found.end),
        )

    def on_displaced(self, decoded: Decoded) -> Outcome:
        """The partial an eager final displaced came back: its words are shown, unless a decode
        that heard more has shown that speech (under load the eager final is shed, and this
        decode was all there was: docs/benchmarks.md). Those its bound allows no later decode
        for are committed: left to the eager final, they waited for its decode too, 2 s in all
        ("so that in", replayed: docs/benchmarks.md). The eager final started from the same
        committed words, and what it says of these again is dropped as said (:meth:`_heard`)."""
        job, self.displaced = self.displaced, None
        if job is None or job.end <= self._shown_until or looped(decoded):
            return Outcome()
        speech = self.segmenter.speech_ranges()
        words = self._spoken(job, decoded, speech)
        if not words:
            return Outcome()
        self._shown_until = job.end
        limit = job.end - self.settings.force_age
        if self.in_flight is not None and self.in_flight[0].speculative:
            # The eager final commits these words too, better heard (beam search, up to the
            # pause): only those it would bring past their bound are committed here.
            eager = self.in_flight[0]
            limit = min(limit, eager.end - round((self.settings.commit_bound - EAGER_DECODE) * SAMPLE_RATE))
        return self._settle(job, decoded, words, speech, agreed=0, limit=limit)

    def on_displaced_lost(self, ticket: int) -> None:
        """The job with ``ticket`` was not decoded: if it is the displaced partial, nothing is
        lost with it (it only showed words)."""
        if self.displaced is not None and self.displaced.ticket == ticket:
            self.displaced = None

    def _eager_may_supersede(self) -> bool:
        flight = self.in_flight
        return (
            flight is not None
            and flight[0].kind == "partial"
            and self.eager.wanted(self.segmenter.silence_start)
            and not self.waiting
            and self.segmenter.silence_start is not None
            and flight[0].end <= self.segmenter.silence_start + WINDOW_SAMPLES
        )

    def partial_due_at(self, *, partials: bool) -> float | None:
        """When the cadence next allows a partial (None: none is wanted now)."""
        segmenter = self.segmenter
        if not partials or self.in_flight is not None or self.waiting or segmenter.open_start is None:
            return None
        if segmenter.silence_start is not None:
            return None
        if segmenter.open_samples < self.last_partial_size + MIN_PARTIAL_GROWTH:
            return None
        return self.last_partial_at + self.settings.partial_interval

    def started(self, job: Job, now: float) -> None:
        if not job.preview:
            self.committed.decoding(prefixed=bool(job.clip.prefix))
        if job.preview:
            self.previews.started(job, self._flight_job(), self.segmenter)
        elif job.speculative:
            self.eager.begin(job, self.segmenter.silence_start or 0)
            self.in_flight = (job, None)
        elif job.kind == "final":
            self.in_flight = (job, self.waiting.popleft())
        else:
            self.in_flight = (job, None)
            self.last_partial_at = now
            self.last_partial_size = self.segmenter.open_samples

    def _uncommitted_speech(self) -> bool:
        return self.clips.uncommitted_from(self.segmenter.speech_ranges()) is not None

    def _urgent(self) -> bool:
        """Would this partial commit a word that reaches its bound? Then it must not be shed."""
        received = self.segmenter.received
        if self.hypothesis:
            return received - self.hypothesis[0].end >= self.settings.force_age
        first = self.clips.uncommitted_from(self.segmenter.speech_ranges())
        bound = round(self.settings.commit_bound * SAMPLE_RATE)
        return first is not None and received - first >= bound

    # ------------------------------------------------------------------ results

    def on_result(self, job: Job, decoded: Decoded) -> Outcome:
        """A decode of this track came back."""
        assert self.in_flight is not None
        assert self.in_flight[0].ticket == job.ticket
        _, utterance = self.in_flight
        self.in_flight = None
        if job.kind == "partial" and looped(decoded):
            # Nothing changes: the words shown stand, and a preview of that speech still shows.
            # The utterance's later partials search as a final does (Due.after_loop).
            self._looped_in = self.segmenter.open_start
            self.stats.loops += 1
            return Outcome()
        self._shown_until = max(self._shown_until, job.end)
        if job.speculative:
            eager = self.eager.decoded(job, decoded)
            if eager is None:
                # Speech resumed: the pause did not end the utterance. The decode still heard
                # the words before the pause (beam search, the whole window): those ending
                # clear of the clip's end are committed. A "pause" this short can be a stop
                # inside a word, which the clip then cuts, so the last ones wait for the next
                # decode. Without this, commas in a long sentence (an eager final at each one,
                # in flight in place of a partial) held its words well past the bound.
                if self.waiting or self.segmenter.open_start is None:
                    return Outcome()  # the utterance closed meanwhile: its final says it
                return self._on_partial(job, decoded, settled_until=job.end - agreement.AGREE_AGE)
            if eager.utterance is None:
                return Outcome()  # the pause goes on: held until it closes the utterance
            return self.take_eager()
        if job.kind == "final":
            assert utterance is not None
            return self._final(self._spoken(job, decoded, utterance.speech), decoded, utterance)
        if self.waiting or self.segmenter.open_start is None:
            return Outcome()  # the utterance closed meanwhile: its final supersedes this
        return self._on_partial(job, decoded)

    def take_eager(self) -> Outcome:
        """Commit an eager final whose pause closed the utterance."""
        eager = self.eager.take()
        if eager is None:
            return Outcome()
        utterance = eager.utterance
        words = self._spoken(eager.job, eager.decoded, utterance.speech)
        heard_until = words[-1].end if words else self.committed.until
        if eager.pause - heard_until > UNHEARD_TAIL:
            # Decoded from the first silent window, the clip ends abruptly, and Whisper can drop
            # the last words of such a clip: decode the closed utterance, trailing pause and all.
            self.stats.eager_discarded += 1
            self.waiting.appendleft(utterance)
            return Outcome()
        self.stats.eager_used += 1
        return self._final(words, eager.decoded, utterance)

    def _final(self, words: list[Spoken], decoded: Decoded, utterance: Utterance) -> Outcome:
        """Commit a final's words: its utterance is decoded."""
        words, resumed = self.unheard.before_skip(words, utterance, self.committed.until)
        if resumed is not None:
            self.stats.skips += 1
        committed, amended = self._commit(words, decoded)
        if not self._after_final(utterance, resumed=resumed):
            self.events.append(UtteranceDone(self.index, utterance.start, utterance.end))
        return Outcome(committed=committed, amended=amended)

    def on_lost(self, job: Job) -> Utterance | None:
        """The decode failed or was shed. A lost eager final falls back to a plain final; a
        lost final's utterance is returned (it cannot be transcribed)."""
        if self.in_flight is None or self.in_flight[0].ticket != job.ticket:
            return None
        _, utterance = self.in_flight
        self.in_flight = None
        if job.speculative:
            self.stats.eager_discarded += 1
            closed = self.eager.shed(job)
            if closed is not None:
                self.waiting.appendleft(closed)
            return None
        return utterance if job.kind == "final" else None

    def _on_partial(self, job: Job, decoded: Decoded, *, settled_until: int | None = None) -> Outcome:
        """Commit the words two decodes agree on, and those old enough that the bound is near
        (all ending by ``settled_until`` when it is given: a decode whose clip ends in a pause)."""
        speech = self.segmenter.speech_ranges()
        words = self._spoken(job, decoded, speech)
        limit = job.end - self.settings.force_age if settled_until is None else settled_until
        agreed = agreement.agreed(self.hypothesis, words, job.end)
        return self._settle(job, decoded, words, speech, agreed=agreed, limit=limit)

    def _settle(
        self,
        job: Job,
        decoded: Decoded,
        words: list[Spoken],
        speech: tuple[tuple[int, int], ...],
        *,
        agreed: int,
        limit: int,
    ) -> Outcome:
        """Commit the first ``agreed`` of a partial's ``words`` and those after them ending by
        ``limit`` (:func:`~streaming.agreement.settled`), none after ``speech`` (the open
        utterance's, as the words were kept against) the partial passed over; the rest are
        shown."""
        # A partial can pass over speech as a final can (Unheard.before_skip): committed, the
        # words after it would give that speech up for good. They wait for a later decode, or
        # for the final, which retries what it passes over.
        heard = skipped(words, speech, SKIPPED_SPEECH, since=self.committed.until)
        agreed = min(agreed, heard)
        settled = min(agreement.settled(words, agreed, limit), heard)
        self.stats.agreed += agreed
        self.stats.forced += settled - agreed
        committed, amended = self._commit(words[:settled], decoded)
        self.hypothesis = words[settled:]
        if (committed or self.hypothesis) and self.segmenter.open_start is not None:
            self._shown_from = self.segmenter.open_start
        return Outcome(
            committed=committed,
            partial=self.hypothesis,
            partial_span=(self.committed.until, job.end),
            amended=amended,
        )

    def _spoken(self, job: Job, decoded: Decoded, speech: tuple[tuple[int, int], ...]) -> list[Spoken]:
        return self._heard(spoken_words(decoded, job.start), speech, cut_at=job.cut_at)

    def _heard(
        self, words: list[Spoken], speech: tuple[tuple[int, int], ...], *, cut_at: int | None
    ) -> list[Spoken]:
        """The new words (:meth:`Committed.new_words`): over speech not yet covered, pending or
        the open utterance's ``speech``."""
        kept, repeats = self.committed.new_words(words, (*self.unheard.ranges, *speech), cut_at=cut_at)
        self.stats.repeats_dropped += repeats
        return kept

    def _commit(
        self, words: list[Spoken], decoded: Decoded
    ) -> tuple[list[Spoken], tuple[Spoken, str] | None]:
        """Commit ``words`` (see :meth:`Committed.add`): the speech they cover is heard."""
        out = self.committed.add(words, decoded)
        self.unheard.covered(self.committed.until)
        return out

    def _after_final(self, utterance: Utterance, *, resumed: int | None) -> bool:
        """An utterance is decoded: its speech past the last committed word stays pending, and
        is retried at once where no later decode would hear it, or where the final skipped
        speech (``resumed``: where its words went on after it). True: a retry is queued."""
        self.unheard.add(utterance.speech, self.committed.until)  # a retry's speech is there
        self.hypothesis = []
        # Before the trim, which gives up the speech that the next decodes cannot reach.
        retries = self.unheard.retries(
            utterance,
            self.history,
            resumed=resumed,
            next_clip=self._next_clip(),
            max_decode=self.settings.max_decode,
        )
        if retries:
            self.stats.retries += 1
            self.waiting.extendleft(reversed(retries))
        self._trim()
        return bool(retries)

    def _next_clip(self) -> tuple[int, int] | None:
        """The span of the next decode's new speech, if any is known."""
        if self.waiting:
            return self.waiting[0].start, self.waiting[0].end
        if self.segmenter.open_start is not None:
            return self.segmenter.open_start, self.segmenter.received
        return None

    def _trim(self) -> None:
        """Keep the audio a decode may still need (:meth:`Clips.trim`)."""
        # A final decoding may leave speech unworded, to retry from this audio.
        closed = self.eager.closed
        self.clips.trim([*self.closed(), *([closed] if closed is not None else [])])

    def _drop_eager(self) -> None:
        dropped = self.eager.drop()
        if dropped is not None:
            self.stats.eager_discarded += 1
            if dropped.utterance is not None:
                self.waiting.appendleft(dropped.utterance)
