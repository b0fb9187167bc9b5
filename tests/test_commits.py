"""The commit rule, sans-I/O: a scripted engine that keeps the real one's contract (words read
off the audio, a prefix skips the words it covers, a word cut off by the clip's end is heard
wrong), scripted VAD scores and a manual clock. Stream time equals clock time here."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from streaming import agreement
from streaming.config import StreamConfig
from streaming.engine import Clip, Decoded, DecodedWord, DecodeOptions
from streaming.jobs import Behind, Job
from streaming.spoken import Spoken
from tests.fakes import RATE, ScriptedEngine, heard_words, silence, tone
from tests.test_session import Harness


def talk(*pitches: float, word: float = 1.0, gap: float = 0.1) -> np.ndarray:
    """Speech with no pause the VAD takes: runs of distinct pitch, ``gap`` apart."""
    parts = []
    for pitch in pitches:
        parts += [tone(word, freq=pitch), silence(gap)]
    return np.concatenate(parts)


def committed(h: Harness) -> list[tuple[str, float, float]]:
    return [
        (w["word"], w["start"], w["end"])
        for m in h.of_type("segment")
        for w in m["segment"]["words"]  # type: ignore[typeddict-item]
    ]


def expected(audio: np.ndarray) -> list[str]:
    return [w.text.strip().rstrip("~") for w in heard_words(audio)]


def transcript(*parts: np.ndarray) -> list[str]:
    """The words of ``parts``, spoken in turn on one channel, as its transcript has them: the
    first begins a sentence (``Committed.opening``)."""
    words = [w for part in parts for w in expected(part)]
    return [words[0][:1].upper() + words[0][1:], *words[1:]] if words else []


def run_with_arrivals(h: Harness, audio: np.ndarray) -> list[tuple[float, float]]:
    """Stream ``audio`` and return (word end, arrival time of its segment) for every word."""
    out: list[tuple[float, float]] = []
    step = int(0.1 * RATE)
    seen = 0
    for i in range(0, len(audio), step):
        h.audio(audio[i : i + step])
        seen = take_arrivals(h, seen, out)
    return out


def take_arrivals(h: Harness, seen: int, out: list[tuple[float, float]]) -> int:
    """Add (word end, now) for every word of the segments after the first ``seen``; returns
    how many segments there are now."""
    segments = h.of_type("segment")
    for m in segments[seen:]:
        out += [(w["end"], h.clock.now()) for w in m["segment"]["words"]]  # type: ignore[typeddict-item]
    return len(segments)


def test_speech_with_no_pause_gets_every_word_within_the_bound() -> None:
    h = Harness(partial_interval=0.5, commit_bound=1.5, max_utterance=30.0)
    speech = talk(200, 300, 400, 500, 600, 700, word=0.5, gap=0.1)  # 3.6 s, no pause
    arrivals = run_with_arrivals(h, np.concatenate([speech, silence(1.0)]))
    assert arrivals, "nothing was committed"
    waits = [arrived - end for end, arrived in arrivals]
    # The bound, plus the 0.1 s granularity at which this harness delivers audio.
    assert max(waits) <= 1.5 + 0.1, waits
    # Words were committed while the speech went on, not only at its end.
    assert min(arrived for _, arrived in arrivals) < len(speech) / RATE


def test_no_word_is_committed_twice_lost_or_revised_across_cuts_and_pauses() -> None:
    # Pauses that end utterances, a pause too short to, and a run longer than the VAD's 4 s
    # longest utterance (the scripted setting), which is cut at its quietest point.
    audio = np.concatenate(
        [
            talk(220, 330, word=0.8),
            silence(0.6),
            talk(440, word=1.2),
            silence(0.15),
            talk(550, 660, 770, 880, word=1.1, gap=0.05),
            silence(0.8),
        ]
    )
    h = Harness(partial_interval=0.5)
    h.audio(audio)
    h.text({"type": "end"})
    words = committed(h)
    texts = [w for w, _, _ in words]
    assert texts == transcript(audio)
    assert all(not w.endswith("~") for w in texts)  # no misheard, cut-off word was committed
    starts = [s for _, s, _ in words]
    assert starts == sorted(starts)
    assert all(a[2] <= b[1] for a, b in itertools.pairwise(words))  # no overlap
    # The final holds exactly the words sent, in order: nothing revised.
    [final] = h.of_type("final")
    assert [w["word"] for w in final["response"]["word_segments"]] == texts  # type: ignore[typeddict-item]


def test_a_word_two_partials_agree_on_is_committed_before_its_utterance_ends() -> None:
    h = Harness(partial_interval=0.5, commit_bound=10.0)  # no time bound: agreement only
    h.audio(talk(220, word=2.5))
    assert h.of_type("segment"), "agreed words were not committed"
    assert h.session.track_stats[0].agreed > 0
    assert h.session.track_stats[0].forced == 0


def test_each_decode_is_prefixed_with_the_committed_text_of_its_audio() -> None:
    h = Harness(partial_interval=0)
    h.audio(np.concatenate([talk(220, word=0.8), silence(0.5), talk(330, word=0.8), silence(0.6)]))
    first, second = h.engine.clips[0], h.engine.clips[-1]
    assert first.prefix == ""
    # The second utterance is decoded with the first one's audio and words before it.
    assert second.prefix == "F220.0 f220.1"
    assert len(second.audio) > len(first.audio)
    assert [w for w, _, _ in committed(h)] == ["F220.0", "f220.1", "f330.0", "f330.1"]


def test_a_long_silence_parts_turns_neither_words_nor_unworded_speech_reach_across_it() -> None:
    # On a call a channel is silent through the other party's turn. Decoded across that silence,
    # Whisper wrote words of its own into it, or timed the new words from the old ones' end.
    h = Harness(partial_interval=0)
    h.engine = MarksForNoiseEngine()
    turn = np.concatenate([talk(220, word=0.8), tone(0.6, freq=110)])  # words, then a noise
    h.audio(np.concatenate([turn, silence(3.0), talk(330, word=0.8), silence(0.6)]))
    last = h.engine.clips[-1]
    assert last.prefix == ""
    assert len(last.audio) < 2.5 * RATE  # the new turn and its padding, not the silence before
    words = [(w, start) for w, start, _ in committed(h) if w != "..."]  # the noise, as Whisper hears it
    assert [w for w, _ in words] == ["F220.0", "f220.1", "f330.0", "f330.1"]
    assert words[2][1] >= len(turn) / RATE + 2.5  # the new turn's words where they are


def test_an_eager_final_stands_for_the_utterance_its_pause_closes() -> None:
    h = Harness(partial_interval=0)
    h.audio(np.concatenate([talk(220, word=1.0), silence(0.1)]))
    [eager] = [clip for clip in h.engine.clips]
    assert h.of_type("segment") == []  # decoded, held until the pause is confirmed
    h.audio(silence(0.5))
    assert len(h.engine.clips) == 1  # no second decode once the pause closed the utterance
    assert [w for w, _, _ in committed(h)] == ["F220.0", "f220.1"]
    assert h.session.track_stats[0].eager_used == 1
    assert len(eager.audio) < len(h.engine.clips[0].audio) + 1


def test_an_eager_final_is_thrown_away_when_speech_resumes() -> None:
    h = Harness(partial_interval=0)
    # A pause shorter than the 0.3 s that ends an utterance: the eager final is wrong.
    audio = np.concatenate([talk(220, word=1.0), silence(0.2), talk(330, word=1.0), silence(0.6)])
    h.audio(audio)
    stats = h.session.track_stats[0]
    assert stats.eager_discarded >= 1
    assert stats.eager_used == 1
    assert [w for w, _, _ in committed(h)] == transcript(audio)


def test_an_eager_final_shed_under_load_falls_back_to_a_plain_final() -> None:
    h = Harness(partial_interval=0)
    h.audio(np.concatenate([talk(220, word=1.0), silence(0.1)]), run_jobs=False)
    [job] = h.pending
    assert job.speculative
    h.pending.clear()
    h.session.receive_failure(job.ticket, "superseded")  # what a shed job resolves to
    h.audio(silence(0.5))
    assert [w for w, _, _ in committed(h)] == ["F220.0", "f220.1"]
    assert not h.engine_jobs[-1][0].speculative


def test_no_eager_finals_when_they_are_off() -> None:
    h = Harness(partial_interval=0, eager_finals=False)
    h.audio(np.concatenate([talk(220, word=1.0), silence(0.6)]))
    assert [job.speculative for job, _ in h.engine_jobs] == [False]


def test_pieces_of_a_sentence_are_joined_in_the_final_and_a_real_pause_ends_it() -> None:
    h = Harness(partial_interval=0, sentence_pause=1.0)
    h.audio(
        np.concatenate(
            [talk(220, word=0.8), silence(0.5), talk(330, word=0.8), silence(1.5), talk(440), silence(0.6)]
        )
    )
    h.text({"type": "end"})
    pieces = h.of_type("segment")
    assert [p["continues"] for p in pieces] == [False, True, False]  # type: ignore[typeddict-item]
    [final] = h.of_type("final")
    texts = [s["text"] for s in final["response"]["segments"]]  # type: ignore[typeddict-item]
    assert texts == ["F220.0 f220.1 f330.0 f330.1", "f440.0 f440.1"]


def test_channels_commit_on_their_own() -> None:
    stream = StreamConfig(encoding="pcm_f32le", channels=2, multichannel=True)
    h = Harness(stream=stream, partial_interval=0.5)
    left = np.concatenate([talk(220, 330, word=1.0), silence(1.0)])
    right = np.concatenate([silence(1.0), talk(440, word=1.0), silence(1.1)])
    h.audio(np.stack([left, right], axis=1).reshape(-1))
    h.text({"type": "end"})
    by_speaker: dict[str, list[str]] = {}
    for m in h.of_type("segment"):
        segment = m["segment"]  # type: ignore[typeddict-item]
        by_speaker.setdefault(segment["speaker"], []).extend(w["word"] for w in segment["words"])
    assert by_speaker == {"channel_0": transcript(left), "channel_1": transcript(right)}


def pause_during_a_partial() -> tuple[Harness, Job, Job]:
    """A pause begins while a partial decodes: the harness, that partial, and the eager final
    that takes its place, neither run yet."""
    h = Harness(partial_interval=0.5)
    h.audio(talk(220, word=1.45, gap=0.0), run_jobs=False)
    [partial] = [j for j in h.pending if j.kind == "partial"][-1:]
    h.audio(silence(0.1), run_jobs=False)
    eager = h.pending[-1]
    assert eager.speculative
    return h, partial, eager


def test_an_eager_final_does_not_wait_for_a_partial_in_flight() -> None:
    h, partial, eager = pause_during_a_partial()
    h.pending.remove(eager)
    h.session.receive_result(eager.ticket, h.engine.transcribe(eager.clip, eager.options))
    h.session.receive_result(partial.ticket, h.engine.transcribe(partial.clip, partial.options))
    h.pending = [j for j in h.pending if j.ticket != partial.ticket]
    h.audio(silence(0.5))
    assert [w for w, _, _ in committed(h)] == ["F220.0", "f220.1", "f220.2"]


@pytest.mark.parametrize("eager_back", [False, True])
def test_a_partial_an_eager_final_displaced_shows_its_words_unless_that_final_showed_more(
    eager_back: bool,
) -> None:
    """Under load the eager final is shed, and the partial it displaced is all that can show
    the words before the utterance's final; back first, the eager final says more."""
    h, partial, eager = pause_during_a_partial()
    h.pending = []
    shown = len(h.of_type("partial"))
    if eager_back:
        h.session.receive_result(eager.ticket, h.engine.transcribe(eager.clip, eager.options))
    else:
        h.session.receive_failure(eager.ticket, "superseded")  # what a shed job resolves to
    h.session.receive_result(partial.ticket, h.engine.transcribe(partial.clip, partial.options))
    h.pump(run_jobs=False)
    partials = h.of_type("partial")[shown:]
    if eager_back:
        assert partials == []
    else:
        [message] = partials
        assert message["segment"]["text"] == "F220.0"  # type: ignore[typeddict-item]
    assert committed(h) == []  # too young to be forced
    h.audio(silence(0.5))
    assert [w for w, _, _ in committed(h)] == ["F220.0", "f220.1", "f220.2"]


