"""What a channel's decode results changed (:class:`Outcome`), and the channel's counters
(:class:`TrackStats`): what a :class:`~streaming.track.Track` hands its session."""

from __future__ import annotations

from dataclasses import dataclass, field

from streaming.spoken import Spoken


@dataclass
class Outcome:
    """What a decode result changed: words committed, and the uncommitted rest to show."""

    committed: list[Spoken] = field(default_factory=list)
    partial: list[Spoken] | None = None  # None: nothing new to show
    partial_span: tuple[int, int] = (0, 0)
    # The word committed before these, and its text as this decode ends it: the mark written
    # where its own decode's clip stopped, rewritten by one that heard what follows.
    amended: tuple[Spoken, str] | None = None


@dataclass
class TrackStats:
    eager_used: int = 0
    eager_discarded: int = 0  # speech resumed, or the decode was shed under load
    forced: int = 0  # words committed by the time bound rather than by agreement
    agreed: int = 0
    context_resets: int = 0  # contexts given up: their prefix said the same words over
    repeats_dropped: int = 0  # words that said the context, or their decode, again
    loops: int = 0  # partials that fell into a loop: none of their words was used
    retries: int = 0  # finals decoded again for the speech they left unworded
    skips: int = 0  # finals that passed over speech between their words (then retried)
    lean: int = 0  # decodes made cheaper (less context, a smaller window), the workers being behind
