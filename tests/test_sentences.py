"""Sentences from committed words: where one ends, and which pieces go on one."""

from __future__ import annotations

from streaming.messages import Word
from streaming.sentences import SentenceCutter, ends_sentence
from tests.fakes import RATE


def test_titles_and_initials_do_not_end_a_sentence() -> None:
    assert not ends_sentence("Mr.")
    assert not ends_sentence("F.")
    assert ends_sentence("gospel.")
    assert ends_sentence('"no."')
    assert ends_sentence("why?")


def test_a_lower_case_piece_goes_on_the_sentence_a_stray_full_stop_ended() -> None:
    cutter = SentenceCutter.of(pause=1.0, longest=20.0, speaker=None)

    def words(*spoken: tuple[str, float]) -> list[Word]:
        return [Word(text, round(at * RATE), round((at + 0.3) * RATE), 0.9) for text, at in spoken]

    first = cutter.pieces(words(("We", 0.0), ("are", 0.4), ("concerned.", 0.8)))
    stray = cutter.pieces(words(("differs", 1.5), ("from", 1.9), ("most.", 2.3)))
    new = cutter.pieces(words(("Then", 3.0), ("Mr.", 3.4), ("Quilter", 3.8), ("came.", 4.2)))
    after_pause = cutter.pieces(words(("and", 6.0), ("left.", 6.4)))
    assert [p.continues for p in (*first, *stray, *new, *after_pause)] == [False, True, False, False]
    assert [p.text for p in new] == ["Then Mr. Quilter came."]
