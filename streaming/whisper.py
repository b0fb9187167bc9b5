"""The Whisper engine: faster-whisper's model on CTranslate2, driven in batches.

Hallucination guards live here: the model's own no-speech and compression-ratio checks with
the temperature fallback, and a decode that only ends its prefix decoded on.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streaming import alignment
from streaming.audio import Samples
from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.engine import (
    FRAMES_PER_SECOND,
    MAX_FRAMES,
    WINDOW_MARGIN_FRAMES,
    Clip,
    Decoded,
    DecodedWord,
    DecodeOptions,
    Thresholds,
    has_word,
)

logger = logging.getLogger(__name__)

FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
BEST_OF = 5  # samples per fallback temperature
# The prefix is at most half of the decoder's context, as Whisper's own prompts are.
MAX_PREFIX_TOKENS = 200
# Read speech runs at up to about 10 tokens a second (the fastest clip of the shared data has
# 9.8). A decode may write 15 a second of its clip's audio and a few more: room for any
# speech, while a repetition loop ("1469, 1469, ...") stops there instead of at the decoder's
# 224 tokens (a greedy partial of 2 s ran five times its usual time to get there).
TOKENS_PER_SECOND_OF_AUDIO = 15
SPARE_TOKENS = 16


@dataclass
class _Hypothesis:
    tokens: list[int]  # after the prefix
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float


class WhisperEngine:
    """faster-whisper's model and tokenizer on CTranslate2, driven in batches.

    faster-whisper's own ``transcribe`` decodes one recording at a time and pads every window
    to 30 s. Here the utterances of several streams are encoded and decoded in one call each,
    text only (the VAD already cut the audio, so no timestamp tokens are needed), and words
    are aligned in one ``align`` call over the whole batch (:mod:`streaming.alignment`). The
    encoder window is the options'
    ``encoder_window`` seconds, or the longest utterance plus a margin: the encoder's cost
    grows with the window, and on utterances of at most 12 s a 15 s window transcribes as well
    as 30 s (docs/benchmarks.md). The temperature fallback runs, batched too, on the items
    whose greedy or beam decode failed the guards.
    """

    def __init__(
        self,
        model_path: str,
        *,
        name: str,
        device: str,
        compute_type: str,
        cpu_threads: int,
        workers: int,
        thresholds: Thresholds,
    ) -> None:
        from faster_whisper import WhisperModel  # heavy: imported where the model is loaded

        self.device = resolve_device(device)
        if compute_type == "default":
            compute_type = "float16" if self.device == "cuda" else "int8"
        self._name = name
        self._thresholds = thresholds
        self.compute_type = compute_type
        self._model = WhisperModel(
            model_path,
            device=self.device,
            compute_type=compute_type,
            # CTranslate2 runs ``workers`` calls at once, from as many threads, each on its
            # own share of the CPU threads (0: CTranslate2's own default).
            cpu_threads=max(cpu_threads // workers, 1) if cpu_threads else 0,
            num_workers=workers,
            local_files_only=False,
        )
        self._languages = frozenset(self._model.supported_languages)
        self._tokenizers: dict[tuple[str | None, str], Any] = {}
        logger.info(
            "loaded model %s on %s (%s, %d workers, %d languages)",
            name,
            self.device,
            compute_type,
            workers,
            len(self._languages),
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def multilingual(self) -> bool:
        return bool(self._model.model.is_multilingual)

    @property
    def languages(self) -> frozenset[str]:
        return self._languages

    def transcribe_batch(self, clips: Sequence[Clip], options: DecodeOptions) -> list[Decoded]:
        if not clips:
            return []
        started = time.perf_counter()
        audios = [clip.audio for clip in clips]
        for audio in audios:
            if audio.ndim != 1:
                raise ValueError(f"a clip is mono audio, not of shape {audio.shape}")
        features = self._features(audios, options.encoder_window)
        encoded = self._model.encode(features)
        languages = self._languages_of(encoded, len(audios), options)
        tokenizers = [self._tokenizer(language, options.task) for language in languages]
        prefixes = [
            tokenizer.encode(" " + clip.prefix.strip())[-MAX_PREFIX_TOKENS:] if clip.prefix.strip() else []
            for tokenizer, clip in zip(tokenizers, clips, strict=True)
        ]
        prompts = [
            self._prompt(tokenizer, options, prefix)
            for tokenizer, prefix in zip(tokenizers, prefixes, strict=True)
        ]
        # Every finished hypothesis of the beam comes back (at no extra cost): where the best
        # has no words, the next best with words may spare a second decode (``_go_on``).
        results = self._generate(
            encoded,
            prompts,
            tokenizers[0],
            max_length=self._max_length(prompts, audios, options.beam_size),
            beam_size=options.beam_size,
            num_hypotheses=options.beam_size,
        )
        hypotheses = [
            self._hypothesis(t, r, 0, len(p)) for t, r, p in zip(tokenizers, results, prefixes, strict=True)
        ]
        searched = list(hypotheses)  # before a fallback replaces any
        if options.temperature_fallback:
            self._fall_back(features, tokenizers, prompts, prefixes, hypotheses)
        self._go_on(
            hypotheses,
            searched,
            results,
            encoded=encoded,
            features=features,
            audios=audios,
            tokenizers=tokenizers,
            options=options,
            prefixes=prefixes,
        )
        silent = [self._silent(h) for h in hypotheses]
        words: list[tuple[DecodedWord, ...]] = [()] * len(audios)
        if options.word_timestamps:
            words = alignment.align(
                self._model.model,
                encoded,
                audios=audios,
                tokenizers=tokenizers,
                prefixes=prefixes,
                tokens=[[] if s else h.tokens for s, h in zip(silent, hypotheses, strict=True)],
            )
        share = (time.perf_counter() - started) / len(audios)
        return [
            Decoded(
                text="" if quiet else h.text,
                words=() if quiet else w,
                language=tokenizer.language_code,
                seconds=share,
                continued="" if quiet else alignment.continued(tokenizer, prefix, h.tokens),
            )
            for h, quiet, w, tokenizer, prefix in zip(
                hypotheses, silent, words, tokenizers, prefixes, strict=True
            )
        ]

    # ------------------------------------------------------------------ steps

    def _features(self, audios: Sequence[Samples], window: float) -> Any:
        from faster_whisper.audio import pad_or_trim

        raw = [self._model.feature_extractor(audio) for audio in audios]
        longest = max(f.shape[-1] for f in raw)
        frames = min(max(round(window * FRAMES_PER_SECOND), longest + WINDOW_MARGIN_FRAMES), MAX_FRAMES)
        return np.stack([pad_or_trim(f, frames) for f in raw]).astype(np.float32)

    def _languages_of(self, encoded: Any, count: int, options: DecodeOptions) -> list[str | None]:
        if not self.multilingual:
            return ["en"] * count
        if options.language is not None:
            return [options.language] * count
        detected = self._model.model.detect_language(encoded)
        return [scores[0][0][2:-2] for scores in detected]

    def _tokenizer(self, language: str | None, task: str) -> Any:
        from faster_whisper.tokenizer import Tokenizer

        if not self.multilingual:
            language, task = "en", "transcribe"
        key = (language, task)
        if key not in self._tokenizers:
            # Two workers may both build one; setdefault keeps the first, and both are equal.
            self._tokenizers.setdefault(
                key, Tokenizer(self._model.hf_tokenizer, self.multilingual, task=task, language=language)
            )
        return self._tokenizers[key]

    def _prompt(self, tokenizer: Any, options: DecodeOptions, prefix: list[int]) -> list[int]:
        """Whisper's prompt: previous text and hotwords, the task tokens, then the forced prefix.
        (faster-whisper's ``get_prompt`` drops the hotwords when there is a prefix.)"""
        half = self._model.max_length // 2
        previous = tokenizer.encode(" " + options.prompt.strip()) if options.prompt else []
        hotwords = tokenizer.encode(" " + options.hotwords.strip()) if options.hotwords else []
        prompt: list[int] = []
        if previous or hotwords:
            prompt = [tokenizer.sot_prev, *[*hotwords, *previous][-(half - 1) :]]
        return [*prompt, *tokenizer.sot_sequence, tokenizer.no_timestamps, *prefix]

    def _max_length(self, prompts: Sequence[list[int]], audios: Sequence[Samples], beam_size: int) -> int:
        """CTranslate2's ``max_length`` for a batch: for a greedy decode, room for every item's
        prompt and for what its audio can hold (CTranslate2 lets a Whisper decode write half its
        ``max_length``, the forced prefix included).

        A beam search, and the fallback's sampling, keep the decoder's whole length: their
        hypotheses are ranked, and a loop cut short still scores above the finished hypotheses
        that would outlast it (a final read "1469, 1469, 1469, ..." where the whole length gave
        "1469.")."""
        if beam_size > 1:
            return int(self._model.max_length)
        room = max(
            len(prompt) + math.ceil(len(audio) / SAMPLE_RATE * TOKENS_PER_SECOND_OF_AUDIO) + SPARE_TOKENS
            for prompt, audio in zip(prompts, audios, strict=True)
        )
        return int(min(2 * room, self._model.max_length))

    def _suppressed(self, tokenizer: Any) -> list[int]:
        from faster_whisper.transcribe import get_suppressed_tokens

        return list(get_suppressed_tokens(tokenizer, [-1]))

    def _hypothesis(self, tokenizer: Any, result: Any, index: int, prefix: int) -> _Hypothesis:
        from faster_whisper.transcribe import get_compression_ratio

        # CTranslate2 returns the forced prefix too: only what follows it is new.
        tokens = [t for t in result.sequences_ids[index][prefix:] if t < tokenizer.eot]
        # faster-whisper's recovery of the average log probability from CTranslate2's score
        # (length penalty 1): the score is the sum over the tokens divided by their count.
        length = len(result.sequences_ids[index])
        avg_logprob = result.scores[index] * length / (length + 1)
        text = tokenizer.decode(tokens).strip()
        return _Hypothesis(
            tokens=tokens,
            text=text,
            avg_logprob=float(avg_logprob),
            no_speech_prob=float(result.no_speech_prob),
            compression_ratio=get_compression_ratio(text) if text else 0.0,
        )

    def _silent(self, hypothesis: _Hypothesis) -> bool:
        """faster-whisper's no-speech rule: likely silence, and not confidently decoded."""
        return (
            hypothesis.no_speech_prob > self._thresholds.no_speech
            and hypothesis.avg_logprob < self._thresholds.log_prob
        )

    def _failed(self, hypothesis: _Hypothesis) -> bool:
        if self._silent(hypothesis):
            return False
        return (
            hypothesis.compression_ratio > self._thresholds.compression_ratio
            or hypothesis.avg_logprob < self._thresholds.log_prob
        )

    def _fall_back(
        self,
        features: Any,
        tokenizers: list[Any],
        prompts: list[list[int]],
        prefixes: list[list[int]],
        hypotheses: list[_Hypothesis],
    ) -> None:
        """Re-decode the failed items by sampling at rising temperatures (Whisper's fallback),
        keeping each item's best hypothesis; only the failed items are encoded again."""
        failed = [i for i, h in enumerate(hypotheses) if self._failed(h)]
        tried: dict[int, list[_Hypothesis]] = {i: [hypotheses[i]] for i in failed}
        for temperature in FALLBACK_TEMPERATURES[1:]:
            if not failed:
                break
            encoded = self._model.encode(np.ascontiguousarray(features[failed]))
            results = self._generate(
                encoded,
                [prompts[i] for i in failed],
                tokenizers[failed[0]],
                max_length=self._model.max_length,
                beam_size=1,
                num_hypotheses=BEST_OF,
                sampling_topk=0,
                sampling_temperature=temperature,
            )
            still: list[int] = []
            for i, result in zip(failed, results, strict=True):
                samples = [
                    self._hypothesis(tokenizers[i], result, k, len(prefixes[i]))
                    for k in range(len(result.sequences_ids))
                ]
                best = max(samples, key=lambda h: h.avg_logprob)
                tried[i].append(best)
                hypotheses[i] = best
                if self._failed(best):
                    still.append(i)
            failed = still
        for i in failed:
            # Every temperature failed: keep the most likely text that does not loop.
            candidates = [h for h in tried[i] if h.compression_ratio <= self._thresholds.compression_ratio]
            hypotheses[i] = max(candidates or tried[i], key=lambda h: h.avg_logprob)
            if hypotheses[i].compression_ratio > self._thresholds.compression_ratio:
                logger.debug("dropped looping text (ratio %.2f)", hypotheses[i].compression_ratio)
                hypotheses[i] = _Hypothesis(
                    [], "", hypotheses[i].avg_logprob, hypotheses[i].no_speech_prob, 0.0
                )

    def _go_on(
        self,
        hypotheses: list[_Hypothesis],
        searched: list[_Hypothesis],
        results: list[Any],
        *,
        encoded: Any,
        features: Any,
        audios: Sequence[Samples],
        tokenizers: list[Any],
        options: DecodeOptions,
        prefixes: list[list[int]],
    ) -> None:
        """Decode once more, its marks forced too, an item whose new text is marks alone: the
        model ended the prefix's sentence (a prefix without the stop its clip's end had put
        there) and stopped before the speech after it ("." for a 13 s clip whose last 4 s were
        new speech: 5 of 41 finals of the 5-minute LJ file). Forced, the mark is behind it.

        A beam search's next best hypothesis that goes on after the same marks with words
        (``results``, while the best is the search's own and not a fallback's) is taken instead
        where it did not fail: the beam went on past the mark already, and the second decode
        is spared (". Now..." after "." in 5 beams)."""
        ended = []
        for i, h in enumerate(hypotheses):
            if not (prefixes[i] and h.tokens and not has_word(h.text)):
                continue
            if h is searched[i]:
                # Read only here, for the few items that need them.
                others = (
                    self._hypothesis(tokenizers[i], results[i], k, len(prefixes[i]))
                    for k in range(1, len(results[i].sequences_ids))
                )
                worded = next(
                    (
                        a
                        for a in others
                        if a.tokens[: len(h.tokens)] == h.tokens and has_word(a.text) and not self._failed(a)
                    ),
                    None,
                )
                if worded is not None:
                    hypotheses[i] = worded
                    continue
            ended.append(i)
        if not ended:
            return
        if len(ended) < len(hypotheses):  # CTranslate2 cannot take a part of the encoded batch
            encoded = self._model.encode(np.ascontiguousarray(features[ended]))
        prompts = [self._prompt(tokenizers[i], options, [*prefixes[i], *hypotheses[i].tokens]) for i in ended]
        results = self._generate(
            encoded,
            prompts,
            tokenizers[ended[0]],
            max_length=self._max_length(prompts, [audios[i] for i in ended], options.beam_size),
            beam_size=options.beam_size,
        )
        for i, result in zip(ended, results, strict=True):
            # Counted from the prefix as given: the marks lead the new text, as they would have.
            again = self._hypothesis(tokenizers[i], result, 0, len(prefixes[i]))
            if has_word(again.text):
                hypotheses[i] = again

    def _generate(
        self, encoded: Any, prompts: list[list[int]], tokenizer: Any, *, max_length: int, **search: Any
    ) -> Any:
        return self._model.model.generate(
            encoded,
            prompts,
            max_length=max_length,
            suppress_blank=True,
            suppress_tokens=self._suppressed(tokenizer),
            return_scores=True,
            return_no_speech_prob=True,
            **search,
        )


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