def later(decoded: Decoded, by: float, duration: float) -> Decoded:
    """``decoded`` with its words aligned ``by`` seconds later (within its clip)."""
    words = tuple(
        replace(w, start=min(w.start + by, duration), end=min(w.end + by, duration)) for w in decoded.words
    )
    return replace(decoded, words=words)


@pytest.mark.parametrize("eager_back", ["yes", "aligned later", "no"])
def test_a_displaced_partial_commits_the_words_its_bound_allows_no_later_decode_for(eager_back: str) -> None:
    """Left to the eager final that took its place, they waited for its decode too (2 s on a
    1.5 s bound, replayed); the eager final, or the plain final when it is shed, does not say
    them again, even where it aligns them after the end of what was committed ("of the the
    true printed book", replayed under load)."""
    h = Harness(partial_interval=0.5, commit_bound=1.4)  # words 0.6 s old are forced
    speech = talk(220, word=3.0, gap=0.0)
    h.audio(speech[: int(2.2 * RATE)])
    h.audio(speech[int(2.2 * RATE) :], run_jobs=False)
    [partial] = h.pending
    h.audio(silence(0.1), run_jobs=False)
    [eager] = [j for j in h.pending if j.speculative]
    h.pending = []
    assert partial.urgent
    before = [w for w, _, _ in committed(h)]
    h.session.receive_result(partial.ticket, h.engine.transcribe(partial.clip, partial.options))
    h.pump(run_jobs=False)
    assert [w for w, _, _ in committed(h)] == [*before, "f220.3"]  # it ended 0.6 s before the clip's end
    if eager_back == "no":
        h.session.receive_failure(eager.ticket, "superseded")
    else:
        decoded = h.engine.transcribe(eager.clip, eager.options)
        if eager_back == "aligned later":
            decoded = later(decoded, 0.35, len(eager.clip.audio) / RATE)
        h.session.receive_result(eager.ticket, decoded)
    h.audio(silence(0.5))
    assert [w for w, _, _ in committed(h)] == transcript(speech)


class EchoingEngine(ScriptedEngine):
    """Says the prefix again when the audio after it holds no new word, squeezed into the
    clip's last 0.2 s: what tiny.en did with a breath after a committed sentence."""

    def transcribe(self, clip: Clip, options: DecodeOptions) -> Decoded:
        decoded = super().transcribe(clip, options)
        prefix = clip.prefix.split()
        if decoded.words or not prefix:
            return decoded
        end = len(clip.audio) / RATE
        step = 0.2 / len(prefix)
        words = tuple(
            DecodedWord(f" {text}", end - 0.2 + i * step, end - 0.2 + (i + 1) * step, 0.9)
            for i, text in enumerate(prefix)
        )
        return Decoded(text=clip.prefix, words=words, language="en", seconds=0.01)


def test_a_decode_that_says_its_prefix_again_adds_nothing() -> None:
    h = Harness(partial_interval=0.5)
    h.engine = EchoingEngine()
    speech = talk(220, 330, 440, word=0.8)  # six words, no sentence end: a repeat anywhere
    breath = tone(0.15, freq=900)  # speech to the VAD, no word to the model
    h.audio(np.concatenate([speech, silence(0.6), breath, silence(0.8)]))
    h.text({"type": "end"})
    assert any(clip.prefix for clip in h.engine.clips), "the breath was not decoded after its context"
    assert [w for w, _, _ in committed(h)] == transcript(speech)
    assert h.session.track_stats[0].repeats_dropped >= len(expected(speech))


