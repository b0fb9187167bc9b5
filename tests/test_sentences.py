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


def test_a_piece_that_goes_on_its_last_word_joins_the_sentence_without_a_space() -> None:
    # A commit cut "ill-disposed" after "old" (the model's reading); the next decode, prefixed
    # with it, went on "-sposed", written against it.
    cutter, pieces = SentenceCutter.of(pause=1.0, longest=20.0, speaker=None), Pieces()
    for piece in cutter.pieces(words(("He", 0.0), ("was", 0.3), ("not", 0.6), ("an", 0.9), ("old", 1.3))):
        pieces.add(0, piece)
    rest = [Word("-sposed", round(1.62 * RATE), round(2.0 * RATE), 0.9, glued=True), *words(("young", 2.1))]
    [piece] = cutter.pieces(rest)
    pieces.add(0, piece)
    assert piece.continues
    assert piece.glued
    assert piece.text == "-sposed young"
    [sentence] = pieces.sentences()
    assert sentence.text == "He was not an old-sposed young"
    assert not sentence.glued
    # A piece that starts a sentence of its own joins nothing, whatever its first word.
    [later] = cutter.pieces([Word("-and", round(9.0 * RATE), round(9.3 * RATE), 0.9, glued=True)])
    assert not later.continues
    assert not later.glued
