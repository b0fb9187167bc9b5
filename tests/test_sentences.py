"""Sentences from committed words: where one ends, and which pieces go on one."""

from __future__ import annotations

from streaming.messages import Word
from streaming.sentences import Pieces, SentenceCutter, ends_sentence
from tests.fakes import RATE


def test_titles_and_initials_do_not_end_a_sentence() -> None:
    assert not ends_sentence("Mr.")
    assert not ends_sentence("F.")
    assert ends_sentence("gospel.")
    assert ends_sentence('"no."')
    assert ends_sentence("why?")


def words(*spoken: tuple[str, float]) -> list[Word]:
    return [Word(text, round(at * RATE), round((at + 0.3) * RATE), 0.9) for text, at in spoken]


def test_a_lower_case_piece_goes_on_the_sentence_a_stray_full_stop_ended() -> None:
    cutter = SentenceCutter.of(pause=1.0, longest=20.0, speaker=None)

    first = cutter.pieces(words(("We", 0.0), ("are", 0.4), ("concerned.", 0.8)))
    stray = cutter.pieces(words(("differs", 1.5), ("from", 1.9), ("most.", 2.3)))
    new = cutter.pieces(words(("Then", 3.0), ("Mr.", 3.4), ("Quilter", 3.8), ("came.", 4.2)))
    after_pause = cutter.pieces(words(("and", 6.0), ("left.", 6.4)))
    assert [p.continues for p in (*first, *stray, *new, *after_pause)] == [False, True, False, False]
    assert [p.text for p in new] == ["Then Mr. Quilter came."]


def test_a_stop_a_later_decode_rewrote_is_rewritten_in_the_final_and_its_sentence_goes_on() -> None:
    cutter, pieces = SentenceCutter.of(pause=1.0, longest=20.0, speaker=None), Pieces()
    for piece in cutter.pieces(words(("Printing", 0.0), ("then.", 0.4))):
        pieces.add(0, piece)
    sent = pieces.sent[-1]
    # The next decode, hearing what follows, wrote "then," ("Printing then, for our purpose").
    assert pieces.amend(0, "then.", "then,") is sent
    cutter.goes_on()
    for piece in cutter.pieces(words(("For", 1.0), ("our", 1.4), ("purpose.", 1.8))):
        pieces.add(0, piece)
    assert sent.text == "Printing then."  # what was sent stays as it was
    assert pieces.sent[-1].continues  # though it starts as a new sentence would
    [sentence] = pieces.sentences()
    assert sentence.text == "Printing then, For our purpose."
    assert [w.text for w in sentence.words] == ["Printing", "then,", "For", "our", "purpose."]
    # Only the channel's last word sent can be rewritten (another may follow it by then).
    assert pieces.amend(0, "then,", "then") is None
    assert pieces.amend(1, "purpose.", "purpose") is None