class StretchingEngine(ScriptedEngine):
    """Aligns every word ``stretch`` past its end (up to its clip's), as cross-attention can
    stretch a word over a pause and into the next word; with ``echo``, its first new word after
    a prefix also says the prefix's last word again, aligned over it."""

    def __init__(self, stretch: float, *, echo: bool = False) -> None:
        super().__init__()
        self.stretch = stretch
        self.echo = echo

    def transcribe(self, clip: Clip, options: DecodeOptions) -> Decoded:
        decoded = super().transcribe(clip, options)
        duration = len(clip.audio) / RATE
        words = [replace(w, end=min(w.end + self.stretch, duration)) for w in decoded.words]
        if self.echo and clip.prefix and words:
            said = heard_words(clip.audio)[len(clip.prefix.split()) - 1]
            words.insert(0, replace(said, end=min(said.end + self.stretch, duration)))
        return replace(decoded, text="".join(w.text for w in words).strip(), words=tuple(words))


@pytest.mark.parametrize("echo", [False, True])
def test_a_word_aligned_over_a_committed_word_is_dropped_only_if_it_says_that_word_again(echo: bool) -> None:
    """A committed word's alignment stretched into the next word ("as the" ending where
    "invention" was half said): the next decode's "invention", centred before that end, was
    dropped as if it were said twice, and lost."""
    h = Harness(partial_interval=0.5, max_utterance=30.0)
    h.engine = StretchingEngine(0.6, echo=echo)
    speech = talk(200, 300, 400, 500, word=1.0)  # no pause the VAD takes: cut by partials
    h.audio(np.concatenate([speech, silence(1.0)]))
    h.text({"type": "end"})
    assert any(clip.prefix for clip in h.engine.clips)
    assert [w for w, _, _ in committed(h)] == transcript(speech)


class StopsAtAPauseEngine(ScriptedEngine):
    """Ends a final's text at its first pause of 0.15 s or more after the prefix's words, as
    Whisper without timestamp tokens may end at a sentence end and leave the rest unsaid."""

    def transcribe(self, clip: Clip, options: DecodeOptions) -> Decoded:
        decoded = super().transcribe(clip, options)
        if options.beam_size == 1 or not decoded.words:
            return decoded
        kept = [decoded.words[0]]
        for word in decoded.words[1:]:
            if word.start - kept[-1].end >= 0.15:
                break
            kept.append(word)
        return Decoded("".join(w.text for w in kept).strip(), tuple(kept), "en", decoded.seconds)


def test_speech_a_final_leaves_unworded_is_decoded_once_more_after_it() -> None:
    h = Harness(stream=StreamConfig(encoding="pcm_f32le", interim_results=False))
    h.engine = StopsAtAPauseEngine()
    # Two runs 0.2 s apart: one utterance to the VAD (its pause ends at 0.3 s), two to the model.
    speech = np.concatenate([tone(1.0, freq=220), silence(0.2), tone(1.0, freq=330)])
    h.audio(np.concatenate([silence(0.3), speech]))
    h.text({"type": "end"})  # the stream ends in speech: no later utterance would hear the rest
    assert [w for w, _, _ in committed(h)] == transcript(speech)
    assert h.session.track_stats[0].retries == 1
    finals = [job for job, _ in h.engine_jobs if job.kind == "final" and not job.speculative]
    assert len(finals) == 2
    assert finals[1].clip.prefix == "F220.0 f220.1"  # the retry goes on from what was committed


def test_unworded_speech_the_next_decode_cannot_reach_is_retried_while_it_waits() -> None:
    """A file's pieces all wait while the first decodes (``POST /predict``): speech the first
    final leaves unworded is retried at once when the next piece's clip cannot reach it (here,
    past a silence that ends the context; in a file, 28 s pieces fill the window), and its
    audio is kept while that final decodes. Before, it was given up: a 16 kHz call lost a
    third of its words."""
    h = Harness(stream=StreamConfig(encoding="pcm_f32le", interim_results=False))
    h.engine = StopsAtAPauseEngine()
    first = np.concatenate([tone(1.0, freq=220), silence(0.2), tone(1.0, freq=330)])
    later = tone(1.0, freq=440)
    h.audio(np.concatenate([silence(0.3), first, silence(2.5), later, silence(0.6)]), run_jobs=False)
    h.text({"type": "end"})
    assert [w for w, _, _ in committed(h)] == transcript(first, later)
    assert h.session.track_stats[0].retries == 1


class PassesOverAVoiceEngine(ScriptedEngine):
    """A final passes over the 330 Hz voice where words come before it in its clip, as Whisper,
    decoding a long clip of several voices without timestamp tokens, can leave a whole turn of
    another voice unsaid (a 2.9 s turn in a 28 s piece of a call); decoded first, it is heard."""

    def transcribe(self, clip: Clip, options: DecodeOptions) -> Decoded:
        decoded = super().transcribe(clip, options)
        if options.beam_size == 1:
            return decoded
        before = bool(clip.prefix)
        kept = []
        for word in decoded.words:
            other = not word.text.strip().startswith("f330")
            if other or not before:
                kept.append(word)
            before = before or other
        return Decoded("".join(w.text for w in kept).strip(), tuple(kept), "en", decoded.seconds)


@pytest.mark.parametrize("file", [True, False], ids=["file", "live"])
def test_speech_a_final_passes_over_is_decoded_alone_and_the_rest_goes_on_from_it(file: bool) -> None:
    """The speech is retried at once, whether or not a later decode would reach it: the same
    long clip would pass over it again. Before, the words after it were committed and the
    turn was lost (7 and 11 words of two calls through /predict). ``file``: every piece waits
    while the first decodes, as in ``POST /predict``; ``live``: decoded as the audio comes."""
    h = Harness(stream=StreamConfig(encoding="pcm_f32le", interim_results=False))
    h.engine = PassesOverAVoiceEngine()
    turns = np.concatenate([tone(0.6, freq=220), silence(0.1), tone(1.5, freq=330), silence(0.1)])
    speech = np.concatenate([turns, tone(0.6, freq=440)])
    later = tone(1.0, freq=660)
    h.audio(np.concatenate([silence(0.3), speech, silence(0.8), later, silence(0.8)]), run_jobs=not file)
    h.text({"type": "end"})
    said = [w for w, _, _ in committed(h)]
    # A short run's pitch is read within 10 Hz, as its clip starts between the VAD's frames.
    wanted = [(220, 0), (330, 0), (330, 1), (330, 2), (440, 0), (660, 0), (660, 1)]
    assert [word.split(".")[1] for word in said] == [str(place) for _, place in wanted], said
    for word, (pitch, _) in zip(said, wanted, strict=True):
        assert abs(float(word[1:].split(".")[0]) - pitch) <= 10, said
    stats = h.session.track_stats[0]
    assert (stats.skips, stats.retries) == (1, 1)
    # The speech passed over is decoded alone, without the context it was passed over in, then
    # the rest goes on from its words.
    finals = [job.clip.prefix for job, _ in h.engine_jobs if job.kind == "final"]
    rest = finals.index("F220.0 f330.0 f330.1 f330.2")
    assert finals[rest - 1] == ""


