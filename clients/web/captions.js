// The transcript of one page visit, kept across reconnects, and its downloads: the hosted JSON
// schema, SubRip and WebVTT (the same formats as streaming/subtitles.py).

export class Transcript {
  constructor() {
    this.segments = []; // hosted-schema segments, times on the page's own clock
    this.predictionMs = 0;
    this.offset = 0; // seconds of audio sent in earlier sessions
    this.openBy = new Map(); // speaker -> the sentence its next piece may continue
  }

  // A new session starts: its times restart at 0, so shift them by what was sent before.
  startSession(secondsSentBefore) {
    this.offset = secondsSentBefore;
    this.openBy = new Map();
  }

  // A piece that continues the speaker's open sentence joins it (as the server's final does),
  // without a space if its first word was written against the sentence's last ("-sposed");
  // returns the sentence and whether it was new.
  addSegment(segment, continues, glued = false) {
    const shifted = shift(segment, this.offset);
    const last = this.openBy.get(shifted.speaker);
    if (continues && last) {
      last.text = `${last.text}${glued ? "" : " "}${shifted.text}`.trim();
      last.end = Math.max(last.end, shifted.end);
      last.words = [...last.words, ...shifted.words];
      return { sentence: last, isNew: false };
    }
    const sentence = { ...shifted, words: [...shifted.words] };
    this.segments.push(sentence);
    this.openBy.set(shifted.speaker, sentence);
    return { sentence, isNew: true };
  }

  addFinal(final) {
    this.predictionMs += final.prediction_time_ms || 0;
  }

  get isEmpty() {
    return this.segments.length === 0;
  }

  toHosted() {
    const segments = [...this.segments].sort((a, b) => a.start - b.start || a.end - b.end);
    const words = segments.flatMap((s) => s.words).sort((a, b) => a.start - b.start || a.end - b.end);
    return {
      prediction_time_ms: this.predictionMs,
      response: { segments, word_segments: words },
      transcription: segments.map((s) => s.text).join(" "),
    };
  }

  toSrt() {
    return cues(this.segments)
      .map((c, i) => `${i + 1}\n${stamp(c.start, ",")} --> ${stamp(c.end, ",")}\n${c.speaker ? `${c.speaker}: ` : ""}${c.text}\n`)
      .join("\n");
  }

  toVtt() {
    const blocks = cues(this.segments).map((c) => {
      const text = c.text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
      return `${stamp(c.start, ".")} --> ${stamp(c.end, ".")}\n${c.speaker ? `<v ${c.speaker}>` : ""}${text}\n`;
    });
    return ["WEBVTT\n", ...blocks].join("\n");
  }
}

function round3(x) {
  return Math.round(x * 1000) / 1000;
}

function shift(segment, offset) {
  if (!offset) return segment;
  return {
    ...segment,
    start: round3(segment.start + offset),
    end: round3(segment.end + offset),
    words: segment.words.map((w) => ({ ...w, start: round3(w.start + offset), end: round3(w.end + offset) })),
  };
}

// Caption limits, as streaming/subtitles.py keeps them: a cue of at most MAX_CUE_SECONDS and
// MAX_LINES lines of MAX_LINE_CHARS, split between words (word timings say where).
export const MAX_CUE_SECONDS = 7;
export const MAX_LINE_CHARS = 42;
export const MAX_LINES = 2;

function cues(segments) {
  return [...segments]
    .sort((a, b) => a.start - b.start || a.end - b.end)
    .flatMap((s) => splitCues(s))
    .filter((c) => c.text);
}

function splitCues(segment) {
  const text = segment.text.split(/\s+/).filter(Boolean).join(" ");
  const words = segment.words || [];
  if (fits(text, segment.end - segment.start) || words.length < 2) {
    return [{ start: segment.start, end: segment.end, speaker: segment.speaker, text: wrap(text) }];
  }
  const out = [];
  let run = [];
  for (const word of words) {
    const candidate = [...run, word];
    const line = candidate.map((w) => w.word).join(" ");
    if (run.length && !fits(line, word.end - run[0].start)) {
      out.push(run);
      run = [word];
    } else {
      run = candidate;
    }
  }
  if (run.length) out.push(run);
  return out.map((r, i) => ({
    start: i === 0 ? segment.start : r[0].start,
    end: i === out.length - 1 ? segment.end : r[r.length - 1].end,
    speaker: segment.speaker,
    text: wrap(r.map((w) => w.word).join(" ")),
  }));
}

function fits(text, seconds) {
  return seconds <= MAX_CUE_SECONDS && wrap(text).split("\n").every((l) => l.length <= MAX_LINE_CHARS) &&
    wrap(text).split("\n").length <= MAX_LINES;
}

// One line if it fits, else two, broken at the space nearest the middle.
function wrap(text) {
  if (text.length <= MAX_LINE_CHARS) return text;
  let best = -1;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === " " && (best < 0 || Math.abs(i - text.length / 2) < Math.abs(best - text.length / 2))) best = i;
  }
  return best < 0 ? text : `${text.slice(0, best)}\n${text.slice(best + 1)}`;
}

export function stamp(seconds, separator) {
  let ms = Math.max(Math.round(seconds * 1000), 0);
  const h = Math.floor(ms / 3600000);
  ms -= h * 3600000;
  const m = Math.floor(ms / 60000);
  ms -= m * 60000;
  const s = Math.floor(ms / 1000);
  ms -= s * 1000;
  const pad = (n, w) => String(n).padStart(w, "0");
  return `${pad(h, 2)}:${pad(m, 2)}:${pad(s, 2)}${separator}${pad(ms, 3)}`;
}

// "1:05" for a caption's start time.
export function clock(seconds) {
  const total = Math.floor(seconds);
  const m = Math.floor(total / 60);
  const s = total % 60;
  return `${m}:${String(s).padStart(2, "0")}`;
}
