"""The prompt context and its loop guard."""

from __future__ import annotations

from streaming.context import PromptContext, repeats_itself


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
