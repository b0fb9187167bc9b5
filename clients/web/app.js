// Live captions: the microphone streamed to /v1/stream, captions shown as they come.
//
// One Recorder per press of Start: it owns the microphone, the audio graph and one resumable
// websocket session. When the connection drops, it keeps the audio the server has not
// acknowledged and resumes the same session on a new connection by itself, resending that audio
// ("Reconnecting…"), so nothing said meanwhile is lost. The Transcript outlives recorders, so a
// connection that cannot be resumed, or a server-side limit, loses nothing already captioned:
// pressing Start again opens a new session and goes on.

import { Transcript, clock } from "./captions.js";

const $ = (id) => document.getElementById(id);
const ui = {
  button: $("start"),
  language: $("language"),
  model: $("model"),
  status: $("status"),
  alert: $("alert"),
  captions: $("captions"),
  partial: $("partial"),
  downloads: $("downloads"),
};

// What the server's error codes mean to the person in front of the page.
const PLAIN_WORDS = {
  server_full: "The server is busy: all its streams are in use. Try again in a minute.",
  not_ready: "The server is still starting up. Try again in a few seconds.",
  shutting_down: "The server is restarting. Your captions so far are kept; press Start to go on.",
  session_too_long:
    "This session reached the server's length limit. Your captions so far are kept; press Start to go on.",
  idle_timeout: "No sound reached the server for a while, so it ended the session. Press Start to go on.",
  overloaded: "The server could not keep up with the audio. Your captions so far are kept; try again shortly.",
  unauthorized: "This server needs a valid access key: open the page with ?token=YOUR_KEY in the address.",
  origin_not_allowed: "This server does not accept connections from this web page.",
  internal_error: "The server failed while transcribing. Your captions so far are kept; press Start to try again.",
  resume_failed:
    "The connection was down too long to pick the session up again. Your captions so far are kept; press Start to go on.",
};

function plainWords(error) {
  return PLAIN_WORDS[error.code] || `The server reported a problem: ${error.message}`;
}

// Resuming: how long to try (the server keeps a dropped session 30 s by default), how soon, and
// how much unacknowledged audio to hold meanwhile (16 kHz, 16-bit: 1.9 MB a minute).
const RESUME_DELAYS_MS = [100, 250, 500, 1000, 2000, 4000, 4000, 4000, 4000, 4000, 4000];
const MAX_UNACKED_BYTES = 60 * 16000 * 2;
// Closes that mean the connection failed, not that the server ended the stream.
const RESUMABLE_CLOSES = new Set([1001, 1005, 1006, 1011, 1012, 1014]);

const transcript = new Transcript();
let secondsSent = 0; // over every session of this page: the next session's time offset
let recorder = null;

function setStatus(text) {
  ui.status.textContent = text;
}

function showAlert(text) {
  ui.alert.textContent = text;
  ui.alert.hidden = !text;
}

function setRunning(running) {
  ui.button.textContent = running ? "Stop" : "Start";
  ui.button.setAttribute("aria-pressed", String(running));
  ui.language.disabled = running || ui.language.options.length < 2;
}

// One line per sentence: a piece that continues it is added to its line.
function showSentence({ sentence, isNew }) {
  let line = isNew ? null : ui.captions.lastElementChild;
  if (!line) {
    line = document.createElement("p");
    line.className = "segment";
    const time = document.createElement("time");
    time.textContent = clock(sentence.start);
    time.dateTime = `PT${sentence.start.toFixed(3)}S`;
    const text = document.createElement("span");
    line.append(time, " ", text);
    ui.captions.append(line);
  }
  line.querySelector("span").textContent = sentence.text;
  line.scrollIntoView({ block: "nearest" });
}

function refreshDownloads() {
  ui.downloads.hidden = transcript.isEmpty;
  const files = {
    json: [JSON.stringify(transcript.toHosted(), null, 2), "application/json"],
    srt: [transcript.toSrt(), "application/x-subrip"],
    vtt: [transcript.toVtt(), "text/vtt"],
  };
  for (const [kind, [text, type]] of Object.entries(files)) {
    const link = $(`download-${kind}`);
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(new Blob([text], { type }));
  }
}

