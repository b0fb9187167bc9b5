"""The prompt context and its loop guard."""

from __future__ import annotations

from streaming.context import PromptContext, repeated, repeats_itself


def test_loops_are_detected() -> None:
    assert repeats_itself("thank you. thank you. thank you. thank you. thank you.")
    assert repeats_itself("and then and then and then and then and then")
    assert not repeats_itself("The first books were printed in black letter.")


def test_context_keeps_a_bounded_tail_and_resets_on_a_loop() -> None:
    context = PromptContext(enabled=True, max_chars=40)
    context.add("The first books were printed in black letter.")
    context.add("The Middle Ages brought calligraphy to perfection.")
    prompt = context.prompt()
    assert prompt is not None
    assert len(prompt) <= 40
    assert prompt.endswith("perfection.")
    context.add("so so so so so so so so")
    assert context.prompt() is None
    assert context.resets == 1


def test_a_repeated_utterance_resets_the_context() -> None:
    context = PromptContext(enabled=True, max_chars=200)
    context.add("Thank you for watching.")
    context.add("Thank you for watching!")
    assert context.prompt() is None


def test_disabled_context_gives_only_the_user_prompt() -> None:
    context = PromptContext(enabled=False, max_chars=200)
    context.add("hello there")
    assert context.prompt("Kubernetes") == "Kubernetes"


def test_a_repeat_is_a_run_said_again_from_one_sentence_start_at_another() -> None:
    said = ["mr", "quilter", "is", "the", "apostle", "of", "the", "middle", "classes"]
    n = len(said)
    # The decode's new words say the context's sentence again.
    assert repeated([*said, *said], {0, n}, n) == list(range(n, 2 * n))
    # ...or their own: the second half of the new words repeats the first.
    assert repeated(["yes", *said, *said], {0, 1, 1 + n}, 1) == list(range(1 + n, 1 + 2 * n))
    # Three words from a sentence's start at another's are a repeat; the rest is kept.
    assert repeated([*said, *said[:3], "and", "more"], {0, n}, n) == [n, n + 1, n + 2]
    # Two words, three not at sentence starts, or words that overlap their model are speech.
    assert repeated([*said, "mr", "quilter", "said"], {0, n}, n) == []
    assert repeated([*said, "of", "the", "middle", "ages"], {0, n}, n) == []
    assert repeated(["no"] * 7, {0}, 1) == []
    # Six words that end the decode are a repeat; followed by new words they are speech ("the
    # forms of printed letters should" said twice in a paragraph); eight anywhere are a repeat.
    assert repeated([*said, *said[2:8]], {0}, n) == list(range(n, n + 6))
    assert repeated([*said, *said[2:8], "follow"], {0}, n) == []
    assert repeated([*said, *said[1:9], "follow"], {0}, n) == list(range(n, n + 8))


def test_a_decode_that_begins_by_saying_its_prefix_end_again_drops_the_repeat() -> None:
    context = ["on", "the", "side", "of", "the", "lower", "case", "than", "the", "capital", "letters"]
    n = len(context)
    new = ["the", "capital", "letters", "the", "lower", "case", "being"]
    # The new sentence says the context's last three words again: they are dropped.
    assert repeated([*context, *new], {0, n}, n) == [n, n + 1, n + 2]
    # Two words are speech ("very, very"), and so are three said again later in the decode.
    assert repeated([*context, *new[1:]], {0, n}, n) == []
    assert repeated([*context, "and", *new], {0, n + 1}, n) == []