@pytest.mark.parametrize("file", [True, False], ids=["file", "live"])
def test_speech_a_final_passes_over_before_its_first_word_is_decoded_alone(file: bool) -> None:
    """The turn passed over may be the first speech after the words committed before: with
    those as its prefix, the final's first word comes after a whole turn of another voice."""
    h = Harness(stream=StreamConfig(encoding="pcm_f32le", interim_results=False))
    h.engine = PassesOverAVoiceEngine()
    first = np.concatenate([silence(0.3), tone(0.6, freq=220), silence(0.8)])
    turns = np.concatenate([tone(1.5, freq=330), silence(0.1), tone(0.6, freq=440), silence(0.8)])
    h.audio(np.concatenate([first, turns]), run_jobs=not file)
    h.text({"type": "end"})
    said = [w for w, _, _ in committed(h)]
    wanted = [220, 330, 330, 330, 440]  # a short run's pitch is read within 10 Hz
    assert len(said) == len(wanted), said
    assert all(
        abs(float(w[1:].split(".")[0]) - pitch) <= 10 for w, pitch in zip(said, wanted, strict=True)
    ), said
    stats = h.session.track_stats[0]
    assert (stats.skips, stats.retries) == (1, 1)


class PartialsPassOverAVoiceEngine(ScriptedEngine):
    """A partial with a prefix passes over the 330 Hz voice, as a final can
    (:class:`PassesOverAVoiceEngine`); a final hears it."""

    def transcribe(self, clip: Clip, options: DecodeOptions) -> Decoded:
        decoded = super().transcribe(clip, options)
        if options.beam_size > 1 or not clip.prefix:
            return decoded
        kept = tuple(w for w in decoded.words if not w.text.strip().startswith("f330"))
        return Decoded("".join(w.text for w in kept).strip(), kept, "en", decoded.seconds)


def test_a_partial_commits_no_word_after_speech_it_passed_over() -> None:
    """Committed, the words after the speech a partial passed over would give that speech up:
    the final would start after them. They wait, and the final says every word once, in
    order."""
    h = Harness(eager_finals=False)  # an eager final (beam search) would hear the voice
    h.engine = PartialsPassOverAVoiceEngine()
    # One utterance (TEST_VAD cuts at 4 s): a word, then the voice, then words enough for the
    # partials to commit some before the utterance ends.
    speech = np.concatenate(
        [tone(0.6, freq=220), silence(0.1), tone(1.3, freq=330), silence(0.1), tone(1.6, freq=440)]
    )
    h.audio(np.concatenate([silence(0.3), speech, silence(0.8)]))
    h.text({"type": "end"})
    said = [w for w, _, _ in committed(h)]
    assert said == transcript(speech), said
    # The partials committed the word before that speech while the utterance went on; the
    # words after it waited for the final.
    segments = [m["segment"]["text"] for m in h.of_type("segment")]  # type: ignore[typeddict-item]
    assert segments == ["F220.0", " ".join(said[1:])], segments


class LeavesTheCutUnsaidEngine(ScriptedEngine):
    """The first final of two words or more says its words only up to 1.5 s before its clip's
    end (its first word at least), the last one aligned on over the rest. Whisper, decoding
    "...predecessors of the | true printed book," (the VAD cut at the bar), wrote
    "...predecessors of the", and the end of text, aligned at the clip's end, stretched "of"
    over the words it left unsaid (``streaming.alignment`` keeps it to twice the median word,
    still over the next word)."""

    def __init__(self) -> None:
        super().__init__()
        self.cut = False

    def transcribe(self, clip: Clip, options: DecodeOptions) -> Decoded:
        decoded = super().transcribe(clip, options)
        duration = len(clip.audio) / RATE
        if options.beam_size == 1 or self.cut or len(decoded.words) < 2:
            return decoded
        kept = [w for w in decoded.words if w.end <= duration - 1.5] or [decoded.words[0]]
        self.cut = True
        kept[-1] = replace(kept[-1], end=duration)
        return Decoded("".join(w.text for w in kept).strip(), tuple(kept), "en", decoded.seconds)


@pytest.mark.parametrize("interim", [False, True], ids=["finals", "partials"])
def test_words_a_final_left_unsaid_under_its_last_word_are_taken_from_the_next_decode(interim: bool) -> None:
    """The next decode, prefixed with the final's words, says the words left unsaid, under
    that last word's span. They were dropped as aligned over committed audio, and lost ("the
    true printed book," in 1 to 3 streams of 14)."""
    h = Harness(
        stream=StreamConfig(encoding="pcm_f32le", interim_results=interim),
        eager_finals=False,
        partial_interval=3.0,  # the words before the cut are not all committed before its final
    )
    h.engine = LeavesTheCutUnsaidEngine()
    speech = talk(200, 300, 400, 500, 250, 350, word=1.0)  # no pause: TEST_VAD cuts at 4 s
    h.audio(np.concatenate([silence(0.3), speech, silence(0.8)]))
    h.text({"type": "end"})
    said = [w for w, _, _ in committed(h)]
    assert said == transcript(speech), said
    assert h.engine.cut  # a final left words unsaid


class MarksForNoiseEngine(ScriptedEngine):
    """Says "..." for a clip of the 110 Hz hum, as Whisper does for a breath or a noise alone."""

    def transcribe(self, clip: Clip, options: DecodeOptions) -> Decoded:
        decoded = super().transcribe(clip, options)
        words = tuple(
            DecodedWord(" ...", w.start, w.end, 0.005) if w.text.strip().startswith("f110") else w
            for w in decoded.words
        )
        return Decoded("".join(w.text for w in words).strip(), words, "en", decoded.seconds)


def test_a_decode_of_marks_alone_heard_no_words_but_marks_among_words_are_kept() -> None:
    alone = Harness(stream=StreamConfig(encoding="pcm_f32le", interim_results=False))
    alone.engine = MarksForNoiseEngine()
    alone.audio(np.concatenate([silence(0.3), tone(1.0, freq=110), silence(0.6)]))
    alone.text({"type": "end"})
    assert committed(alone) == []
    assert alone.of_type("final")[0]["transcription"] == ""
    among = Harness(stream=StreamConfig(encoding="pcm_f32le", interim_results=False))
    among.engine = MarksForNoiseEngine()
    among.audio(np.concatenate([tone(1.0, freq=220), silence(0.1), tone(0.5, freq=110), silence(0.6)]))
    assert [w for w, _, _ in committed(among)] == ["F220.0", "f220.1", "..."]


def test_a_new_utterance_is_previewed_beside_the_previous_final_and_nothing_is_committed_twice() -> None:
    h = Harness(partial_interval=0.5, eager_finals=False)
    first, second = talk(220, word=1.0), talk(330, 440, word=1.0)
    h.audio(first)
    spoken_at = h.session.received_samples + int(0.5 * RATE)
    # In two chunks: the pause, then the new utterance's first 0.3 s.
    h.audio(np.concatenate([silence(0.5), second[: int(0.3 * RATE)]]), chunk_seconds=0.4, run_jobs=False)
    finals = [j for j in h.pending if j.kind == "final"]  # the first utterance closed...
    assert finals, "the first utterance's final should be waiting"
    h.audio(second[int(0.3 * RATE) : int(1.2 * RATE)], run_jobs=False)  # ...while the next is spoken
    previews = [j for j in h.pending if j.preview]
    assert len(previews) == 1, "one preview of the new utterance, beside the final in flight"
    [preview] = previews
    # As soon as the new speech opens an utterance, as a first partial would be.
    assert preview.end == spoken_at + int(0.3 * RATE)
    assert preview.kind == "partial"
    assert not preview.clip.prefix
    assert preview.start >= finals[0].end - RATE // 10
    h.pending.remove(preview)
    h.session.receive_result(preview.ticket, h.engine.transcribe(preview.clip, preview.options))
    h.pump(run_jobs=False)
    shown = h.of_type("partial")[-1]["segment"]["text"].split()  # type: ignore[typeddict-item]
    # After the previous utterance's words the final in flight will commit, still shown.
    assert next(w for w in shown if not w.lower().startswith("f220")).startswith("f330.0"), shown
    assert not [w for w, _, _ in committed(h) if w.startswith("f330")]  # shown, not committed
    h.pump()
    h.audio(np.concatenate([second[int(1.2 * RATE) :], silence(0.6)]))
    h.text({"type": "end"})
    assert [w for w, _, _ in committed(h)] == transcript(first, second)


