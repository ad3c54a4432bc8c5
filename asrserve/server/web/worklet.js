// asrserve capture processor (AudioWorklet).
//
// Takes the microphone at the AudioContext's rate (44.1 or 48 kHz, any rate
// works), mixes to mono, low-passes and resamples to `targetRate` (16 kHz) with
// a Kaiser-windowed sinc kernel, and posts s16le frames of `chunkSamples`
// samples to the page.
//
// Filter: pass band to 0.475 * targetRate (7.6 kHz at 16 kHz, the top of the
// usual 80-bin mel filterbank), stop band from 0.5 * targetRate (8 kHz, the
// new Nyquist), 80 dB attenuation: nothing aliases into the band the model
// sees. The kernel is tabulated at `PHASES` sub-sample offsets and linearly
// interpolated between them; at integer ratios (48 kHz → 16 kHz) every output
// sample uses an exact table phase.
//
// Digital silence before the first non-zero sample is skipped: browsers hand
// out blocks of exact zeros while the device starts (Chromium: 10–30 ms, not
// always the same), which would only shift every timestamp. A real
// microphone never produces exact zeros once it runs.

const PHASES = 64;
const ATTENUATION_DB = 80;

function besselI0(x) {
  let sum = 1;
  let term = 1;
  const q = (x * x) / 4;
  for (let k = 1; k < 64; k++) {
    term *= q / (k * k);
    sum += term;
    if (term < sum * 1e-12) break;
  }
  return sum;
}

function sinc(x) {
  if (x === 0) return 1;
  const px = Math.PI * x;
  return Math.sin(px) / px;
}

class Resampler {
  constructor(inRate, outRate) {
    this.inRate = inRate;
    this.outRate = outRate;
    this.bypass = inRate === outRate;
    const band = Math.min(inRate, outRate);
    const fp = (0.475 * band) / inRate; // cycles per input sample
    const fs = (0.5 * band) / inRate;
    const fc = (fp + fs) / 2;
    const taps = Math.ceil((ATTENUATION_DB - 8) / (2.285 * 2 * Math.PI * (fs - fp))) + 1;
    const half = (taps >> 1) + 1;
    const beta = 0.1102 * (ATTENUATION_DB - 8.7);
    const i0beta = besselI0(beta);
    const h = (d) => {
      const r = d / half;
      if (r <= -1 || r >= 1) return 0;
      return 2 * fc * sinc(2 * fc * d) * (besselI0(beta * Math.sqrt(1 - r * r)) / i0beta);
    };
    // phase p (offset p / PHASES), tap j ↔ input sample i - half + 1 + j
    this.half = half;
    this.width = 2 * half;
    this.phases = [];
    for (let p = 0; p <= PHASES; p++) {
      const row = new Float32Array(this.width);
      for (let j = 0; j < this.width; j++) row[j] = h(p / PHASES + half - 1 - j);
      this.phases.push(row);
    }
    this.buf = new Float32Array(1 << 15);
    this.len = half; // history starts with `half` zeros
    this.base = -half; // absolute input index of buf[0]
    this.nOut = 0; // next output sample
    this.inTotal = 0; // input samples taken
  }

  push(x) {
    if (this.len + x.length > this.buf.length) {
      // drop what no output needs any more, grow if that is not enough
      const keepFrom = this.centre(this.nOut).i - this.half + 1 - this.base;
      const drop = Math.max(0, Math.min(keepFrom, this.len));
      this.buf.copyWithin(0, drop, this.len);
      this.len -= drop;
      this.base += drop;
      if (this.len + x.length > this.buf.length) {
        const bigger = new Float32Array(2 * (this.len + x.length));
        bigger.set(this.buf.subarray(0, this.len));
        this.buf = bigger;
      }
    }
    this.buf.set(x, this.len);
    this.len += x.length;
    this.inTotal += x.length;
  }

  centre(n) {
    // input position of output n: n * inRate / outRate = i + frac (exact integers)
    const num = n * this.inRate;
    const i = Math.floor(num / this.outRate);
    return { i, frac: (num - i * this.outRate) / this.outRate };
  }

  // Output samples computable now (or up to the end of the input when `end`).
  pull(out, end) {
    const avail = this.base + this.len; // absolute end of the buffered input
    for (;;) {
      const { i, frac } = this.centre(this.nOut);
      if (end ? i >= this.inTotal : i + this.half >= avail) return;
      const start = i - this.half + 1 - this.base;
      const p = frac * PHASES;
      const p0 = Math.floor(p);
      const w = p - p0;
      const a = this.phases[p0];
      const b = this.phases[Math.min(p0 + 1, PHASES)];
      const buf = this.buf;
      let s0 = 0;
      let s1 = 0;
      for (let j = 0; j < this.width; j++) {
        const v = buf[start + j];
        s0 += v * a[j];
        s1 += v * b[j];
      }
      out.push(s0 + w * (s1 - s0));
      this.nOut++;
    }
  }

  // End of input: zeros after the last sample so the tail can be computed.
  finish(out) {
    if (this.bypass) return;
    const total = this.inTotal;
    this.push(new Float32Array(this.width + Math.ceil(this.inRate / this.outRate) + 1));
    this.inTotal = total;
    this.pull(out, true);
  }
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.targetRate = o.targetRate || 16000;
    this.chunk = o.chunkSamples || 800;
    this.skipZeros = o.skipLeadingZeros !== false;
    this.started = !this.skipZeros;
    this.skipped = 0;
    this.done = false;
    this.rs = new Resampler(sampleRate, this.targetRate);
    this.pending = []; // resampled float samples not yet posted
    this.mono = new Float32Array(128);
    this.port.onmessage = (e) => {
      if (e.data && e.data.cmd === "drain") this.drain();
    };
    this.port.postMessage({ type: "config", inputRate: sampleRate, taps: this.rs.width });
  }

  post(force) {
    while (this.pending.length >= this.chunk || (force && this.pending.length)) {
      const n = Math.min(this.chunk, this.pending.length);
      const bytes = new ArrayBuffer(2 * n);
      const view = new DataView(bytes);
      let peak = 0;
      for (let k = 0; k < n; k++) {
        const v = this.pending[k];
        const a = Math.abs(v);
        if (a > peak) peak = a;
        const s = Math.max(-32768, Math.min(32767, Math.round(v * 32768)));
        view.setInt16(2 * k, s, true);
      }
      this.pending.splice(0, n);
      this.port.postMessage({ type: "audio", pcm: bytes, peak }, [bytes]);
    }
  }

  drain() {
    if (this.done) return;
    this.done = true;
    this.rs.finish(this.pending);
    this.post(true);
    this.port.postMessage({ type: "drained", skipped: this.skipped });
  }

  process(inputs) {
    const input = inputs[0];
    if (this.done || !input || input.length === 0) return true;
    const n = input[0].length;
    if (this.mono.length !== n) this.mono = new Float32Array(n);
    const mono = this.mono;
    mono.fill(0);
    for (const ch of input) for (let k = 0; k < n; k++) mono[k] += ch[k] / input.length;
    let from = 0;
    if (!this.started) {
      while (from < n && mono[from] === 0) from++;
      this.skipped += from;
      if (from === n) return true;
      this.started = true;
      this.port.postMessage({ type: "started", skipped: this.skipped });
    }
    const x = from ? mono.subarray(from) : mono;
    if (this.rs.bypass) {
      for (let k = 0; k < x.length; k++) this.pending.push(x[k]);
    } else {
      this.rs.push(x);
      this.rs.pull(this.pending, false);
    }
    this.post(false);
    return true;
  }
}

registerProcessor("asrserve-capture", CaptureProcessor);