function streamUrl(params) {
  const page = new URL(window.location.href);
  const url = new URL("/v1/stream", page);
  url.protocol = page.protocol === "https:" ? "wss:" : "ws:";
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
  const token = page.searchParams.get("token");
  if (token) url.searchParams.set("token", token);
  return url;
}

// Audio sent but not yet acknowledged: what a resumed connection sends again.
class Unacked {
  constructor() {
    this.chunks = []; // {offset, data}
    this.sent = 0; // bytes sent in this session
    this.size = 0;
  }

  add(data) {
    this.chunks.push({ offset: this.sent, data });
    this.sent += data.byteLength;
    this.size += data.byteLength;
  }

  acked(upto) {
    while (this.chunks.length && this.chunks[0].offset + this.chunks[0].data.byteLength <= upto) {
      this.size -= this.chunks.shift().data.byteLength;
    }
  }

  since(upto) {
    this.acked(upto);
    return this.chunks.map(({ offset, data }) => data.slice(Math.max(upto - offset, 0)));
  }
}

class Recorder {
  constructor() {
    this.ws = null;
    this.context = null;
    this.media = null;
    this.node = null;
    this.ended = false; // the person pressed Stop
    this.flushed = false; // the worklet has sent its last frame
    this.endSent = false;
    this.finalReceived = false;
    this.serverError = null;
    this.unacked = new Unacked();
    this.resume = null; // {session_id, resume_token} once the server said ready
    this.segments = 0; // segments received: a resume replays the ones after them
    this.live = false; // the socket is open and the server knows what it holds
    this.attempts = 0;
  }

  async start() {
    setStatus("Asking for the microphone…");
    this.media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
    });
    this.context = new AudioContext();
    await this.context.audioWorklet.addModule("/static/capture-worklet.js");
    const source = this.context.createMediaStreamSource(this.media);
    this.node = new AudioWorkletNode(this.context, "capture-16k", { numberOfOutputs: 0 });
    source.connect(this.node);

    transcript.startSession(secondsSent);
    this.node.port.onmessage = (event) => {
      if (event.data === "flushed") {
        this.flushed = true;
        source.disconnect();
        this.sendEnd();
        return;
      }
      if (this.flushed) return; // nothing may follow "end"
      secondsSent += event.data.byteLength / 2 / 16000;
      this.unacked.add(event.data);
      if (this.live) this.ws.send(event.data);
      else if (this.unacked.size > MAX_UNACKED_BYTES) this.giveUp();
    };
    this.connect(
      streamUrl({ encoding: "pcm_s16le", sample_rate: "16000", language: ui.language.value, resumable: "true" }),
    );
    setStatus("Connecting…");
  }

  connect(url) {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.live = false;
    ws.onmessage = (event) => {
      if (this.ws === ws) this.onMessage(JSON.parse(event.data));
    };
    ws.onclose = (event) => {
      if (this.ws === ws) this.onClose(event);
    };
  }

  sendEnd() {
    if (this.live && this.flushed && !this.endSent) {
      this.endSent = true;
      this.ws.send(JSON.stringify({ type: "end" }));
    }
  }

  onMessage(message) {
    switch (message.type) {
      case "ready":
        this.onReady(message);
        break;
      case "ack":
        this.unacked.acked(message.audio_bytes);
        break;
      case "partial":
        ui.partial.textContent = message.segment.text;
        break;
      case "segment":
        this.segments += 1;
        ui.partial.textContent = "";
        showSentence(transcript.addSegment(message.segment, message.continues, message.glued));
        refreshDownloads();
        break;
      case "final":
        // Everything is committed: no partial is left to show.
        ui.partial.textContent = "";
        this.finalReceived = true;
        transcript.addFinal(message);
        refreshDownloads();
        break;
      case "error":
        this.serverError = message;
        showAlert(plainWords(message));
        break;
    }
  }

  // The server holds the audio before resumed.audio_bytes: send the rest, then go on live.
  onReady(message) {
    this.resume = { session_id: message.session_id, resume_token: message.resume_token };
    const frames = message.resumed ? this.unacked.since(message.resumed.audio_bytes) : this.unacked.since(0);
    if (message.resumed) {
      this.endSent = message.resumed.ended;
      this.attempts = 0;
      showAlert("");
    }
    if (!this.endSent) for (const frame of frames) this.ws.send(frame);
    this.live = true;
    this.sendEnd();
    setStatus(this.ended ? "Finishing the last words…" : `Listening (session ${message.session_id})`);
  }

  onClose(event) {
    this.live = false;
    const delay = RESUME_DELAYS_MS[this.attempts];
    const resumable =
      this.resume && !this.serverError && !this.finalReceived && RESUMABLE_CLOSES.has(event.code);
    if (resumable && delay !== undefined) {
      this.attempts += 1;
      setStatus("Reconnecting…");
      // A blip is over before anyone reads an alert: say more only once it lasts.
      if (this.attempts > 1) {
        showAlert("The connection dropped. Reconnecting: your captions are kept, and what you say meanwhile is too.");
      }
      setTimeout(() => this.reconnect(), delay);
      return;
    }
    this.finish(event.code);
  }

  reconnect() {
    if (recorder !== this) return;
    const { session_id: resume, resume_token } = this.resume;
    this.connect(streamUrl({ resume, resume_token, segments: String(this.segments) }));
  }

  // Too much audio waits for a connection that does not come back: stop here.
  giveUp() {
    this.resume = null;
    if (this.ws.readyState === WebSocket.CLOSED) this.finish(1006);
    else this.ws.close();
  }

  finish(code) {
    this.release();
    ui.partial.textContent = "";
    if (recorder === this) recorder = null;
    setRunning(false);
    if (this.serverError) {
      setStatus("Stopped by the server.");
    } else if (this.ended && this.finalReceived) {
      setStatus("Stopped. Download the captions below, or press Start to go on.");
    } else {
      setStatus("Disconnected.");
      showAlert(
        `The connection to the server was lost (code ${code}). ` +
          "Your captions so far are kept; press Start to reconnect and go on.",
      );
    }
  }

  // Stop: the worklet sends what it holds, then "end"; the server answers with the final.
  stop() {
    this.ended = true;
    setStatus("Finishing the last words…");
    if (this.node) this.node.port.postMessage("flush");
    if (this.media) for (const track of this.media.getTracks()) track.stop();
    if (!this.ws || this.ws.readyState > WebSocket.OPEN) this.release();
  }

  release() {
    if (this.media) for (const track of this.media.getTracks()) track.stop();
    if (this.context && this.context.state !== "closed") this.context.close();
    this.media = null;
  }
}

