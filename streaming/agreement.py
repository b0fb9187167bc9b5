"""Which of a partial's words are final: the commit rule inside a growing utterance.

A partial decodes the open utterance so far; its newest words are the least sure, heard with
little after them. A word is committed when the partial before agreed on it and it lies far
enough behind the clip's end (LocalAgreement, with an age), or when it is so old that waiting
for the next partial would break the commit bound. Pure functions of the words and sample
positions: the track keeps the state.
"""

from __future__ import annotations

from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.spoken import Spoken

# A word two partials agree on is committed once it is this far from the clip's end: greedy
# partials are least sure of their newest words, and two of them agree on a wrong word heard
# with too little after it. Replayed on a manual clock over all 188 mono files (bench.replay,
# docs/benchmarks.md), committed WER (Whisper's normaliser) was 0.0485 at 0.3 s, 0.0464 at
# 0.5 s and 0.0463 at 0.7 s (offline 0.0428; 0.0425 with no commit before an utterance's end);
# 0.5 s did no worse than 0.3 s on any of five subsets, 0.7 s lost on calls and waits longer.
AGREE_AGE = round(0.5 * SAMPLE_RATE)


def agreed(before: list[Spoken], words: list[Spoken], clip_end: int) -> int:
    """How many of ``words`` (a partial's, its clip ending at sample ``clip_end``) open with
    the same words as ``before`` (the last partial's uncommitted words), each ending
    ``AGREE_AGE`` or more before ``clip_end``."""
    count = 0
    for old, new in zip(before, words, strict=False):
        if old.key != new.key or clip_end - new.end < AGREE_AGE:
            break
        count += 1
    return count


def settled(words: list[Spoken], agreed: int, limit: int) -> int:
    """How many of ``words`` are committed: the first ``agreed``, and those after them that
    end by ``limit`` (the bound allows no later decode for them)."""
    count = agreed
    while count < len(words) and words[count].end <= limit:
        count += 1
    return count
