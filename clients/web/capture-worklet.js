// AudioWorklet: the microphone at the context's rate in, 16 kHz mono 16-bit PCM out, in frames
// of 100 ms posted to the page. Runs on the audio rendering thread, so it allocates nothing per
// call but its output frames.
//
// Resampling is a windowed-sinc interpolator: each output sample is the input convolved with a
// Blackman-windowed sinc low-pass centred on the output sample's exact (fractional) input time.
// The cut-off sits at 45 % of the lower of the two rates (7.2 kHz for 16 kHz out), so nothing
// above the output's Nyquist frequency folds back into speech as aliasing, at any input rate
// (48 kHz, 44.1 kHz, 8 kHz Bluetooth headsets).

const OUT_RATE = 16000;
const FRAME = 1600; // 100 ms at 16 kHz
const ZERO_CROSSINGS = 16; // per side: the filter's length, in periods of its cut-off

class Capture16k extends AudioWorkletProcessor {
  constructor() {
    super();
    const inRate = sampleRate; // the worklet scope's global: the AudioContext's rate
    this.step = inRate / OUT_RATE; // input samples per output sample
    // Cut-off in cycles per input sample.
    this.cutoff = (0.45 * Math.min(inRate, OUT_RATE)) / inRate;
    this.half = Math.ceil(ZERO_CROSSINGS / (2 * this.cutoff)); // taps per side
    // Input history: enough for the filter's reach on both sides, plus one render quantum.
    this.buffer = new Float32Array(2 * this.half + 4096);
    this.length = 0; // valid samples in buffer
    this.position = this.half; // input time (in buffer samples) of the next output sample
    this.frame = new Int16Array(FRAME);
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") this.flush();
    };
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const n = channels[0].length;
    if (this.length + n > this.buffer.length) this.compact(n);
    // Downmix into the history.
    for (let i = 0; i < n; i++) {
      let sum = 0;
      for (let c = 0; c < channels.length; c++) sum += channels[c][i];
      this.buffer[this.length + i] = sum / channels.length;
    }
    this.length += n;
    while (this.position + this.half < this.length) {
      this.emit(this.sampleAt(this.position));
      this.position += this.step;
    }
    return true;
  }

  sampleAt(t) {
    const centre = Math.floor(t);
    const fc = this.cutoff;
    const half = this.half;
    let acc = 0;
    let gain = 0;
    for (let k = centre - half + 1; k <= centre + half; k++) {
      const x = t - k; // distance in input samples
      if (Math.abs(x) >= half) continue;
      const arg = 2 * fc * x;
      const sinc = arg === 0 ? 1 : Math.sin(Math.PI * arg) / (Math.PI * arg);
      const w = 0.42 + 0.5 * Math.cos((Math.PI * x) / half) + 0.08 * Math.cos((2 * Math.PI * x) / half);
      const h = sinc * w;
      acc += this.buffer[k] * h;
      gain += h;
    }
    return acc / gain; // unity gain at DC, whatever the phase
  }

  emit(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.frame[this.filled++] = Math.round(clipped * 32767);
    if (this.filled === FRAME) this.post();
  }

  post() {
    const out = this.frame.slice(0, this.filled);
    this.port.postMessage(out.buffer, [out.buffer]);
    this.filled = 0;
  }

  flush() {
    if (this.filled > 0) this.post();
    this.port.postMessage("flushed");
  }

  // Drop history the filter no longer reaches; grow if n more samples still would not fit.
  compact(n) {
    const keep = Math.floor(this.position) - this.half;
    if (keep > 0) {
      this.buffer.copyWithin(0, keep, this.length);
      this.length -= keep;
      this.position -= keep;
    }
    if (this.length + n > this.buffer.length) {
      const bigger = new Float32Array(2 * (this.length + n));
      bigger.set(this.buffer.subarray(0, this.length));
      this.buffer = bigger;
    }
  }
}

registerProcessor("capture-16k", Capture16k);