async function toggle() {
  if (recorder) {
    recorder.stop();
    return;
  }
  showAlert("");
  recorder = new Recorder();
  setRunning(true);
  try {
    await recorder.start();
  } catch (error) {
    recorder.release();
    recorder = null;
    setRunning(false);
    setStatus("Not started.");
    showAlert(
      error.name === "NotAllowedError"
        ? "The browser did not allow the microphone. Allow it for this page and press Start again."
        : `The microphone could not be started: ${error.message}`,
    );
  }
}

async function loadInfo() {
  try {
    const page = new URL(window.location.href);
    const token = page.searchParams.get("token");
    const response = await fetch(new URL("/v1/info", page), {
      headers: token ? { Authorization: `Bearer ${token}` } : {},
    });
    if (response.status === 401 || response.status === 403) {
      const body = await response.json();
      setStatus("Not allowed.");
      showAlert(plainWords(body.error));
      ui.button.disabled = true;
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const info = await response.json();
    ui.model.textContent = info.model;
    ui.language.replaceChildren();
    const choices = info.multilingual ? ["auto", ...info.languages] : ["en"];
    const names = new Intl.DisplayNames([navigator.language || "en"], { type: "language" });
    for (const code of choices) {
      const option = document.createElement("option");
      option.value = code;
      option.textContent = code === "auto" ? "Detect automatically" : `${names.of(code) || code} (${code})`;
      ui.language.append(option);
    }
    ui.language.value = info.multilingual ? "auto" : "en";
    ui.language.disabled = choices.length < 2;
    setStatus("Press Start and speak.");
  } catch (error) {
    setStatus("The server did not answer; captions may not work.");
  }
}

ui.button.addEventListener("click", toggle);
setRunning(false);
loadInfo();
