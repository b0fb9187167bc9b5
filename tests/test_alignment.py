"""Word spans from the token-to-frame path (:mod:`streaming.alignment`), on tiny.en's real
tokenizer and paths written out by hand: which stretched spans are cut back, and which stand."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streaming.alignment import TOKENS_PER_SECOND, _word_alignment
from streaming.models import resolve_model


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    import tokenizers
    from faster_whisper.tokenizer import Tokenizer

    path, _ = resolve_model("tiny.en")
    return Tokenizer(tokenizers.Tokenizer.from_file(str(Path(path) / "tokenizer.json")), False)


def _aligned(tokenizer: Any, timed: list[tuple[str, float]], end: float) -> dict[str, tuple[float, float]]:
    """The spans ``_word_alignment`` gives ``timed`` words, each word's tokens starting at its
    time, the end of text at ``end`` (a path as CTranslate2's ``align`` returns one)."""
    tokens: list[int] = []
    path: list[tuple[int, int]] = []
    for text, start in timed:
        for token in tokenizer.encode(text):
            path.append((len(tokens), round(start * TOKENS_PER_SECOND)))
            tokens.append(token)
    path.append((len(tokens), round(end * TOKENS_PER_SECOND)))
    result = SimpleNamespace(alignments=path, text_token_probs=[0.9] * len(tokens))
    return {w["word"]: (w["start"], w["end"]) for w in _word_alignment(tokenizer, tokens, result)}


SAID = [(" which", 0.0), (" were", 0.1), (" the", 0.36), (" immediate", 0.5), (" predecessors", 1.0)]


def test_a_word_stretched_over_unsaid_speech_squeezing_the_words_after_it_is_cut_back(tokenizer: Any) -> None:
    """A decode that stopped at "of the", the VAD having cut "...of the true printed book,":
    the end of text aligned at the clip's end, "of" ran on to it and "the" got no frame. "of"
    keeps twice the median word, so the speech after it stays unworded."""
    spans = _aligned(tokenizer, [*SAID, (" of", 1.56), (" the", 3.46)], end=3.46)
    median = (0.26 + 0.5) / 2  # of 0.1, 0.14, 0.26, 0.5, 0.56 and the 1.9 s of "of"
    assert spans[" of"] == pytest.approx((1.56, 1.56 + 2 * median))
    assert spans[" the"] == (3.46, 3.46)  # squeezed in at the end: left where the path put it


def test_a_word_as_long_as_words_are_stands_with_a_word_squeezed_after_it(tokenizer: Any) -> None:
    spans = _aligned(tokenizer, [*SAID, (" of", 1.56), (" the", 1.9)], end=1.9)
    assert spans[" of"] == pytest.approx((1.56, 1.9))
    assert spans[" the"] == pytest.approx((1.9, 1.9))


def test_a_long_last_word_with_no_word_squeezed_after_it_stands(tokenizer: Any) -> None:
    """A number is said long, and a clip may end in a pause: cut back, "1469," left its own
    end as unworded speech, which was decoded again alone ("1869, 4")."""
    spans = _aligned(tokenizer, [*SAID, (" in", 1.56), (" 1469", 1.7), (",", 3.38)], end=3.4)
    assert spans[" 1469"] == pytest.approx((1.7, 3.38))  # the mark after it is no word


def test_a_long_word_between_two_that_are_said_stands(tokenizer: Any) -> None:
    """Between two words the path is held by both: a long word there is said that long, or
    the speech it spans is another rule's (``Unheard.before_skip``)."""
    spans = _aligned(tokenizer, [*SAID, (" of", 1.56), (" the", 3.0), (" true", 3.1)], end=3.4)
    assert spans[" of"] == pytest.approx((1.56, 3.0))
    assert spans[" true"] == pytest.approx((3.1, 3.4))