def test_a_word_shorter_than_the_partial_interval_is_previewed_beside_the_previous_final() -> None:
    """ "Now, as all books": a short word and a pause, spoken while the previous utterance's
    final decodes. Its preview goes when the VAD opens the utterance, as a first partial would;
    waiting for a partial interval of speech, it never went, and the word first showed in its
    segment."""
    h = Harness(partial_interval=0.5, eager_finals=False)
    h.audio(talk(220, word=1.0))
    h.audio(np.concatenate([silence(0.5), tone(0.25, freq=330), silence(0.2)]), run_jobs=False)
    assert [j.kind for j in h.pending if not j.preview] == ["final"]
    [preview] = [j for j in h.pending if j.preview]
    assert preview.first
    assert not preview.clip.prefix


def test_a_preview_that_showed_nothing_is_decoded_once_more_when_the_speech_has_grown() -> None:
    """Its clip held a word's first sound alone (at 8 streams, "than" of "than in the same"
    decoded to nothing in 0.35 s): the first words waited for the previous final and then a
    partial with the context, 1.1 to 1.2 s after they began."""
    h = Harness(partial_interval=0.5, eager_finals=False)
    first, second = talk(220, word=1.0), talk(330, 440, word=1.0)
    h.audio(first)
    h.audio(np.concatenate([silence(0.5), second[: int(0.3 * RATE)]]), chunk_seconds=0.4, run_jobs=False)
    [preview] = [j for j in h.pending if j.preview]
    h.pending.remove(preview)
    h.session.receive_result(preview.ticket, Decoded(text="", words=(), language="en", seconds=0.0))
    h.audio(second[int(0.3 * RATE) : int(0.7 * RATE)], run_jobs=False)
    assert not [j for j in h.pending if j.preview], "not before the speech grew by the interval"
    h.audio(second[int(0.7 * RATE) : int(0.9 * RATE)], run_jobs=False)
    [again] = [j for j in h.pending if j.preview]
    assert again.end >= preview.end + int(0.5 * RATE)
    assert again.start == preview.start  # the same speech, from where it began
    h.pending.remove(again)
    h.session.receive_result(again.ticket, h.engine.transcribe(again.clip, again.options))
    h.pump(run_jobs=False)
    shown = h.of_type("partial")[-1]["segment"]["text"].split()  # type: ignore[typeddict-item]
    assert "f330.0" in shown, shown  # after the words the final in flight will commit
    h.audio(second[int(0.9 * RATE) : int(1.6 * RATE)], run_jobs=False)
    assert not [j for j in h.pending if j.preview], "one that showed words is the last"
    h.pump()
    h.audio(np.concatenate([second[int(1.6 * RATE) :], silence(0.6)]))
    h.text({"type": "end"})
    assert [w for w, _, _ in committed(h)] == transcript(first, second)


@pytest.mark.parametrize("its_final", ["waiting", "decoding"])
def test_a_preview_whose_utterance_closed_while_it_decoded_still_shows_its_words(its_final: str) -> None:
    """ "Now," and a pause, while the previous final decodes: the short utterance closes before
    its preview comes back, and its own final waits, or decodes (at 8 streams the preview waited
    0.9 s for a worker). Its words are shown until its final commits them; dropped, the word
    first showed in its segment."""
    h = Harness(partial_interval=0.5, eager_finals=False, min_silence=0.3)
    first, word = talk(220, word=1.0), tone(0.3, freq=330)
    h.audio(first)
    h.audio(silence(0.5), run_jobs=False)
    h.audio(word, chunk_seconds=0.3, run_jobs=False)  # in one chunk: the preview hears it
    [preview] = [j for j in h.pending if j.preview]
    h.audio(silence(0.5), run_jobs=False)
    assert h.session.received_samples - preview.end >= int(0.5 * RATE)  # it closed meanwhile
    h.pending.remove(preview)
    if its_final == "decoding":
        [previous] = [j for j in h.pending if j.kind == "final"]
        h.pending.remove(previous)
        h.session.receive_result(previous.ticket, h.engine.transcribe(previous.clip, previous.options))
        h.pump(run_jobs=False)
        [_] = [j for j in h.pending if j.kind == "final"]  # the word's own, in flight
    h.session.receive_result(preview.ticket, h.engine.transcribe(preview.clip, preview.options))
    h.pump(run_jobs=False)
    shown = h.of_type("partial")[-1]["segment"]["text"].split()  # type: ignore[typeddict-item]
    assert [w for w in shown if w.startswith("f330")], shown
    assert not [w for w, _, _ in committed(h) if w.startswith("f330")]  # shown, not committed
    h.pump()
    h.text({"type": "end"})
    assert [w for w, _, _ in committed(h)] == [
        *transcript(first, np.concatenate([word, silence(0.1)])),
    ]


def test_speech_resuming_after_an_eager_final_is_previewed_beside_it() -> None:
    """A pause too short to end the utterance starts an eager final; speech resumes while it
    is in flight. The resumed speech is previewed from where it resumed, shown after the
    last partial's words, and nothing is committed twice."""
    h = Harness(partial_interval=0.5, min_silence=0.5, max_utterance=30.0)
    first, second = talk(220, 260, word=0.8), talk(330, 440, word=0.8)
    gap = int(0.1 * RATE)  # talk's last gap
    h.audio(first[:-gap])
    h.audio(np.concatenate([first[-gap:], silence(0.2)]), run_jobs=False)  # its eager final is due
    [eager] = [j for j in h.pending if j.speculative]
    h.audio(second[: int(0.4 * RATE)], run_jobs=False)
    assert not [j for j in h.pending if j.preview], "not before a partial interval of new speech"
    h.audio(second[int(0.4 * RATE) : int(1.0 * RATE)], run_jobs=False)
    [preview] = [j for j in h.pending if j.preview]
    assert not preview.clip.prefix
    assert eager.end <= preview.start + RATE // 10 < eager.end + RATE // 2  # where speech resumed
    shown_before = h.of_type("partial")[-1]["segment"]["text"].split()  # type: ignore[typeddict-item]
    words_before = committed(h)
    h.pending.remove(preview)
    h.session.receive_result(preview.ticket, h.engine.transcribe(preview.clip, preview.options))
    h.pump(run_jobs=False)
    shown = h.of_type("partial")[-1]["segment"]["text"].split()  # type: ignore[typeddict-item]
    assert shown[: len(shown_before)] == shown_before, shown
    assert len(shown) > len(shown_before), shown
    assert committed(h) == words_before  # shown, not committed
    h.pump()
    h.audio(np.concatenate([second[int(1.0 * RATE) :], silence(0.8)]))
    h.text({"type": "end"})
    assert [w for w, _, _ in committed(h)] == transcript(first, second)


def run_with_decode_time(h: Harness, audio: np.ndarray, decode: float) -> list[tuple[float, float]]:
    """Stream ``audio`` with each decode taking ``decode`` seconds, one at a time per worker
    as the model would; (word end, arrival of its segment) for every word."""
    out: list[tuple[float, float]] = []
    running: list[tuple[float, Job]] = []  # (done at, job)
    step = int(0.1 * RATE)
    seen = 0
    for i in [*range(0, len(audio), step), *[len(audio)] * 30]:
        h.clock.advance(0.1)
        if i < len(audio):
            h.session.receive_bytes(audio[i : i + step].astype("<f4").tobytes())
        for done_at, job in [r for r in running if r[0] <= h.clock.now()]:
            running.remove((done_at, job))
            h.session.receive_result(job.ticket, h.engine.transcribe(job.clip, job.options))
        h.sent += h.session.messages_to_send()
        running += [(h.clock.now() + decode, job) for job in h.session.jobs_to_start()]
        seen = take_arrivals(h, seen, out)
    return out


