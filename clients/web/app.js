// Live captions: the microphone streamed to /v1/stream, captions shown as they come.
//
// One Recorder per press of Start: it owns the microphone, the audio graph and one websocket
// session. The Transcript outlives recorders, so a dropped connection or a server-side limit
// loses nothing already captioned: pressing Start again opens a new session and goes on.

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
};

function plainWords(error) {
  return PLAIN_WORDS[error.code] || `The server reported a problem: ${error.message}`;
}

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

function streamUrl() {
  const page = new URL(window.location.href);
  const url = new URL("/v1/stream", page);
  url.protocol = page.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("encoding", "pcm_s16le");
  url.searchParams.set("sample_rate", "16000");
  url.searchParams.set("language", ui.language.value);
  const token = page.searchParams.get("token");
  if (token) url.searchParams.set("token", token);
  return url;
}

class Recorder {
  constructor() {
    this.ws = null;
    this.context = null;
    this.media = null;
    this.node = null;
    this.ended = false; // the person pressed Stop
    this.flushed = false; // the worklet has sent its last frame
    this.finalReceived = false;
    this.serverError = null;
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
    const ws = new WebSocket(streamUrl());
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    const queued = [];
    this.node.port.onmessage = (event) => {
      if (event.data === "flushed") {
        this.flushed = true;
        source.disconnect();
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "end" }));
        return;
      }
      if (this.flushed) return; // nothing may follow "end"
      secondsSent += event.data.byteLength / 2 / 16000;
      if (ws.readyState === WebSocket.OPEN) ws.send(event.data);
      else if (ws.readyState === WebSocket.CONNECTING) queued.push(event.data);
    };
    ws.onopen = () => {
      for (const frame of queued.splice(0)) ws.send(frame);
      if (this.flushed) ws.send(JSON.stringify({ type: "end" }));
    };
    ws.onmessage = (event) => this.onMessage(JSON.parse(event.data));
    ws.onclose = (event) => this.onClose(event);
    setStatus("Connecting…");
  }

  onMessage(message) {
    switch (message.type) {
      case "ready":
        setStatus(`Listening (session ${message.session_id})`);
        break;
      case "partial":
        ui.partial.textContent = message.segment.text;
        break;
      case "segment":
        ui.partial.textContent = "";
        showSentence(transcript.addSegment(message.segment, message.continues));
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

  onClose(event) {
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
        `The connection to the server was lost (code ${event.code}). ` +
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
