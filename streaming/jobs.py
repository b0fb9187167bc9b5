"""A decode a session asks for: below both the session, which makes them, and the scheduler,
which runs them (so the scheduler never imports the session)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Literal

from streaming.engine import Clip, Decoded, DecodeOptions
from streaming.voices import Embedder, Voiceprint

JobKind = Literal["final", "partial"]


@dataclass(frozen=True, slots=True)
class Behind:
    """Which decodes have been waiting for the model workers (:meth:`DecodeQueue.behind`), so
    that sessions ask for cheaper ones. ``finals``: every decode carries less context
    (``load_context``), at some cost in accuracy. ``partials``: partials are decoded in the
    smaller encoder window (``load_partial_encoder_window``), which costs no final's words.
    Finals go first, so partials are the first to wait: at 8 streams on 2 cores they waited
    0.7 s at the median, finals 0.1 s."""

    finals: bool = False
    partials: bool = False


NOT_BEHIND = Behind()


@dataclass(frozen=True, slots=True)
class Due:
    """A decode a channel wants now, as its track decides it; the session makes a
    :class:`Job` of it.

    ``final`` decodes a closed utterance (or, ``speculative``, one whose trailing pause has
    begun: an eager final, thrown away if speech resumes). ``partial`` decodes the open
    utterance so far: its words may be committed (agreed, or old enough) and the rest shown.
    An ``urgent`` partial would commit words that reach their time bound: it goes before other
    partials but ``first`` ones and is not shed for its age (finals still go first)."""

    kind: JobKind
    clip: Clip
    start: int  # stream sample of clip.audio[0]
    urgent: bool = False
    speculative: bool = False
    # A partial of an utterance none of whose words are on screen yet: under load, a new
    # utterance's first words go before every other partial.
    first: bool = False
    # A partial of a new utterance decoded beside the previous utterance's final (on another
    # worker): its words are shown, never committed, since they lack that final's context.
    preview: bool = False
    # A partial after one of its channel's partials fell into a loop: decoded as a final is
    # (beam search, temperature fallback). Greedy partials of that speech loop again, and its
    # words waited past their bound for one that did not (a call's "The unit of the book", 2.8 s
    # after its end: docs/benchmarks.md).
    after_loop: bool = False
    # Asked for while the model workers are behind, and cheaper for it (see :class:`Behind`):
    # ``load_context`` of context, or a partial in the smaller encoder window.
    less_context: bool = False
    load_window: bool = False
    # The channel's count of committed words when the clip was cut (None for a preview, which
    # commits nothing): the words committed after it are ones this decode says again.
    cut_at: int | None = None

    @property
    def lean(self) -> bool:
        """Made cheaper because the workers are behind (counted in the track's stats)."""
        return self.less_context or self.load_window

    def ticketed(
        self,
        *,
        ticket: int,
        session_id: str,
        options: DecodeOptions,
        stale_since: float,
        track: int,
        voices: tuple[tuple[int, int], ...] = (),
    ) -> Job:
        """This decode as the session asks for it."""
        wanted = {f.name: getattr(self, f.name) for f in fields(Due)}
        return Job(
            **wanted,
            ticket=ticket,
            session_id=session_id,
            options=options,
            stale_since=stale_since,
            track=track,
            voices=voices,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Job(Due):
    """A decode the session needs: its result comes back through ``receive_result(ticket)``."""

    ticket: int
    session_id: str
    options: DecodeOptions
    # Clock time since which the stream's captions show nothing newer: the last partial sent,
    # or the end of the previous utterance. Under load, the stalest partial is decoded first.
    stale_since: float = 0.0
    track: int = 0  # which channel of a multichannel stream
    # Stream-sample stretches of the clip to embed as voiceprints (a diarized stream's speech
    # whose speaker is not decided yet), embedded by the worker right after the decode.
    voices: tuple[tuple[int, int], ...] = ()

    @property
    def stream_key(self) -> tuple[str, int, bool]:
        """One waiting partial per (session, channel), and one preview: a partial that comes
        after a preview (the final before it is back) must not throw the preview away, which
        may well be decoded first."""
        return (self.session_id, self.track, self.preview)

    @property
    def end(self) -> int:
        return self.start + len(self.clip.audio)

    @property
    def label(self) -> str:
        """What this decode is, in a log line: "eager final", "preview partial", ..."""
        if self.kind == "final":
            return "eager final" if self.speculative else "final"
        kind = "preview" if self.preview else "first" if self.first else "urgent" if self.urgent else ""
        return f"{kind} partial".strip()


def with_voiceprints(jobs: Sequence[Job], results: Sequence[Decoded], embedder: Embedder) -> list[Decoded]:
    """The jobs' results with the voiceprints they asked for (``Job.voices``), all embedded in
    one call."""
    wanted = [(i, lo, hi) for i, job in enumerate(jobs) for lo, hi in job.voices]
    vectors = embedder.embed(
        [jobs[i].clip.audio[lo - jobs[i].start : hi - jobs[i].start] for i, lo, hi in wanted]
    )
    prints: dict[int, list[Voiceprint]] = {}
    for (i, lo, hi), vector in zip(wanted, vectors, strict=True):
        prints.setdefault(i, []).append(Voiceprint(lo, hi, vector))
    return [replace(result, voices=tuple(prints.get(i, ()))) for i, result in enumerate(results)]
