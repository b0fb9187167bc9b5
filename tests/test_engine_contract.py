"""The engine's contract, checked on the scripted engine and on the real Whisper engine alike, so
the fake that the fast tests use keeps to what the real one does:

- one result per clip, in order; an empty batch gives none;
- a clip the engine cannot take fails the whole batch with an exception (the scheduler then
  retries the batch item by item);
- a batch decodes like its items decoded one by one;
- words lie within their clip and in order; a forced prefix is not said again; the text is the
  words, after any mark the model ended the prefix with (``prefix_mark``) and any letters it
  glued onto the prefix's last word (``continued``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streaming.audio import decode_file
from streaming.engine import Clip, Engine
from tests.fakes import FINAL, PARTIAL, RATE, ScriptedEngine, silence, tone


@pytest.fixture(scope="module", params=["scripted", "whisper"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "scripted":
        yield ScriptedEngine()
        return
    from streaming.app import whisper_factory
    from streaming.config import Config

    yield whisper_factory(Config().sized_for("cpu", 2))()


@pytest.fixture(scope="module")
def clips(data_dir: Path, engine: Engine) -> list[Clip]:
    """Real speech for the real engine; tones, which it hears as words, for the scripted one."""
    if isinstance(engine, ScriptedEngine):
        return [
            Clip(np.concatenate([tone(1.2), silence(0.3), tone(0.8, freq=330)])),
            Clip(np.concatenate([silence(0.2), tone(2.0, freq=440)])),
            Clip(np.concatenate([tone(1.0), silence(0.2), tone(1.5, freq=550)]), prefix=" f220.0 f220.1"),
        ]
    names = ["LJ001-0002", "LJ001-0005", "LJ001-0010"]
    audio = [decode_file((data_dir / f"ljspeech/{name}.flac").read_bytes()) for name in names]
    first_words = " ".join(_text(audio[2], engine).split()[:3])
    return [Clip(audio[0]), Clip(audio[1]), Clip(audio[2], prefix=first_words)]


def _text(audio: np.ndarray, engine: Engine) -> str:
    return engine.transcribe_batch([Clip(audio)], FINAL)[0].text


def test_one_result_per_clip_in_order_and_none_for_an_empty_batch(engine: Engine, clips: list[Clip]) -> None:
    assert engine.transcribe_batch([], FINAL) == []
    forward = engine.transcribe_batch(clips, FINAL)
    backward = engine.transcribe_batch(clips[::-1], FINAL)
    assert len(forward) == len(clips)
    assert [d.text for d in forward] == [d.text for d in backward[::-1]]
    assert all(d.text for d in forward)


def test_a_batch_decodes_like_its_items_one_by_one(engine: Engine, clips: list[Clip]) -> None:
    for options in (FINAL, PARTIAL):
        together = engine.transcribe_batch(clips, options)
        alone = [engine.transcribe_batch([clip], options)[0] for clip in clips]
        assert [d.text for d in together] == [d.text for d in alone]
        for a, b in zip(together, alone, strict=True):
            assert [w.text for w in a.words] == [w.text for w in b.words]
            assert all(abs(x.start - y.start) <= 0.06 for x, y in zip(a.words, b.words, strict=True))


def test_words_lie_in_their_clip_in_order_and_the_prefix_is_not_said_again(
    engine: Engine, clips: list[Clip]
) -> None:
    for clip, decoded in zip(clips, engine.transcribe_batch(clips, FINAL), strict=True):
        duration = len(clip.audio) / RATE
        assert decoded.words
        assert all(0 <= w.start <= w.end <= duration for w in decoded.words)
        assert all(a.start <= b.start for a, b in itertools.pairwise(decoded.words))
        assert (
            "".join(w.text for w in decoded.words).strip()
            == decoded.text.removeprefix(decoded.continued).removeprefix(decoded.prefix_mark).strip()
        )
        if clip.prefix:
            said = decoded.text.lower().split()
            assert said[: len(clip.prefix.split())] != clip.prefix.lower().split()
    # Partials may skip the alignment: their words are then empty, never wrong.
    for decoded in engine.transcribe_batch(clips, PARTIAL):
        assert decoded.text


def test_a_clip_the_engine_cannot_take_fails_the_whole_batch(engine: Engine, clips: list[Clip]) -> None:
    stereo = Clip(np.zeros((RATE, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="mono"):
        engine.transcribe_batch([clips[0], stereo], FINAL)


@pytest.fixture
def into_the_next_sentence(engine: Engine, data_dir: Path, manifest: dict[str, Any]) -> Clip:
    """A sentence of the 5-minute file as the prefix, without its full stop, and its audio
    with 0.3 s of the next sentence."""
    if isinstance(engine, ScriptedEngine):
        pytest.skip("the scripted engine writes no marks")
    entry = manifest["long/ljspeech_5min.flac"]
    audio = decode_file((data_dir / "long/ljspeech_5min.flac").read_bytes())
    (before, start, _), (_, after, _) = entry["segments"][1], entry["segments"][2]
    return Clip(audio[round((start - 0.1) * RATE) : round((after + 0.3) * RATE)], before.strip().rstrip("."))


@pytest.mark.parametrize(("kind", "model_calls"), [("greedy", 2), ("beam", 1)])
def test_a_prefix_the_model_only_ends_is_decoded_on_after_its_mark(
    engine: Engine, into_the_next_sentence: Clip, monkeypatch: pytest.MonkeyPatch, kind: str, model_calls: int
) -> None:
    """A prefix is given without the full stop the model wrote where its clip stopped. Decoding
    0.3 s into the next sentence, Whisper's best was that stop and nothing else (so the new
    speech had no words). Greedy, the engine decodes on, the mark forced too; a beam search
    already holds a hypothesis that goes on after the mark, and one model call does."""
    clip = into_the_next_sentence
    model = engine._model  # type: ignore[attr-defined]
    calls = _CountingModel(model.model)
    monkeypatch.setattr(model, "model", calls)
    options = replace(PARTIAL, word_timestamps=True) if kind == "greedy" else FINAL
    [decoded] = engine.transcribe_batch([clip], options)
    assert decoded.prefix_mark == "."
    assert decoded.words, decoded.text
    assert decoded.words[0].text.strip()[:1].isupper()  # a new sentence, as the stop says
    assert calls.generate_calls == model_calls


@pytest.mark.parametrize("options", [FINAL, replace(PARTIAL, word_timestamps=True)], ids=["beam", "greedy"])
def test_a_prefix_whose_last_word_its_clip_cut_short_is_gone_on_with(
    engine: Engine, data_dir: Path, options: Any
) -> None:
    """A committed word can be the start of one ("compar", as a clip that stopped inside
    "comparatively" heard it). The model glues the rest onto it: those letters come back as
    ``continued``, ahead of the text, and the word is not among the new words."""
    if isinstance(engine, ScriptedEngine):
        pytest.skip("the scripted engine hears whole words")
    audio = decode_file(
        (data_dir / "ljspeech/LJ001-0002.flac").read_bytes()
    )  # "in being comparatively modern."
    [cut, whole] = engine.transcribe_batch(
        [Clip(audio, "In being compar"), Clip(audio, "In being comparatively")], options
    )
    assert cut.continued == "atively", cut.text
    assert cut.text.startswith("atively")
    assert [w.text.strip() for w in cut.words] == ["modern."]
    assert whole.continued == ""  # a whole word: the decode goes on with a new one
    assert [w.text.strip() for w in whole.words] == ["modern."]


def test_a_decode_that_stops_short_leaves_the_rest_of_its_clip_unworded(
    engine: Engine, data_dir: Path
) -> None:
    """The VAD cut the 5-minute file at 27.56 s, inside "...predecessors of the | true printed
    book,". With the sentence before as its prefix (as a stream's context gave it), tiny.en
    (int8, AVX-512) wrote "...predecessors of the" and stopped; the end of text aligned at the
    clip's end, and "of" ran on from 25.6 s to 27.5 s over "the true printed book," (26.1 to
    27.2 s). Taken as heard, that speech was lost. On a CPU whose decode says those words,
    they are where they were said."""
    if isinstance(engine, ScriptedEngine):
        pytest.skip("the scripted engine aligns every word it hears")
    start = 22.09
    audio = decode_file((data_dir / "long/ljspeech_5min.flac").read_bytes())
    clip = Clip(
        audio[round(start * RATE) : round(27.56 * RATE)], "by a similar process, produced the block books,"
    )
    [decoded] = engine.transcribe_batch([clip], FINAL)
    said_printed = "printed" in decoded.text
    for word in decoded.words:
        # "printed" was said from 26.5 s to 26.8 s: a word over it is that word or after it.
        assert said_printed or start + word.end < 26.6 or start + word.start > 27.2, (decoded.text, word)


def test_a_greedy_loop_stops_at_what_its_clip_can_hold(engine: Engine, data_dir: Path) -> None:
    """Forced to start a loop on 2 s of "1469, 1470", a greedy decode went on to the decoder's
    224 tokens (72 words, three times the usual time); it stops at 15 tokens a second of its
    clip and a few more. Bounded in tokens, so in words too."""
    if isinstance(engine, ScriptedEngine):
        pytest.skip("the scripted engine does not loop")
    from streaming.whisper import SPARE_TOKENS, TOKENS_PER_SECOND_OF_AUDIO

    seconds = 2.05
    audio = decode_file((data_dir / "ljspeech/LJ001-0045.flac").read_bytes())[: round(seconds * RATE)]
    [decoded] = engine.transcribe_batch([Clip(audio, prefix="1469, 1469, 1469,")], PARTIAL)
    assert decoded.text.startswith("1469, 1469")  # it does loop
    assert len(decoded.text.split()) <= seconds * TOKENS_PER_SECOND_OF_AUDIO + SPARE_TOKENS


class _CountingModel:
    """CTranslate2's Whisper model, its ``generate`` calls counted."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.generate_calls = 0

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        self.generate_calls += 1
        return self._inner.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
