"""Word timings for a batch of decodes: CTranslate2's ``align`` (cross-attention and dynamic
time warping over the token-to-frame path), split into words as faster-whisper splits them.

A decode forced with a prefix (the committed text of its context) is aligned with that prefix,
so that the new words are placed after the audio it covers; only the new words come back. The
letters a decode glues onto the prefix's last word (:func:`continued`) complete a word that the
prefix's own clip cut short.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streaming.audio import Samples
from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.engine import (
    FRAMES_PER_SECOND,
    HOP_LENGTH,
    MAX_FRAMES,
    SENTENCE_END_MARKS,
    DecodedWord,
    has_word,
)

TOKENS_PER_SECOND = FRAMES_PER_SECOND // 2  # the encoder halves the frame rate
# faster-whisper's defaults (Whisper's): marks merged into the word beside them.
PREPEND_PUNCTUATION = "\"'\u201c\u00bf([{-"
APPEND_PUNCTUATION = "\"'.\u3002,\uff0c!\uff01?\uff1f:\uff1a\u201d)]}\u3001"
# Tokens either side of the prefix's end that the split into words looks at for a word the
# decode goes on with: more than any one word's.
JOIN_TOKENS = 8
# faster-whisper's smoothing of the attention weights before the time warping.
MEDIAN_FILTER_WIDTH = 7
# A word aligned to one step of the path or none: squeezed in where the path had no room.
SQUEEZED = 1 / TOKENS_PER_SECOND


def align(
    model: Any,
    encoded: Any,
    *,
    audios: Sequence[Samples],
    tokenizers: Sequence[Any],
    prefixes: Sequence[list[int]],
    tokens: Sequence[list[int]],
) -> list[tuple[DecodedWord, ...]]:
    """Word timings for every item of an encoded batch from one ``align`` call of
    CTranslate2's Whisper ``model``. An item with no ``tokens`` gets no words."""
    from faster_whisper.transcribe import merge_punctuations  # heavy: imported where used

    frames = [min(len(audio) // HOP_LENGTH, MAX_FRAMES) for audio in audios]
    results = model.align(
        encoded,
        tokenizers[0].sot_sequence,
        [[*p, *t] if t else [] for p, t in zip(prefixes, tokens, strict=True)],
        frames,
        median_filter_width=MEDIAN_FILTER_WIDTH,
    )
    out: list[tuple[DecodedWord, ...]] = []
    for tokenizer, prefix, text_tokens, result, audio in zip(
        tokenizers, prefixes, tokens, results, audios, strict=True
    ):
        if not text_tokens:
            out.append(())
            continue
        alignment = _word_alignment(tokenizer, [*prefix, *text_tokens], result)
        merge_punctuations(alignment, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)
        # A word is new when its tokens start after the prefix. A mark the model appends to
        # the prefix's last word (a comma) is no new word: ``Decoded.prefix_mark`` has it.
        alignment = _after_prefix(alignment, len(prefix))
        duration = len(audio) / SAMPLE_RATE
        out.append(
            tuple(
                DecodedWord(
                    w["word"],
                    min(float(w["start"]), duration),
                    min(float(w["end"]), duration),
                    float(w["probability"]),
                )
                for w in alignment
                if w["word"]
            )
        )
    return out


def continued(tokenizer: Any, prefix: list[int], tokens: list[int]) -> str:
    """The letters the model glued onto the prefix's last word before its first new word, or
    "": a word the prefix's clip cut short, which the decode that heard the rest completes
    ("fount" going on "s were bad", for "founts were bad"). The word is split as the alignment
    splits words (a mark is a word of its own), over the tokens at the join alone; letters
    after a mark ("books," then "s") go on no word."""
    if not prefix or not tokens:
        return ""
    tail = prefix[-JOIN_TOKENS:]
    _, word_tokens = tokenizer.split_to_word_tokens([*tail, *tokens[:JOIN_TOKENS]])
    at = 0
    for word in word_tokens:
        if at + len(word) > len(tail):
            if at >= len(tail):
                return ""  # the first new token begins a word
            head = str(tokenizer.decode(word[: len(tail) - at]))
            return str(tokenizer.decode(word[len(tail) - at :])) if head[-1:].isalnum() else ""
        at += len(word)
    return ""


def _word_alignment(tokenizer: Any, text_tokens: list[int], result: Any) -> list[dict[str, Any]]:
    """Words with start and end from the token-to-frame path (faster-whisper's method), with
    a sentence's final mark, and a word the path stretched over unsaid speech at the clip's
    end, kept no longer than twice the median word."""
    probabilities = result.text_token_probs
    text_indices = np.array([pair[0] for pair in result.alignments])
    time_indices = np.array([pair[1] for pair in result.alignments])
    words, word_tokens = tokenizer.split_to_word_tokens([*text_tokens, tokenizer.eot])
    if len(word_tokens) <= 1:
        return []
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / TOKENS_PER_SECOND
    starts = jump_times[boundaries[:-1]]
    ends = jump_times[boundaries[1:]]
    alignment = [
        {
            "word": word,
            "tokens": tokens,
            "start": float(start),
            "end": float(end),
            "probability": float(np.mean(probabilities[i:j])) if j > i else 0.0,
        }
        for word, tokens, start, end, i, j in zip(
            words, word_tokens, starts, ends, boundaries[:-1], boundaries[1:], strict=False
        )
    ]
    durations = np.array([w["end"] - w["start"] for w in alignment])
    durations = durations[durations.nonzero()]
    if len(durations):
        longest = min(0.7, float(np.median(durations))) * 2
        for i in range(1, len(alignment)):
            word, before = alignment[i], alignment[i - 1]
            if word["end"] - word["start"] > longest:
                if word["word"] in SENTENCE_END_MARKS:
                    word["end"] = word["start"] + longest
                elif before["word"] in SENTENCE_END_MARKS:
                    word["start"] = word["end"] - longest
        # Where a decode left speech unsaid at its clip's end, the end of text aligns there:
        # one word stretches over that speech, and the words after it are squeezed into the
        # clip's last step ("of the" for "...of the true printed book," cut by the VAD inside
        # it: "of" over 1.9 s, "the" in none). Taken as heard, that speech was given up. Cut
        # back, it stays unworded, for the next decode or a retry (streaming.unheard). Only
        # then: a long last word with none squeezed after it may be said that long, and cut
        # back, a number ("1469," of "1469, 1470") left its own end as unworded speech; the
        # skip rule took it for speech passed over and decoded it alone: "1869, 4".
        squeezed = False
        for word in reversed(alignment):
            if not has_word(word["word"]):
                continue
            if word["end"] - word["start"] > SQUEEZED:
                if squeezed:
                    word["end"] = min(word["end"], word["start"] + longest)
                break
            squeezed = True
    return alignment


def _after_prefix(alignment: list[dict[str, Any]], prefix: int) -> list[dict[str, Any]]:
    """The words whose tokens start after the prefix's ``prefix`` tokens."""
    consumed = 0
    kept = []
    for word in alignment:
        if consumed >= prefix:
            kept.append(word)
        consumed += len(word["tokens"])
    return kept
