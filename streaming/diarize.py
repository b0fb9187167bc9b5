"""Who said it, on one channel: ``speaker_0``, ``speaker_1``... decided online from voiceprints.

Sans-I/O: the session asks which stretches of speech to embed with each decode
(:meth:`Diarizer.spans`), hands back the voiceprints the worker made (:meth:`Diarizer.learn`),
tells how far the audio has come (:meth:`Diarizer.heard`), and passes committed words through
:meth:`Diarizer.take`, which gives them back labelled.

- A **run** is a stretch the VAD heard as speech without a pause; a **turn** is consecutive runs
  of one voice. A run goes on the turn before it when its voiceprint is like the turn's
  (:data:`CHANGE`), or when it is too short to tell (under :data:`MIN_VOICE`); otherwise it
  starts a new turn. A change of speaker with no pause at all is not seen.
- A turn's speaker is decided once and never changed, so a sent segment is never relabelled:
  the most similar speaker at :data:`THRESHOLD` or above, as soon as the turn has
  :data:`MIN_VOICE` of speech; a new speaker once it has :data:`NEW_VOICE` and is like nobody, or
  once the turn is over (the next turn began, or :data:`TURN_WAIT` passed in silence) and is
  clearly like nobody (under :data:`CHANGE`). An ended turn between the two joins the nearest.
- Words wait for their turn's speaker, in order: a new speaker's first words may come a few
  seconds after the commit bound; a known voice's, about a second of speech in.
- Speakers are the sums of their turns' voiceprints, each weighted by its seconds; a turn's share
  is updated as it grows (a final embeds its whole utterance again), never its label.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from streaming.config import MAX_DIARIZED_SPEAKERS
from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.messages import Word
from streaming.voices import Vector, Voiceprint

# The thresholds were chosen on speech that is not in the mono-call set the feature is scored on
# (LJ Speech clips not used there, the JFK, LibriSpeech 1272, OSR Harvard and Austen readers):
# python -m bench.speakers --tune (docs/benchmarks.md).
# Cosine similarity at which a turn joins a speaker: every threshold from 0.70 to 0.78 told
# same-speaker clips from different-speaker clips at 16 kHz, 0.75 to 0.78 at 8 kHz.
THRESHOLD = 0.75
# Below this a run is not the turn before it. In conversations built from those clips and cut
# by the stream's VAD, every change of speaker scored under it against the turn so far (at most
# 0.55 at 16 kHz, 0.64 at 8 kHz), and 0.60 to 0.65 told changes best on average. A missed change
# mislabels a turn, a false one only starts a turn that rejoins its speaker: the higher end.
CHANGE = 0.65
MIN_VOICE = SAMPLE_RATE  # samples of speech a voiceprint needs to decide anything
# ... and a turn like nobody needs to start a speaker while it goes on: a second is enough to
# know a voice heard before, not to be sure it is a new one (1 s voiceprints started spurious
# speakers).
NEW_VOICE = 3 * SAMPLE_RATE
# Silence after a turn's last run that ends the turn (conversational gaps are under a second).
TURN_WAIT = SAMPLE_RATE
# Runs far behind every word still to be labelled are forgotten (the list stays bounded).
KEEP_BEHIND = 60 * SAMPLE_RATE


LABEL = "speaker_"


def label(index: int) -> str:
    return f"{LABEL}{index}"


def index_of(name: str) -> int:
    """The number in a label (``speaker_2`` -> 2), for protocols that number speakers."""
    return int(name.removeprefix(LABEL))


class Clusters:
    """Speakers as the sums of their turns' voiceprints, each weighted by its seconds."""

    def __init__(self, max_speakers: int = MAX_DIARIZED_SPEAKERS) -> None:
        self.max_speakers = max_speakers
        self._sums: list[Vector] = []

    def __len__(self) -> int:
        return len(self._sums)

    def nearest(self, vector: Vector) -> tuple[int, float] | None:
        """The most similar speaker and its cosine similarity, if there is one."""
        if not self._sums:
            return None
        centroids = np.stack([_unit(s) for s in self._sums])
        similarity = centroids @ vector
        best = int(np.argmax(similarity))
        return best, float(similarity[best])

    def start(self, contribution: Vector) -> int | None:
        """A new speaker counting this voiceprint, or None at ``max_speakers`` already."""
        if len(self._sums) >= self.max_speakers:
            return None
        self._sums.append(contribution.copy())
        return len(self._sums) - 1

    def add(self, speaker: int, contribution: Vector) -> None:
        """Count a voiceprint (times its weight) in a speaker, or take it back (negated)."""
        self._sums[speaker] = self._sums[speaker] + contribution