def test_short_pauses_with_slow_decodes_do_not_hold_words_past_the_bound() -> None:
    """Commas in a long sentence: pauses too short to end the utterance, each starting an eager
    final (a full decode, slow on a CPU) that speech resuming throws away. Its decode still hears
    every word before the pause, so it counts as a partial: the words are committed in time."""
    h = Harness(partial_interval=0.5, commit_bound=1.5, max_utterance=30.0)
    speech = talk(200, 300, 400, 500, 600, 700, 800, 900, word=0.6, gap=0.2)  # 6.4 s, no real pause
    arrivals = run_with_decode_time(h, np.concatenate([speech, silence(1.0)]), decode=0.6)
    assert transcript(speech) == [w for w, _, _ in committed(h)]
    waits = sorted(arrived - end for end, arrived in arrivals)
    # Most words within the bound and the decode that commits them (and this harness's 0.1 s
    # step); none past a partial that a pause's eager final supersedes, and that eager final.
    # Before an eager final that speech resumed after counted as a partial: 2.4 s and 4.8 s.
    assert waits[len(waits) // 2] <= 1.5 + 0.1 + 1e-6, waits
    assert waits[-1] <= 1.5 + 2 * 0.6 + 0.1, waits


def preview_beside_final(h: Harness) -> tuple[np.ndarray, np.ndarray, Job, Job]:
    """A word, a pause, then two words whose start is previewed while the first word's final
    is decoding (the harness decodes nothing): the two parts, that final and that preview."""
    first, second = talk(220, word=1.0), talk(330, 440, word=1.0)
    h.audio(first)
    h.audio(np.concatenate([silence(0.5), second[: int(0.3 * RATE)]]), chunk_seconds=0.4, run_jobs=False)
    h.audio(second[int(0.3 * RATE) : int(1.2 * RATE)], run_jobs=False)
    [final] = [j for j in h.pending if j.kind == "final"]
    [preview] = [j for j in h.pending if j.preview]
    return first, second, final, preview


def test_a_preview_that_returns_after_the_final_still_shows_the_first_words() -> None:
    """Under load the previous final returns first and the new utterance's partial (with the
    context) is queued behind others: the preview, decoded already, shows the words meanwhile."""
    h = Harness(partial_interval=0.5, eager_finals=False)
    first, second, final, preview = preview_beside_final(h)
    assert preview.first
    h.pending.remove(final)
    h.session.receive_result(final.ticket, h.engine.transcribe(final.clip, final.options))
    h.pump(run_jobs=False)
    [partial] = [j for j in h.pending if j.kind == "partial" and not j.preview]  # with the context
    # First as well: the preview may yet wait for a worker, or show nothing.
    assert partial.first
    shown = len(h.of_type("partial"))
    h.pending.remove(preview)
    h.session.receive_result(preview.ticket, h.engine.transcribe(preview.clip, preview.options))
    h.pump(run_jobs=False)
    assert len(h.of_type("partial")) == shown + 1
    assert h.of_type("partial")[-1]["segment"]["text"].startswith("f330.0")  # type: ignore[typeddict-item]
    h.pump()
    h.audio(np.concatenate([second[int(1.2 * RATE) :], silence(0.6)]))
    h.text({"type": "end"})
    assert [w for w, _, _ in committed(h)] == transcript(first, second)


def test_decodes_carry_at_most_max_context_and_partials_fit_their_window() -> None:
    """A decode's prefix holds the committed words of the last ``max_context`` seconds before
    the first word not committed (the model reads a prefix token by token), and a partial's
    clip fits its smaller encoder window; nothing is lost for it."""
    speech = talk(*range(200, 1400, 100), word=0.8)  # 10.8 s without a pause
    audio = np.concatenate([speech, silence(0.8), talk(1500, 1600, word=0.8), silence(1.0)])
    longest: dict[float, int] = {}
    for context in (1.5, 14.0):
        h = Harness(
            partial_interval=0.5,
            commit_bound=1.5,
            max_utterance=30.0,
            max_context=context,
            partial_encoder_window=10.0,
        )
        h.audio(audio)
        h.text({"type": "end"})
        assert [w for w, _, _ in committed(h)] == transcript(audio)
        for job, _ in h.engine_jobs:
            if job.kind == "partial":
                assert len(job.clip.audio) <= 9 * RATE
        longest[context] = max(len(job.clip.prefix.split()) for job, _ in h.engine_jobs)
    # The scripted words are 0.5 s long at most, 0.1 s apart: 1.5 s holds at most four.
    assert 0 < longest[1.5] <= 4 < longest[14.0], longest


@pytest.mark.parametrize("on", ["finals", "partials"])
def test_while_the_workers_are_behind_decodes_are_cheaper_and_lose_nothing(on: str) -> None:
    """The scheduler says the workers are behind. On finals, the decodes asked for meanwhile
    carry at most ``load_context`` of context (cheaper, the prefix being forced token by token);
    on partials, partials take the smaller ``load_partial_encoder_window`` (cheaper for the
    encoder) and keep their context. Counted; once it says they caught up, the whole
    ``max_context`` and window again."""
    speech = talk(*range(200, 1400, 100), word=0.8)  # 10.8 s without a pause
    audio = np.concatenate([speech, silence(0.8), talk(1500, 1600, word=0.8), silence(1.0)])
    behind = [Behind()]
    h = Harness(
        partial_interval=0.5,
        commit_bound=1.5,
        max_utterance=30.0,
        max_context=14.0,
        load_context=1.5,
        behind=lambda: behind[0],
    )
    half = len(speech) // 2
    h.audio(audio[:half])
    early = len(h.engine_jobs)
    behind[0] = Behind(finals=on == "finals", partials=on == "partials")
    h.audio(audio[half:])
    h.text({"type": "end"})
    assert [w for w, _, _ in committed(h)] == transcript(audio)
    late = h.engine_jobs[early:]
    words = [len(job.clip.prefix.split()) for job, _ in h.engine_jobs]
    # The scripted words are 0.5 s long at most, 0.1 s apart: 1.5 s holds at most four.
    assert max(words[:early]) > 4
    windows = {(job.kind, i >= early, job.options.encoder_window) for i, (job, _) in enumerate(h.engine_jobs)}
    assert {w[2] for w in windows if w[0] == "final"} == {15.0}
    if on == "finals":
        assert 0 < max(words[early:]) <= 4, words
        assert {w for w in windows if w[0] == "partial"} == {
            ("partial", False, 15.0),
            ("partial", True, 15.0),
        }
        assert h.session.track_stats[0].lean == len(late)
    else:
        assert max(words[early:]) > 4
        assert {w for w in windows if w[0] == "partial"} == {
            ("partial", False, 15.0),
            ("partial", True, 10.0),
        }
        partials = [job for job, _ in late if job.kind == "partial"]
        assert all(len(job.clip.audio) <= 9 * RATE for job in partials)  # fits with the margin
        assert h.session.track_stats[0].lean == len(partials)


class StopAtTheEndEngine(ScriptedEngine):
    """Ends every decode's text with a full stop, as Whisper does where its clip stops, be it at
    the end of a sentence or at a comma's pause (or with ``end``: "..." where a partial's clip
    cut a sentence)."""

    def __init__(self, end: str = ".") -> None:
        super().__init__()
        self.end = end

    def transcribe(self, clip: Clip, options: DecodeOptions) -> Decoded:
        decoded = super().transcribe(clip, options)
        if not decoded.words:
            return decoded
        *rest, last = decoded.words
        words = (*rest, DecodedWord(last.text + self.end, last.start, last.end, last.probability))
        return Decoded("".join(w.text for w in words).strip(), words, "en", decoded.seconds)


@pytest.mark.parametrize("end", [".", "...", "\u2026", "?"])
def test_a_stop_written_where_a_clip_ended_is_not_forced_on_the_next_decode(end: str) -> None:
    h = Harness(partial_interval=0)
    h.engine = StopAtTheEndEngine(end)
    h.audio(np.concatenate([talk(220, word=0.8), silence(0.5), talk(330, word=0.8), silence(0.6)]))
    # Sent as the model wrote it (words are final when sent)...
    assert [w for w, _, _ in committed(h)] == ["F220.0", f"f220.1{end}", "f330.0", f"f330.1{end}"]
    # ...but the next decode hears for itself whether the sentence goes on: forced on it, the
    # stop made every comma's pause a sentence end, and the words after it a new sentence.
    assert h.engine.clips[-1].prefix == "F220.0 f220.1"


class MarkAfterThePrefixEngine(StopAtTheEndEngine):
    """Ends its prefix's last word with ``mark`` before its own words, as Whisper does once it
    hears what follows: "," where the sentence goes on, "." where it ended (a greedy partial
    may go on in lower case even so)."""

    def __init__(self, mark: str, *, capital: bool = False, end: str = ".") -> None:
        super().__init__(end)
        self.mark = mark
        self.capital = capital  # the first word after the prefix begins with a capital

    def transcribe(self, clip: Clip, options: DecodeOptions) -> Decoded:
        decoded = super().transcribe(clip, options)
        if not clip.prefix or not decoded.words:
            return decoded
        first, *rest = decoded.words
        if self.capital:
            first = replace(first, text=first.text.upper())
        words = (first, *rest)
        text = "".join(w.text for w in words).strip()
        return replace(decoded, text=f"{self.mark} {text}", words=words)


@pytest.mark.parametrize(("end", "mark"), [(".", ","), ("...", ""), ("...", ",")])
def test_the_final_ends_a_word_as_the_decode_that_heard_what_follows_it_does(end: str, mark: str) -> None:
    h = Harness(partial_interval=0)
    h.engine = MarkAfterThePrefixEngine(mark, end=end)
    h.audio(np.concatenate([talk(220, word=0.8), silence(0.5), talk(330, word=0.8), silence(0.6)]))
    h.text({"type": "end"})
    sent = [m["segment"]["text"] for m in h.of_type("segment")]  # type: ignore[typeddict-item]
    assert sent == [f"F220.0 f220.1{end}", f"f330.0 f330.1{end}"]  # words are final when sent
    [final] = h.of_type("final")
    assert final["transcription"] == f"F220.0 f220.1{mark} f330.0 f330.1{end}"  # type: ignore[typeddict-item]
    words = final["response"]["word_segments"]  # type: ignore[typeddict-item]
    assert [w["word"] for w in words] == ["F220.0", f"f220.1{mark}", "f330.0", f"f330.1{end}"]


def test_later_decodes_carry_a_word_as_the_decode_that_heard_what_follows_it_ended_it() -> None:
    """The comma that replaced a clip's stop is what the context goes on with, not the stop: a
    stop left in the prefix read as a sentence end to every decode after it."""
    h = Harness(partial_interval=0)
    h.engine = MarkAfterThePrefixEngine(",")
    pause = silence(0.5)
    h.audio(np.concatenate([talk(220, word=0.8), pause, talk(330, word=0.8), pause, talk(440, word=0.8)]))
    h.audio(silence(0.6))
    assert h.engine.clips[-1].prefix == "F220.0 f220.1, f330.0 f330.1"
    assert [w for w, _, _ in committed(h)][:4] == ["F220.0", "f220.1.", "f330.0", "f330.1."]  # as sent
    h.text({"type": "end"})
    [final] = h.of_type("final")
    assert final["transcription"] == "F220.0 f220.1, f330.0 f330.1, f440.0 f440.1."  # type: ignore[typeddict-item]


class GoesOnWithThePrefixEngine(MarkAfterThePrefixEngine):
    """Goes on with its prefix's last word, ``letters`` glued to it, before its own words, as
    Whisper does when the clip that wrote that word cut it short ("fount" going on "s were
    bad")."""

    def __init__(self, letters: str, mark: str, *, end: str) -> None:
        super().__init__(mark, end=end)
        self.letters = letters

    def transcribe(self, clip: Clip, options: DecodeOptions) -> Decoded:
        decoded = super().transcribe(clip, options)
        if not clip.prefix or not decoded.words:
            return decoded
        return replace(decoded, text=self.letters + decoded.text.lstrip(), continued=self.letters)


@pytest.mark.parametrize(("end", "mark"), [("", ""), ("", ","), (".", ","), (".", "")])
def test_the_final_completes_a_word_its_clip_cut_short_as_the_next_decode_goes_on_with_it(
    end: str, mark: str
) -> None:
    """Sent as written ("fount"), in the final as the decode that heard the rest has it
    ("founts"), and carried so by later decodes; dropped, the letters were lost."""
    h = Harness(partial_interval=0)
    h.engine = GoesOnWithThePrefixEngine("s", mark, end=end)
    pause = silence(0.5)
    h.audio(np.concatenate([talk(220, word=0.8), pause, talk(330, word=0.8), pause, talk(440, word=0.8)]))
    h.audio(silence(0.6))
    assert [w for w, _, _ in committed(h)][:2] == ["F220.0", f"f220.1{end}"]  # as sent
    assert h.engine.clips[-1].prefix == f"F220.0 f220.1s{mark} f330.0 f330.1"
    h.text({"type": "end"})
    [final] = h.of_type("final")
    assert final["transcription"] == f"F220.0 f220.1s{mark} f330.0 f330.1s{mark} f440.0 f440.1{end}"  # type: ignore[typeddict-item]


def test_words_after_the_model_s_own_full_stop_begin_a_sentence() -> None:
    h = Harness(partial_interval=0)
    h.engine = MarkAfterThePrefixEngine(".")
    h.audio(np.concatenate([talk(220, word=0.8), silence(0.5), talk(330, word=0.8), silence(0.6)]))
    assert [w for w, _, _ in committed(h)] == ["F220.0", "f220.1.", "F330.0", "f330.1."]
    assert not h.of_type("segment")[-1]["continues"]


def test_no_mark_then_a_capital_leaves_the_stop_as_it_was() -> None:
    h = Harness(partial_interval=0)
    h.engine = MarkAfterThePrefixEngine("", capital=True)
    h.audio(np.concatenate([talk(220, word=0.8), silence(0.5), talk(330, word=0.8), silence(0.6)]))
    h.text({"type": "end"})
    assert [w for w, _, _ in committed(h)] == ["F220.0", "f220.1.", "F330.0", "f330.1."]
    [final] = h.of_type("final")
    assert final["transcription"] == "F220.0 f220.1. F330.0 f330.1."  # type: ignore[typeddict-item]


def test_a_channel_s_first_word_begins_a_sentence_on_screen_and_in_the_final() -> None:
    # The scripted engine, like Whisper on a short clip, writes every word in lower case.
    h = Harness(partial_interval=0.5)
    h.audio(np.concatenate([talk(220, 330, word=0.8), silence(0.6), talk(440, word=0.8), silence(0.6)]))
    h.text({"type": "end"})
    partials = [m["segment"]["text"] for m in h.of_type("partial") if m["segment"]["text"]]  # type: ignore[typeddict-item]
    assert partials[0].startswith("F220.0"), partials
    final = h.of_type("final")[-1]
    # Only the first: the model's own case stands after it (a later utterance may go on a sentence).
    assert final["transcription"] == "F220.0 f220.1 f330.0 f330.1 f440.0 f440.1"  # type: ignore[typeddict-item]


@pytest.mark.parametrize(
    ("mark", "ended"), [(".", "f220.1."), ("?", "f220.1?"), (",", "f220.1,"), ("...", "f220.1")]
)
def test_a_word_written_with_no_mark_takes_the_one_the_next_decode_writes_after_it(
    mark: str, ended: str
) -> None:
    """The model wrote "of the paper" where its clip ended, and the next decode ". He began":
    the final ends the sentence there, and later decodes carry the mark (left out, the context
    taught the model to write none). An ellipsis at the join adds nothing: it says a clip cut
    the sentence there."""
    h = Harness(partial_interval=0)
    h.engine = MarkAfterThePrefixEngine(mark, end="")
    pause = silence(0.5)
    h.audio(np.concatenate([talk(220, word=0.8), pause, talk(330, word=0.8), pause, talk(440, word=0.8)]))
    h.audio(silence(0.6))
    new_sentence = ended.endswith((".", "?"))
    second = "F330.0" if new_sentence else "f330.0"
    assert [w for w, _, _ in committed(h)][:3] == ["F220.0", "f220.1", second]  # as sent
    assert h.engine.clips[-1].prefix == f"F220.0 {ended} {second} f330.1"
    segments = h.of_type("segment")
    assert segments[1]["continues"] is not new_sentence  # type: ignore[typeddict-item]
    h.text({"type": "end"})
    [final] = h.of_type("final")
    third = "F440.0" if new_sentence else "f440.0"
    transcription = f"F220.0 {ended} {second} {ended.replace('220', '330')} {third} f440.1"
    assert final["transcription"] == transcription  # type: ignore[typeddict-item]
    assert len(final["response"]["segments"]) == (3 if new_sentence else 1)  # type: ignore[typeddict-item]


class LoopingPartialsEngine(ScriptedEngine):
    """Every partial falls into a loop, as a greedy decode does at times at a new speaker's turn,
    and its first words are the loop's, not the speech's ("It will be a bit too. It will be a
    bit too." for "It will be seen"); finals (with their fallback) read the speech."""

    def transcribe(self, clip: Clip, options: DecodeOptions) -> Decoded:
        decoded = super().transcribe(clip, options)
        if options.temperature_fallback or not decoded.words:
            return decoded
        first = decoded.words[0]
        loop = [DecodedWord(" bogus.", first.start, first.end, 0.5)]
        loop += [DecodedWord(" bogus.", w.start, w.end, 0.5) for w in decoded.words[1:]]
        return replace(decoded, text=" ".join(["bogus."] * 8), words=tuple(loop))


def test_a_partial_that_loops_shows_and_commits_nothing() -> None:
    h = Harness(partial_interval=0.5)
    h.engine = LoopingPartialsEngine()
    audio = np.concatenate([talk(220, 330, 440, word=0.8), silence(0.6), talk(550, word=0.8), silence(0.6)])
    h.audio(audio)
    h.text({"type": "end"})
    shown = [m["segment"]["text"] for m in (*h.of_type("partial"), *h.of_type("segment"))]  # type: ignore[typeddict-item]
    assert not any("bogus" in text for text in shown), shown
    assert [w for w, _, _ in committed(h)] == transcript(audio)  # the finals said every word
    assert h.session.track_stats[0].loops >= 2


def test_an_agreed_word_waits_until_a_partial_has_heard_past_it() -> None:
    # Two greedy partials agree on a wrong word heard with too little after it: an agreed word is
    # committed only by a partial that heard 0.5 s past its end (bench.replay: 0.5 s, not 0.3).
    h = Harness(partial_interval=0.5, commit_bound=10.0)  # no time bound: agreement only
    arrivals = run_with_arrivals(h, talk(220, 330, 440, 550, 660, word=0.4, gap=0.1))
    assert arrivals, "agreed words were not committed"
    heard_past = [arrived - end for end, arrived in arrivals]
    # docs/protocol.md: committed once it is 0.5 s behind the newest audio.
    assert min(heard_past) >= 0.5 - 0.01, heard_past


def test_after_a_partial_loops_its_utterance_s_partials_search_as_finals_do() -> None:
    """A greedy partial that loops loops again on the same speech (a call's "The unit. The unit.
    The unit.", four partials running, its words 2.8 s late): the utterance's later partials
    are decoded with beam search and fallback, and its words still meet their bound. The next
    utterance's partials are greedy again."""
    h = Harness(partial_interval=0.5, commit_bound=1.5, max_utterance=30.0)
    h.engine = LoopingPartialsEngine()
    first, second = talk(200, 300, 400, 500, 600, 700, word=0.5), talk(800, 900, word=0.5)
    looped_in = np.concatenate([first, silence(1.0)])
    arrivals = run_with_arrivals(h, np.concatenate([looped_in, second, silence(1.0)]))
    assert [w for w, _, _ in committed(h)] == transcript(first, second)
    waits = [at - end for end, at in arrivals if end < len(first) / RATE]
    assert max(waits) <= 1.5 + 0.1, waits
    partials = [job for job, _ in h.engine_jobs if job.kind == "partial" and not job.preview]
    searched = [(job.options.beam_size, job.options.temperature_fallback) for job in partials]
    of_first = [s for job, s in zip(partials, searched, strict=True) if job.end <= len(first)]
    of_second = [s for job, s in zip(partials, searched, strict=True) if job.end > len(looped_in)]
    assert of_first[0] == (1, False), of_first
    assert set(of_first[1:]) == {(5, True)}, of_first
    assert of_second[0] == (1, False), of_second


class LoopingContextEngine(LoopingPartialsEngine):
    """Partials that carry a context loop; a preview (no context) reads the speech."""

    def transcribe(self, clip: Clip, options: DecodeOptions) -> Decoded:
        if not clip.prefix:
            return ScriptedEngine.transcribe(self, clip, options)
        return super().transcribe(clip, options)


def test_a_preview_still_shows_its_words_when_the_partial_beside_it_loops() -> None:
    """The partial with the context comes back first and loops: it shows nothing and makes
    nothing stale, so the preview of the same speech, back after it, still shows its words."""
    h = Harness(partial_interval=0.5, eager_finals=False)
    h.engine = LoopingContextEngine()
    _, _, final, preview = preview_beside_final(h)
    h.pending.remove(final)
    h.session.receive_result(final.ticket, h.engine.transcribe(final.clip, final.options))
    h.pump(run_jobs=False)
    [partial] = [j for j in h.pending if j.kind == "partial" and not j.preview]
    assert partial.clip.prefix  # it carries the first utterance's words, and loops
    shown = len(h.of_type("partial"))
    del h.pending[next(i for i, j in enumerate(h.pending) if j is partial)]
    h.session.receive_result(partial.ticket, h.engine.transcribe(partial.clip, partial.options))
    h.pump(run_jobs=False)
    assert len(h.of_type("partial")) == shown  # the loop showed nothing
    del h.pending[next(i for i, j in enumerate(h.pending) if j is preview)]
    h.session.receive_result(preview.ticket, h.engine.transcribe(preview.clip, preview.options))
    h.pump(run_jobs=False)
    assert len(h.of_type("partial")) == shown + 1
    assert h.of_type("partial")[-1]["segment"]["text"].startswith("f330.0")  # type: ignore[typeddict-item]
    assert h.session.track_stats[0].loops == 1


def test_the_agreed_words_open_both_partials_and_lie_far_enough_behind_the_clip_s_end() -> None:
    def word(text: str, end: float) -> Spoken:
        return Spoken(raw=f" {text}", start=round((end - 0.3) * RATE), end=round(end * RATE), probability=0.9)

    before = [word("the", 0.5), word("wood", 1.0), word("cutter", 1.4)]
    now = [word("The", 0.5), word("wood,", 1.0), word("cutters", 1.5), word("were", 1.8)]
    assert agreement.agreed(before, now, clip_end=2 * RATE) == 2  # case and marks aside
    assert agreement.agreed(before, now, clip_end=round(1.4 * RATE)) == 1  # "wood" heard 0.4 s past
    assert agreement.agreed(before[1:], now, clip_end=2 * RATE) == 0  # agreement opens both
    assert agreement.settled(now, 2, limit=round(1.5 * RATE)) == 3  # and what ends by the limit
    assert agreement.settled(now, 0, limit=round(0.9 * RATE)) == 1
