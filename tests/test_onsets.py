"""Word edges at pauses, from the audio's energy (pure logic, on synthetic sound)."""

from __future__ import annotations

import numpy as np

from streaming.onsets import edges
from tests.fakes import RATE, silence, tone


def at(seconds: float) -> int:
    return round(seconds * RATE)


def test_a_start_aligned_into_the_pause_before_moves_to_where_the_sound_begins() -> None:
    audio = np.concatenate([tone(0.5), silence(0.6), tone(0.5), silence(0.5)])  # word at 1.1 s
    start, end = edges(audio, at(0.55), at(1.6), lag=0)
    assert abs(start - at(1.1)) <= at(0.01)
    assert abs(end - at(1.6)) <= at(0.01)


def test_an_end_aligned_into_the_pause_after_moves_back_to_where_the_sound_ends() -> None:
    audio = np.concatenate([silence(0.2), tone(0.5), silence(0.8)])
    start, end = edges(audio, at(0.2), at(1.0), lag=0)
    assert start == at(0.2)
    assert abs(end - at(0.7)) <= at(0.01)


def test_an_end_short_of_a_pause_is_carried_to_it() -> None:
    audio = np.concatenate([silence(0.2), tone(0.5), silence(0.8)])
    _, end = edges(audio, at(0.2), at(0.6), lag=0)
    assert abs(end - at(0.7)) <= at(0.01)


def test_in_running_speech_nothing_moves_but_the_lag() -> None:
    audio = np.concatenate([tone(0.4, freq=200), tone(0.4, freq=300), tone(0.4, freq=400)])
    assert edges(audio, at(0.5), at(0.9), lag=at(0.1)) == (at(0.4), at(0.8))


def test_a_span_reaching_back_over_the_pause_into_the_word_before_starts_after_the_pause() -> None:
    audio = np.concatenate([tone(0.5, freq=200), silence(0.4), tone(0.5, freq=300), silence(0.5)])
    start, end = edges(audio, at(0.4), at(1.4), lag=0)  # from the word before's tail
    assert abs(start - at(0.9)) <= at(0.01)
    assert abs(end - at(1.4)) <= at(0.01)
