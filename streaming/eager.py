"""Eager finals: an open utterance's final decode, started as soon as a pause begins.

End of speech to final then costs the silence threshold or the decode, whichever is longer,
not both added up. The decode stands for the utterance that the pause will close. If speech
resumes first it no longer does (the track still commits the words it heard before the pause),
and a pause whose eager final was shed under load gets no other: the workers are behind, and
the plain final decodes the utterance once the pause closes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from streaming.engine import Decoded
from streaming.jobs import Job
from streaming.vad import Utterance


@dataclass
class EagerFinal:
    job: Job
    pause: int  # where the pause began (the segmenter's ``silence_start``)
    decoded: Decoded | None = None
    utterance: Utterance | None = None  # set once the pause closed it


class Closed(NamedTuple):
    """An eager final whose pause closed its utterance, with its decode back."""

    utterance: Utterance
    decoded: Decoded
    pause: int
    job: Job


class Eager:
    """One channel's eager final, if any."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.final: EagerFinal | None = None
        self._shed_pause: int | None = None

    def wanted(self, pause: int | None) -> bool:
        """May an eager final start for this pause (None: there is no pause)?"""
        return self.enabled and pause is not None and self.final is None and pause != self._shed_pause

    @property
    def pending(self) -> EagerFinal | None:
        """The eager final of a pause that has not closed the utterance (yet)."""
        final = self.final
        return final if final is not None and final.utterance is None else None

    @property
    def closed(self) -> Utterance | None:
        """The utterance that the eager final's pause closed, while it waits for the decode."""
        return self.final.utterance if self.final is not None else None

    def waits(self) -> bool:
        """Its pause closed the utterance, and its decode is not back yet."""
        return self.final is not None and self.final.utterance is not None and self.final.decoded is None

    def begin(self, job: Job, pause: int) -> None:
        self.final = EagerFinal(job, pause)

    def claims(self, utterance: Utterance) -> bool:
        """Did the pause the pending eager final was decoded for close ``utterance``? Then the
        eager final stands for it."""
        pending = self.pending
        if pending is None or utterance.silence_start != pending.pause:
            return False
        pending.utterance = utterance
        return True

    def drop(self) -> EagerFinal | None:
        """Throw the eager final away (the utterance it stood for, if any, is decoded plainly)."""
        final, self.final = self.final, None
        return final

    def decoded(self, job: Job, decoded: Decoded) -> EagerFinal | None:
        """``job``'s result, kept with the eager final it stands for; None if it was thrown
        away meanwhile (speech resumed)."""
        final = self.final
        if final is None or final.job.ticket != job.ticket:
            return None
        final.decoded = decoded
        return final

    def take(self) -> Closed | None:
        """The eager final whose pause closed the utterance and whose decode is back."""
        final = self.final
        if final is None or final.utterance is None or final.decoded is None:
            return None
        self.final = None
        return Closed(final.utterance, final.decoded, final.pause, final.job)

    def shed(self, job: Job) -> Utterance | None:
        """``job`` (an eager final) was shed or failed: no other for its pause. The utterance
        it stood for, if its pause closed it, is to be decoded plainly."""
        final, self.final = self.final, None
        self._shed_pause = final.pause if final is not None else None
        if final is not None and final.job.ticket == job.ticket:
            return final.utterance
        return None