@dataclass
class _Turn:
    sum: Vector  # its runs' voiceprints, each times its seconds
    seconds: float = 0.0
    over: bool = False
    speaker: int | None = None
    counted: Vector | None = None  # what it adds to its speaker's sum


@dataclass
class _Run:
    start: int
    end: int
    print: Voiceprint | None = None
    over: bool = False  # embedded whole: the run had ended when it was embedded
    turn: _Turn | None = None
    print_counted: Voiceprint | None = None  # the voiceprint it adds to its turn's sum
    seconds: float = 0.0  # ... and its seconds


class Diarizer:
    """One mono stream's speakers."""

    def __init__(self, clusters: Clusters) -> None:
        self.clusters = clusters
        self._runs: list[_Run] = []  # in stream order
        self._turn: _Turn | None = None  # the last one: later runs may go on it
        self._held: list[Word] = []  # committed, waiting for their turn's speaker
        self._speaking = False
        self._spoken_until = 0  # where the VAD last heard speech end

    @property
    def held(self) -> int:
        return len(self._held)

    def spans(
        self, speech: Iterable[tuple[int, int]], start: int, end: int, *, whole: bool
    ) -> tuple[tuple[int, int], ...]:
        """What a decode of stream samples ``start`` to ``end`` should embed: its speech runs
        that are on no turn yet, or (``whole``: a final's utterance, over) all of them. A run on
        a turn grows here without being embedded again, so that its words still find it."""
        out = []
        for run_start, run_end in speech:
            lo, hi = max(run_start, start), min(run_end, end)
            if hi <= lo:
                continue
            run = self._run_at(lo, hi)
            if run is not None:
                run.start, run.end = min(run.start, lo), max(run.end, hi)
            if whole or run is None or run.turn is None:
                out.append((lo, hi))
        return tuple(out)

    def learn(self, prints: Sequence[Voiceprint], *, over: bool) -> None:
        """Voiceprints a decode made; ``over``: of runs that had ended (a final's utterance)."""
        for found in prints:
            run = self._run_at(found.start, found.end)
            if run is None:
                run = _Run(found.start, found.end)
                self._runs.append(run)
                self._runs.sort(key=lambda r: r.start)
            run.start, run.end = min(run.start, found.start), max(run.end, found.end)
            if run.print is not None and _length(found) < _length(run.print):
                continue
            run.print, run.over = found, over
            self._place(run)

    def voice(self, *, started: bool, at: int) -> None:
        """The VAD heard speech begin, or end, at stream sample ``at``."""
        self._speaking = started
        if not started:
            self._spoken_until = at

    def heard(self, until: int) -> list[tuple[str, list[Word]]]:
        """The audio has come this far: after :data:`TURN_WAIT` of silence the turn is over.
        Returns the words that decides. (The VAD says what is silence: the runs known here lag
        behind it, by the decodes that embed them.)"""
        turn = self._turn
        if (
            turn is not None
            and not turn.over
            and not self._speaking
            and until - self._spoken_until >= TURN_WAIT
        ):
            self._end(turn)
        return self._release(force=False)

    def take(self, words: Sequence[Word]) -> list[tuple[str, list[Word]]]:
        """Committed words, in order: those whose speaker is decided now, as runs of one
        speaker; the rest are kept until a later voiceprint decides them."""
        self._held += words
        return self._release(force=False)

    def flush(self) -> list[tuple[str, list[Word]]]:
        """Every held word, decided with what is known (the stream is ending)."""
        for run in self._runs:
            if run.turn is None and run.print is not None:
                run.over = True
                self._place(run)
        if self._turn is not None:
            self._end(self._turn)
        return self._release(force=True)

    # ------------------------------------------------------------------ turns

    def _place(self, run: _Run) -> None:
        """Put a run on a turn once its voiceprint can tell which, or update its share."""
        found = run.print
        assert found is not None
        turn = run.turn
        if turn is None:
            if _length(found) < MIN_VOICE and not run.over:
                return  # more of it is coming: wait for a longer voiceprint
            turn = self._turn
            short = _length(found) < MIN_VOICE  # too short to tell: it goes on the turn before
            if turn is None or turn.over or not (short or float(_unit(turn.sum) @ found.vector) >= CHANGE):
                if turn is not None:
                    self._end(turn)
                turn = self._turn = _Turn(np.zeros_like(found.vector))
            run.turn = turn
        elif run.print_counted is not None:
            turn.sum = turn.sum - run.print_counted.vector * run.seconds
            turn.seconds -= run.seconds
        run.seconds, run.print_counted = _length(found) / SAMPLE_RATE, found
        turn.sum = turn.sum + found.vector * run.seconds
        turn.seconds += run.seconds
        self._decide(turn)

    def _end(self, turn: _Turn) -> None:
        turn.over = True
        self._decide(turn)

    def _decide(self, turn: _Turn) -> None:
        """Decide the turn's speaker if it can be, and keep its share in its speaker current."""
        if turn.speaker is None:
            if not turn.over and turn.seconds * SAMPLE_RATE < MIN_VOICE:
                return
            turn.speaker = self._speaker_of(turn)
            return
        if turn.counted is not None:
            self.clusters.add(turn.speaker, -turn.counted)
        turn.counted = turn.sum.copy()
        self.clusters.add(turn.speaker, turn.counted)

    def _speaker_of(self, turn: _Turn) -> int | None:
        """The turn's speaker, counting the turn in it; None: not decided yet."""
        centroid = _unit(turn.sum)
        found = self.clusters.nearest(centroid)
        samples = turn.seconds * SAMPLE_RATE
        if found is None or found[1] < THRESHOLD:
            if not turn.over and samples < NEW_VOICE:
                return None  # like nobody so far: wait for more of it, or for its end
            sure = found is None or samples >= NEW_VOICE or (samples >= MIN_VOICE and found[1] < CHANGE)
            started = self.clusters.start(turn.sum) if sure else None
            if started is not None:
                turn.counted = turn.sum.copy()
                return started
        assert found is not None  # the first speaker always starts
        turn.counted = turn.sum.copy()
        self.clusters.add(found[0], turn.counted)
        return found[0]

    # ------------------------------------------------------------------ words

    def _release(self, *, force: bool) -> list[tuple[str, list[Word]]]:
        out: list[tuple[str, list[Word]]] = []
        while self._held:
            word = self._held[0]
            run = self._nearest((word.start + word.end) // 2)
            speaker = run.turn.speaker if run is not None and run.turn is not None else None
            if speaker is None:
                if not force:
                    break
                # Nothing heard to go by: the last speaker decided, if any.
                speaker = next(
                    (r.turn.speaker for r in reversed(self._runs) if r.turn and r.turn.speaker is not None), 0
                )
            self._held.pop(0)
            name = label(speaker)
            if out and out[-1][0] == name:
                out[-1][1].append(word)
            else:
                out.append((name, [word]))
        if out:
            last = out[-1][1][-1].end
            self._runs = [r for r in self._runs if r.end > last - KEEP_BEHIND]
        return out

    def _run_at(self, start: int, end: int) -> _Run | None:
        """The known run that is this stretch: most of the shorter of the two is shared (the
        VAD's padding makes runs of two utterances touch, and they are not one run)."""
        best, overlap = None, 0
        for run in self._runs:
            shared = min(run.end, end) - max(run.start, start)
            if shared > overlap and 2 * shared >= min(run.end - run.start, end - start):
                best, overlap = run, shared
        return best

    def _nearest(self, at: int) -> _Run | None:
        """The run holding ``at``, or the nearest one (a word aligned into a pause)."""
        if not self._runs:
            return None
        return min(
            self._runs, key=lambda r: 0 if r.start <= at <= r.end else min(abs(at - r.start), abs(at - r.end))
        )


def _length(found: Voiceprint) -> int:
    return found.end - found.start


def _unit(vector: Vector) -> Vector:
    return (vector / max(float(np.linalg.norm(vector)), 1e-9)).astype(np.float32)
