"""Configuration: one frozen :class:`Config` for the server, one :class:`StreamConfig` per stream.

Every field of :class:`Config` is one CLI flag (``--max-sessions``) and one environment
variable (``STREAMING_MAX_SESSIONS``); :mod:`streaming.cli` derives both from the fields, so
the three can never drift apart. Each default is written once, here. Nothing in this module
does I/O.

:class:`StreamConfig` is what a client chooses in the query string of ``/v1/stream``; it is
parsed and validated once, before any audio is taken.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from streaming.errors import InvalidParameter
from streaming.logs import LEVELS, parse_levels

Encoding = Literal["pcm_s16le", "pcm_f32le", "mulaw", "alaw"]
Task = Literal["transcribe", "translate"]
Device = Literal["auto", "cpu", "cuda"]

ENCODINGS: tuple[Encoding, ...] = get_args(Encoding)
TASKS: tuple[Task, ...] = get_args(Task)
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
MODEL_SAMPLE_RATE = 16000  # what Whisper and silero-vad take: every stream is resampled to it
MAX_DIARIZED_SPEAKERS = 10  # most speakers diarize=true tells apart on one channel


def _opt(default: Any, help: str, *, choices: tuple[str, ...] | None = None, secret: bool = False) -> Any:
    """A config field whose help text the CLI shows; ``choices`` restrict a string; a
    ``secret`` is left out of the config's repr, so it never reaches a log."""
    return field(default=default, repr=not secret, metadata={"help": help, "choices": choices})


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything the server can be told. Validated on construction."""

    # Serving
    host: str = _opt("127.0.0.1", "address to bind; loopback unless told otherwise")
    port: int = _opt(8000, "port to bind")
    log_level: str = _opt("info", "log level", choices=LEVELS)
    log_format: str = _opt(
        "text",
        "'text' for a terminal, 'json' for a log pipeline: one object per line with time, level, "
        "logger, message and the stream's session_id",
        choices=("text", "json"),
    )
    log_levels: tuple[str, ...] = _opt(
        (),
        "levels per module, MODULE=LEVEL, repeat or separate with commas "
        "(streaming.transport=debug,uvicorn.access=warning)",
    )

    # Who may connect
    api_key: tuple[str, ...] = _opt(
        (),
        "API keys, any of which a client must send (Authorization: Bearer KEY, or ?token=KEY "
        "from a browser) on every route but /healthcheck; repeat the flag, or separate keys "
        "with commas; none: no key needed",
        secret=True,
    )
    api_key_file: str = _opt("", "a file of more API keys, one per line ('#' starts a comment)")
    allowed_origins: tuple[str, ...] = _opt(
        (),
        "origins of the web pages that may use the server (https://app.example.com); repeat or "
        "separate with commas; none: any page",
    )

    # Model
    model: str = _opt(
        "tiny.en",
        "'tiny.en' (embedded), 'base' (embedded, multilingual), a directory holding a "
        "CTranslate2 Whisper model, or a hub name where a hub is reachable",
    )
    device: str = _opt("auto", "inference device", choices=get_args(Device))
    compute_type: str = _opt(
        "default", "CTranslate2 compute type; 'default' is int8 on CPU and float16 on CUDA"
    )
    cpu_threads: int = _opt(0, "CPU threads for the model, shared out among its workers; 0 uses every core")
    workers: int = _opt(
        0,
        "model calls that run at once, each on its own share of the threads; 0 picks 2 on a CPU "
        "of 2 cores or more (a final need not wait for a partial batch to finish) and 1 on CUDA",
    )
    cache_dir: str = _opt("", "where joined model files are kept; empty means ~/.cache/streaming")
    diarization: bool = _opt(
        True,
        "load the speaker model (resemblyzer's, from its PyPI package, verified by SHA-256) so "
        "that streams may ask for diarize=true; skipped with a warning when it is not installed",
    )
    batch_size: int = _opt(0, "finals decoded together in one model call; 0 picks 4 on CPU and 16 on CUDA")
    partial_batch_size: int = _opt(
        0,
        "partials decoded together in one model call; 0 picks 1 on CPU (a final arriving "
        "meanwhile may wait for the call) and 16 on CUDA",
    )
    first_partial_patience: float = _opt(
        0.0,
        "seconds a new utterance's first partial (or its preview) waits behind finals before it "
        "is decoded ahead of them; 0 keeps finals first always. On 2 cores with tiny.en, 0.3 took "
        "the first partial's p95 at 8 streams from about 1.0 to 0.8 s, and the capacity at a "
        "1.5 s p95 final from 12 streams to 8 (docs/benchmarks.md)",
    )
    encoder_window: float = _opt(
        15.0,
        "seconds of audio the encoder sees per utterance, or the utterance plus 1 s if longer; "
        "Whisper's own window is 30, and 15 transcribes as well at half the CPU cost",
    )
    max_context: float = _opt(
        30.0,
        "seconds of committed speech, before the first word not committed, that a stream's decode "
        "carries as its context (its text forced on the decoder as a prefix), within the encoder "
        "window; the model reads a prefix token by token, at about the cost of decoding as many "
        "new words: 4 halves the time to a final at some cost in accuracy (docs/benchmarks.md)",
    )
    load_context: float = _opt(
        4.0,
        "seconds of context (as max_context) a stream's decode carries while the model workers "
        "are behind on finals (finals waited 0.25 s or more on average over the last 5 s): cheaper "
        "decodes, at some accuracy, so that more streams keep up (docs/benchmarks.md); set it "
        "to max_context to keep the whole context under load",
    )
    partial_encoder_window: float = _opt(
        15.0,
        "seconds of audio the encoder sees for a partial; its clip (committed context and the open "
        "speech) is cut to fit with 1 s to spare: 10 costs a third less CPU per partial, for "
        "partials with less context (docs/benchmarks.md); below 10 Whisper loses words",
    )
    load_partial_encoder_window: float = _opt(
        10.0,
        "seconds of audio the encoder sees for a partial while the model workers are behind on "
        "partials (they waited 0.25 s or more on average over the last 5 s), at most "
        "partial_encoder_window: cheaper partials, so that more of them reach the screen under "
        "load (docs/benchmarks.md); set it to partial_encoder_window to keep the whole window",
    )

    # Decoding
    beam_size: int = _opt(5, "beam size of final decodes")
    partial_beam_size: int = _opt(1, "beam size of partial (interim) decodes")
    partial_interval: float = _opt(
        0.5, "seconds between partial re-decodes of an open utterance; 0 disables partials"
    )
    commit_bound: float = _opt(
        1.5,
        "seconds a spoken word may wait for its segment, even in speech with no pause: a word "
        "two partials agree on is committed once a partial has heard a little past it "
        "(docs/protocol.md), an older one by the next partial",
    )
    eager_finals: bool = _opt(
        True,
        "decode an utterance's final as soon as a pause begins, kept if the pause ends the "
        "utterance and thrown away if speech resumes (shed by the server under load)",
    )
    sentence_pause: float = _opt(
        1.0, "seconds of silence between words that end a sentence (and a segment of the final)"
    )
    max_sentence: float = _opt(20.0, "longest segment of the final, in seconds; a longer sentence is split")
    condition_on_previous_text: bool = _opt(
        False,
        "prompt each utterance with the stream's previous text (off by default: with tiny.en it "
        "fed repetition loops, WER 0.21 against 0.07 without, see docs/benchmarks.md)",
    )
    prompt_chars: int = _opt(200, "characters of previous text used as the prompt")
    no_speech_threshold: float = _opt(
        0.6, "drop an utterance the model thinks is not speech above this probability"
    )
    log_prob_threshold: float = _opt(
        -1.0, "with no_speech_threshold: drop only if the average log-probability is below this"
    )
    compression_ratio_threshold: float = _opt(
        2.4, "retry hotter (or drop) a decode whose text compresses better than this"
    )

    # Voice activity detection
    vad_threshold: float = _opt(0.5, "speech probability at which an utterance starts")
    min_silence: float = _opt(0.3, "seconds of silence that end an utterance")
    speech_pad: float = _opt(0.3, "seconds of audio kept before and after speech")
    max_utterance: float = _opt(
        12.0, "longest utterance in seconds; longer speech is cut at its quietest point"
    )
    min_speech: float = _opt(0.2, "shortest speech in seconds that opens an utterance")
    file_min_silence: float = _opt(
        2.0,
        "POST /predict (a whole file, no one waiting for words): seconds of silence that end an "
        "utterance; faster-whisper's own batch VAD default, so a file is decoded in long pieces",
    )
    file_max_utterance: float = _opt(
        28.0,
        "POST /predict: longest utterance in seconds (Whisper's 30 s window less its margin); "
        "longer speech is cut at its quietest point",
    )

    # Limits
    max_sessions: int = _opt(
        0,
        "concurrent streams; one more is refused with server_full; 0 sizes it to the device "
        "(4 per CPU core, 64 on CUDA)",
    )
    max_frame_bytes: int = _opt(1 << 20, "largest websocket frame a client may send")
    max_speakers: int = _opt(
        2, "most channels of a multichannel stream (one speaker each, each transcribed on its own)"
    )
    max_session_seconds: float = _opt(4 * 3600.0, "longest stream, in seconds of audio")
    max_buffered_seconds: float = _opt(
        60.0, "audio a session may hold waiting for the model before it is told overloaded"
    )
    idle_timeout: float = _opt(60.0, "seconds without audio or keepalive before a stream ends")
    max_unsent_messages: int = _opt(
        256,
        "messages queued for a client that does not read them (a waiting partial is replaced "
        "by a newer one); one more ends its stream with slow_consumer",
    )
    max_body_bytes: int = _opt(64 << 20, "largest POST /predict body")
    drain_timeout: float = _opt(
        30.0, "on SIGTERM, seconds open streams may go on before they are ended with a final"
    )
    resume_grace: float = _opt(
        30.0,
        "seconds a resumable stream (resumable=true) whose connection dropped is kept, still "
        "transcribing, for its client to resume it; it counts against max_sessions meanwhile",
    )

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (0 < self.port < 65536 or self.port == 0, "port must be in 0..65535"),
            (self.cpu_threads >= 0, "cpu_threads must be >= 0"),
            (self.beam_size >= 1, "beam_size must be >= 1"),
            (self.partial_beam_size >= 1, "partial_beam_size must be >= 1"),
            (self.partial_interval >= 0, "partial_interval must be >= 0"),
            (self.prompt_chars >= 0, "prompt_chars must be >= 0"),
            (self.commit_bound > 0, "commit_bound must be > 0"),
            (self.sentence_pause > 0, "sentence_pause must be > 0"),
            (self.max_sentence > 0, "max_sentence must be > 0"),
            (0 < self.vad_threshold < 1, "vad_threshold must be in (0, 1)"),
            (self.min_silence > 0, "min_silence must be > 0"),
            (self.speech_pad >= 0, "speech_pad must be >= 0"),
            (2.0 <= self.max_utterance <= 30.0, "max_utterance must be in [2, 30] seconds"),
            (self.file_min_silence > 0, "file_min_silence must be > 0"),
            (2.0 <= self.file_max_utterance <= 29.0, "file_max_utterance must be in [2, 29] seconds"),
            (self.min_speech >= 0, "min_speech must be >= 0"),
            (self.max_sessions >= 0, "max_sessions must be >= 0"),
            (self.batch_size >= 0, "batch_size must be >= 0"),
            (self.partial_batch_size >= 0, "partial_batch_size must be >= 0"),
            (self.workers >= 0, "workers must be >= 0"),
            (self.first_partial_patience >= 0, "first_partial_patience must be >= 0"),
            (10.0 <= self.encoder_window <= 30.0, "encoder_window must be in [10, 30] seconds"),
            (self.max_context >= 0, "max_context must be >= 0"),
            (self.load_context >= 0, "load_context must be >= 0"),
            (
                10.0 <= self.partial_encoder_window <= self.encoder_window,
                "partial_encoder_window must be in [10, encoder_window] seconds",
            ),
            (
                10.0 <= self.load_partial_encoder_window <= self.encoder_window,
                "load_partial_encoder_window must be in [10, encoder_window] seconds",
            ),
            (self.max_frame_bytes >= 1024, "max_frame_bytes must be >= 1024"),
            (2 <= self.max_speakers <= MAX_CHANNELS, f"max_speakers must be in [2, {MAX_CHANNELS}]"),
            (self.max_session_seconds > 0, "max_session_seconds must be > 0"),
            (
                self.max_buffered_seconds >= self.max_utterance,
                "max_buffered_seconds must be >= max_utterance",
            ),
            (self.idle_timeout > 0, "idle_timeout must be > 0"),
            (self.max_unsent_messages >= 1, "max_unsent_messages must be >= 1"),
            (self.max_body_bytes >= 1024, "max_body_bytes must be >= 1024"),
            (self.drain_timeout >= 0, "drain_timeout must be >= 0"),
            (self.resume_grace >= 0, "resume_grace must be >= 0"),
        ]
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices is not None:
                checks.append((getattr(self, f.name) in choices, f"{f.name} must be one of {choices}"))
        try:
            parse_levels(self.log_levels)
        except ValueError as exc:
            checks.append((False, str(exc)))
        errors = [message for ok, message in checks if not ok]
        if errors:
            raise ValueError("invalid configuration: " + "; ".join(errors))

    def sized_for(self, device: str, cores: int) -> Config:
        """This config with its device-sized settings (those left at 0) filled in.

        The CPU figures come from bench/capacity (docs/benchmarks.md): on 2 cores, tiny.en
        held 8 real-time streams before partials carried context and commits (2026-12-02: p95
        final 1.6 to 1.7 s at 8, over the 1.5 s line), and batches of 4 decode fastest.
        """
        cuda = device == "cuda"
        cores = max(cores, 1)
        workers = self.workers or (1 if cuda else min(cores, 2))
        return dataclasses.replace(
            self,
            max_sessions=self.max_sessions or (64 if cuda else 4 * cores),
            batch_size=self.batch_size or (16 if cuda else 4),
            partial_batch_size=self.partial_batch_size or (16 if cuda else 1),
            workers=workers,
            cpu_threads=self.cpu_threads or cores,
        )


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    """What one client chose for its stream (query parameters of ``/v1/stream``)."""

    encoding: Encoding = "pcm_s16le"
    sample_rate: int = MODEL_SAMPLE_RATE
    channels: int = 1
    language: str | None = "en"  # None: detect (multilingual models only)
    task: Task = "transcribe"
    interim_results: bool = True
    prompt: str = ""
    hotwords: str = ""
    # One speaker per channel (call-center feeds): each channel is transcribed on its own.
    multichannel: bool = False
    speakers: tuple[str, ...] = ()
    # The client resumes a dropped connection: the server acknowledges audio and keeps the
    # session for a while when its connection drops (streaming.resume).
    resumable: bool = False
    # Speaker labels on one channel (streaming.diarize): at most max_speakers of them.
    diarize: bool = False
    max_speakers: int = MAX_DIARIZED_SPEAKERS

    @property
    def speaker_labels(self) -> tuple[str, ...]:
        """The label of each channel's speaker: as given, or ``channel_0``, ``channel_1``..."""
        return self.speakers or tuple(f"channel_{i}" for i in range(self.channels))

    @property
    def bytes_per_sample(self) -> int:
        return {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1, "alaw": 1}[self.encoding]

    @property
    def frame_bytes(self) -> int:
        """Bytes of one multichannel sample frame."""
        return self.bytes_per_sample * self.channels


