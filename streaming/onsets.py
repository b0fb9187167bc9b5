"""Word edges at pauses, from the audio's own energy.

Whisper's cross-attention alignment has no notion of silence: a word after a pause starts
where the word before it ended (a tenth to half a second early), and a word before a pause ends
where the alignment's constant lag says. Measured on the tune half of the ``words_silver``
clips (``bench/word_timing.py``): words after a pause of 0.1 s or more started 115 ms early on
average, only 48 % within 200 ms, where words in running speech were 94 % within.

So a word edge that the aligner put in silence is moved to where the sound begins (or ends),
and an end that stops short of a pause is carried to where the sound ends. "Silence" is relative
to the word: 10 ms frames more than :data:`DROP_DB` below the word's loudest frame. In running
speech no frame between words is that quiet, and nothing moves.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE

FRAME = SAMPLE_RATE // 100  # 10 ms
# Below the word's loudest frame by this much: silence. Chosen on the tune half of the
# words_silver clips (20 to 60 dB tried: 40 dB best, 93.3 % of starts within 200 ms against 89.9 %
# unmoved; runs of 3, 5 and 8 frames alike), then scored once on the held-out half.
DROP_DB = 40.0
QUIET = 3  # frames of silence (30 ms) that make a pause
REACH = round(0.15 * SAMPLE_RATE)  # how far an edge short of a pause is carried to it
Samples = npt.NDArray[np.float32]


def edges(audio: Samples, start: int, end: int, lag: int) -> tuple[int, int]:
    """The word's (start, end) in ``audio``'s samples: as aligned less ``lag``, but where its
    aligned span holds a pause, the part beyond the pause is not the word's; and an end short of
    a pause within :data:`REACH` is carried to it. ``audio`` must reach ``REACH`` past the word."""
    start, end = max(start - lag, 0), max(end - lag, 0)
    if end > len(audio):
        raise ValueError(f"the audio ({len(audio)} samples) does not hold the word (to {end})")
    level = _levels(audio)
    first, last = start // FRAME, min(max(end // FRAME, start // FRAME + 1), len(level))
    if last <= first:
        return start, max(end, start)
    peak = first + int(np.argmax(level[first:last]))
    sound = level >= level[peak] - DROP_DB
    before = _pauses(~sound[first:peak])
    if before:
        # A pause inside the span before the word's loudest part: it begins after the last one.
        start = (first + before[-1][1]) * FRAME
    after = _pauses(~sound[peak:last])
    if after:
        # A pause inside the span after its loudest part: it ends at the first one.
        end = (peak + after[0][0]) * FRAME
    else:
        # Sound goes on past the aligned end: carried to a pause within reach, if there is one.
        ahead = _pauses(~sound[last : last + REACH // FRAME])
        if ahead:
            end = (last + ahead[0][0]) * FRAME
    return start, max(end, start)


def _pauses(quiet: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """The runs of at least :data:`QUIET` quiet frames, as (first, after last) indexes."""
    out = []
    run_start = None
    for i, q in enumerate([*quiet.tolist(), False]):
        if q and run_start is None:
            run_start = i
        elif not q and run_start is not None:
            if i - run_start >= QUIET:
                out.append((run_start, i))
            run_start = None
    return out


def _levels(audio: Samples) -> npt.NDArray[np.float64]:
    """dB of each 10 ms frame."""
    count = len(audio) // FRAME
    frames = audio[: count * FRAME].reshape(count, FRAME).astype(np.float64)
    levels: npt.NDArray[np.float64] = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    return levels
