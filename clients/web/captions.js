// The transcript of one page visit, kept across reconnects, and its downloads: the hosted JSON
// schema, SubRip and WebVTT (the same formats as streaming/subtitles.py).

export class Transcript {
  constructor() {
    this.segments = []; // hosted-schema segments, times on the page's own clock
    this.predictionMs = 0;
    this.offset = 0; // seconds of audio sent in earlier sessions
  }

  // A new session starts: its times restart at 0, so shift them by what was sent before.
  startSession(secondsSentBefore) {
    this.offset = secondsSentBefore;
  }

  addSegment(segment) {
    const shifted = shift(segment, this.offset);
    this.segments.push(shifted);
    return shifted;
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

function cues(segments) {
  return [...segments]
    .sort((a, b) => a.start - b.start || a.end - b.end)
    .map((s) => ({ start: s.start, end: s.end, speaker: s.speaker, text: s.text.split(/\s+/).filter(Boolean).join(" ") }))
    .filter((c) => c.text);
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