STREAM_PARAMETERS = (
    "encoding",
    "sample_rate",
    "channels",
    "language",
    "task",
    "interim_results",
    "prompt",
    "hotwords",
    "multichannel",
    "speakers",
    "resumable",
    "diarize",
    "max_speakers",
)
MAX_SPEAKER_LABEL = 40
MAX_CHANNELS = 8
MAX_TEXT_PARAMETER = 1000


def bool_word(value: str) -> bool | None:
    """The words taken for true and false, in query parameters, flags and the environment
    alike (None: neither)."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    return None


def _parse_bool(name: str, value: str) -> bool:
    parsed = bool_word(value)
    if parsed is None:
        raise InvalidParameter(f"{name} must be true or false, got {value!r}")
    return parsed


def _parse_int(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidParameter(f"{name} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise InvalidParameter(f"{name} must be between {low} and {high}, got {number}")
    return number


def parse_stream_config(
    query: Mapping[str, str],
    *,
    multilingual: bool,
    languages: frozenset[str] = frozenset(),
    max_speakers: int = 2,
    diarization: bool = False,
) -> StreamConfig:
    """Parse and validate the query parameters of a stream.

    ``multilingual`` says whether the loaded model can detect a language or translate;
    ``languages`` lists the codes it knows (empty: not checked); ``max_speakers`` is the most
    channels a ``multichannel`` stream may have; ``diarization`` whether a speaker model is
    loaded (``diarize=true`` needs one).
    Raises :class:`InvalidParameter` naming the first bad parameter.
    """
    unknown = sorted(set(query) - set(STREAM_PARAMETERS) - {"token"})
    if unknown:
        raise InvalidParameter(
            f"unknown query parameter {unknown[0]!r}; known: {', '.join(STREAM_PARAMETERS)}"
        )
    values: dict[str, Any] = {}
    if "encoding" in query:
        if query["encoding"] not in ENCODINGS:
            raise InvalidParameter(
                f"encoding must be one of {', '.join(ENCODINGS)}, got {query['encoding']!r}"
            )
        values["encoding"] = query["encoding"]
    if "sample_rate" in query:
        values["sample_rate"] = _parse_int(
            "sample_rate", query["sample_rate"], MIN_SAMPLE_RATE, MAX_SAMPLE_RATE
        )
    if "channels" in query:
        values["channels"] = _parse_int("channels", query["channels"], 1, MAX_CHANNELS)
    if "task" in query:
        if query["task"] not in TASKS:
            raise InvalidParameter(f"task must be one of {', '.join(TASKS)}, got {query['task']!r}")
        if query["task"] == "translate" and not multilingual:
            raise InvalidParameter("task=translate needs a multilingual model (start with --model base)")
        values["task"] = query["task"]
    if "language" in query:
        language = query["language"].strip().lower()
        if language == "auto":
            if not multilingual:
                raise InvalidParameter("language=auto needs a multilingual model (start with --model base)")
            values["language"] = None
        elif not multilingual and language != "en":
            raise InvalidParameter(f"this model is English-only; language {language!r} is not available")
        elif languages and language not in languages:
            raise InvalidParameter(f"language {language!r} is not known to this model")
        else:
            values["language"] = language
    for name in ("interim_results", "multichannel", "resumable", "diarize"):
        if name in query:
            values[name] = _parse_bool(name, query[name])
    for name in ("prompt", "hotwords"):
        if name in query:
            if len(query[name]) > MAX_TEXT_PARAMETER:
                raise InvalidParameter(f"{name} must be at most {MAX_TEXT_PARAMETER} characters")
            values[name] = query[name]
    if "speakers" in query:
        values["speakers"] = _parse_speakers(query["speakers"])
    channels = values.get("channels", 1)
    if values.get("multichannel"):
        if not 2 <= channels <= max_speakers:
            raise InvalidParameter(
                f"multichannel needs channels between 2 and {max_speakers} (one speaker each), got {channels}"
            )
        if values.get("speakers") and len(values["speakers"]) != channels:
            raise InvalidParameter(
                f"speakers names {len(values['speakers'])} speakers for {channels} channels; "
                "name one per channel"
            )
    elif "speakers" in query:
        raise InvalidParameter("speakers needs multichannel=true")
    _parse_diarize(query, values, diarization)
    return StreamConfig(**values)


def _parse_diarize(query: Mapping[str, str], values: dict[str, Any], diarization: bool) -> None:
    if "max_speakers" in query:
        if not values.get("diarize"):
            raise InvalidParameter("max_speakers needs diarize=true")
        values["max_speakers"] = _parse_int("max_speakers", query["max_speakers"], 1, MAX_DIARIZED_SPEAKERS)
    if values.get("diarize"):
        if values.get("multichannel"):
            raise InvalidParameter(
                "diarize=true is for one channel; with multichannel, each channel is a speaker"
            )
        if not diarization:
            raise InvalidParameter("diarize=true is not available: this server has no speaker model")


def _parse_speakers(value: str) -> tuple[str, ...]:
    labels = tuple(label.strip() for label in value.split(","))
    if any(not label or len(label) > MAX_SPEAKER_LABEL for label in labels):
        raise InvalidParameter(
            f"speakers must be comma-separated names of 1 to {MAX_SPEAKER_LABEL} characters, "
            f"got {value[:100]!r}"
        )
    if len(set(labels)) != len(labels):
        raise InvalidParameter(f"speakers must be different names, got {value[:100]!r}")
    return labels
