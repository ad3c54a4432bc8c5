// asrserve microphone page: capture (AudioWorklet, 16 kHz s16le) → WebSocket
// (asrserve JSON dialect) → partial and final lines.
"use strict";

const RATE = 16000; // what we send; the worklet resamples the device to it
const CHUNK = 800; // samples per binary frame (50 ms)
const CLOSE_MEANING = {
  1000: "normal end",
  1001: "server shutting down",
  1003: "unusable session configuration",
  1006: "connection lost or refused (server down, full — HTTP 503 — or the token was refused)",
  1008: "limit reached",
  1009: "message too big",
  1011: "internal server error",
};

const $ = (id) => document.getElementById(id);
const ui = {
  mic: $("mic"),
  model: $("model"),
  modelChoice: $("model-choice"),
  processing: $("processing"),
  start: $("start"),
  stop: $("stop"),
  state: $("state"),
  capture: $("capture"),
  sent: $("sent"),
  latency: $("latency"),
  level: $("level"),
  error: $("error"),
  partial: $("partial"),
  finals: $("finals"),
  copy: $("copy"),
  download: $("download"),
  clear: $("clear"),
};

let session = null; // the running capture + connection

function setState(text, kind) {
  ui.state.textContent = text;
  ui.state.dataset.kind = kind || "";
}

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = !text;
}

function clock(seconds) {
  const m = Math.floor(seconds / 60);
  const s = seconds - 60 * m;
  return `${String(m).padStart(2, "0")}:${s.toFixed(2).padStart(5, "0")}`;
}

// Same origin, ws: or wss: following the page; ?token=... passed on.
function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const token = new URLSearchParams(location.search).get("token");
  return `${scheme}//${location.host}/` + (token ? `?token=${encodeURIComponent(token)}` : "");
}

// The server's models (GET /v1/models): a picker when it serves more than one;
// the chosen one is named in the start message.
async function listModels() {
  const token = new URLSearchParams(location.search).get("token");
  try {
    const r = await fetch("/v1/models", {
      headers: token ? { Authorization: `Bearer ${token}` } : {},
    });
    if (!r.ok) return;
    const models = (await r.json()).data || [];
    ui.model.replaceChildren(
      ...models.map((m) => {
        const o = document.createElement("option");
        o.value = m.id;
        const what = [m.family, m.precision, m.loaded ? null : "loads on first use"];
        o.textContent = `${m.id} (${what.filter(Boolean).join(", ") || "model"})`;
        o.selected = Boolean(m.default);
        return o;
      }),
    );
    ui.modelChoice.hidden = models.length < 2;
  } catch {
    // no listing: the server's default model is used
  }
}

async function listMicrophones() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const keep = ui.mic.value;
  const devices = (await navigator.mediaDevices.enumerateDevices()).filter(
    (d) => d.kind === "audioinput",
  );
  ui.mic.replaceChildren();
  const def = new Option("default microphone", "");
  ui.mic.append(def);
  devices.forEach((d, k) => {
    if (d.deviceId === "default" || d.deviceId === "") return;
    ui.mic.append(new Option(d.label || `microphone ${k + 1}`, d.deviceId));
  });
  if ([...ui.mic.options].some((o) => o.value === keep)) ui.mic.value = keep;
}

// Latency: for every result we look up when we sent the audio frame that holds
// the result's `end` (the last audio the decoder had consumed, in seconds from
// the start of the stream) and show arrival time − that send time. It covers
// network, server queueing, waiting for a full chunk and decoding; not the
// browser's capture buffering before the worklet (a few ms) nor our 50 ms frame.
class LatencyMeter {
  constructor() {
    this.marks = []; // [samples sent up to and including this frame, send time]
    this.recent = [];
  }
  sent(totalSamples, time) {
    this.marks.push([totalSamples, time]);
  }
  result(endSeconds, now) {
    const want = Math.round(endSeconds * RATE);
    while (this.marks.length > 1 && this.marks[0][0] < want) this.marks.shift();
    const mark = this.marks[0];
    if (!mark || mark[0] < want) return null;
    const ms = now - mark[1];
    this.recent.push(ms);
    if (this.recent.length > 50) this.recent.shift();
    return ms;
  }
  median() {
    const s = [...this.recent].sort((a, b) => a - b);
    return s.length ? s[Math.floor(s.length / 2)] : null;
  }
}

function addFinal(msg) {
  ui.partial.textContent = "";
  if (!msg.text) return;
  const li = document.createElement("li");
  li.dataset.start = msg.start;
  li.dataset.end = msg.end;
  const time = document.createElement("time");
  time.textContent = `${clock(msg.start)} – ${clock(msg.end)}`;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = msg.text;
  li.append(time, " ", text);
  ui.finals.append(li);
  li.scrollIntoView({ block: "nearest" });
}

function transcript(withTimes) {
  return [...ui.finals.querySelectorAll("li")]
    .map((li) => {
      const text = li.querySelector(".text").textContent;
      return withTimes ? `[${li.querySelector("time").textContent}] ${text}` : text;
    })
    .join("\n");
}

class Session {
  constructor() {
    this.ws = null;
    this.ctx = null;
    this.stream = null;
    this.node = null;
    this.queue = []; // frames captured before the server said ready
    this.ready = false;
    this.stopping = false;
    this.samplesSent = 0;
    this.latency = new LatencyMeter();
    this.closed = new Promise((resolve) => (this.onClosed = resolve));
  }

  async start() {
    setState("starting microphone", "busy");
    this.ctx = new AudioContext({ latencyHint: "interactive" });
    await this.ctx.audioWorklet.addModule("/web/worklet.js");
    const proc = ui.processing.checked;
    const audio = {
      channelCount: 1,
      echoCancellation: proc,
      noiseSuppression: proc,
      autoGainControl: proc,
    };
    if (ui.mic.value) audio.deviceId = { exact: ui.mic.value };
    this.stream = await navigator.mediaDevices.getUserMedia({ audio });
    const source = this.ctx.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.ctx, "asrserve-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      channelCount: 1,
      channelCountMode: "explicit",
      channelInterpretation: "speakers",
      processorOptions: { targetRate: RATE, chunkSamples: CHUNK },
    });
    this.node.port.onmessage = (e) => this.fromWorklet(e.data);
    source.connect(this.node);
    this.node.connect(this.ctx.destination); // silent; keeps the graph pulling
    if (this.ctx.state === "suspended") await this.ctx.resume();
    const track = this.stream.getAudioTracks()[0];
    ui.capture.textContent = `${track ? track.label || "microphone" : "?"} · ${this.ctx.sampleRate} Hz → ${RATE} Hz`;
    listMicrophones(); // labels are known once permission is granted
    this.connect();
  }

  connect() {
    setState("connecting", "busy");
    const ws = new WebSocket(socketUrl());
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      const start = { type: "start", sample_rate: RATE, format: "s16le" };
      if (ui.model.value) start.model = ui.model.value;
      ws.send(JSON.stringify(start));
    };
    ws.onmessage = (e) => this.fromServer(e.data);
    ws.onerror = () => {}; // the close event that follows says more
    ws.onclose = (e) => this.onClose(e);
  }

  fromWorklet(m) {
    if (m.type === "audio") {
      ui.level.value = m.peak;
      if (this.ready) this.send(m.pcm);
      else this.queue.push(m.pcm);
    } else if (m.type === "config") {
      ui.capture.dataset.inputRate = m.inputRate;
    } else if (m.type === "started") {
      ui.capture.dataset.skipped = m.skipped;
    } else if (m.type === "drained") {
      this.sendStop();
    }
  }

  send(pcm) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(pcm);
    this.samplesSent += pcm.byteLength / 2;
    this.latency.sent(this.samplesSent, performance.now());
    ui.sent.textContent = (this.samplesSent / RATE).toFixed(2);
  }

  fromServer(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      showError(`unexpected message from the server: ${String(data).slice(0, 200)}`);
      return;
    }
    switch (msg.type) {
      case "ready":
        this.ready = true;
        setState(this.stopping ? "finishing" : "listening", "live");
        for (const pcm of this.queue.splice(0)) this.send(pcm);
        if (this.stopping && this.drained) this.sendStop();
        break;
      case "partial":
        ui.partial.textContent = msg.text;
        this.noteLatency(msg);
        break;
      case "final":
        this.noteLatency(msg);
        addFinal(msg);
        break;
      case "error":
        showError(`server error (${msg.code}): ${msg.message}`);
        break;
      case "eof":
        setState(`done: ${msg.segments} segment(s), ${Number(msg.duration).toFixed(2)} s of audio`, "done");
        break;
      default:
        break;
    }
  }

  noteLatency(msg) {
    const ms = this.latency.result(msg.end, performance.now());
    if (ms === null) return;
    const med = this.latency.median();
    ui.latency.textContent = `${Math.round(ms)} ms (median ${Math.round(med)} ms)`;
    ui.latency.dataset.ms = Math.round(ms);
  }

  // Stop: drain the worklet (its last samples are sent), then {"type": "stop"};
  // the server answers with the last final and eof, then closes (1000).
  stop() {
    if (this.stopping) return;
    this.stopping = true;
    setState("finishing", "busy");
    if (this.node) this.node.port.postMessage({ cmd: "drain" });
    else this.teardown();
  }

  sendStop() {
    this.drained = true;
    this.releaseMicrophone();
    if (this.ws && this.ready && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "stop" }));
    } else if (this.ws && this.ws.readyState !== WebSocket.CONNECTING) {
      this.teardown();
    }
  }

  releaseMicrophone() {
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.ctx && this.ctx.state !== "closed") this.ctx.close();
    this.stream = null;
    ui.level.value = 0;
  }

  onClose(e) {
    const meaning = CLOSE_MEANING[e.code] || "unknown close code";
    const reason = e.reason ? `: ${e.reason}` : "";
    if (e.code === 1000) {
      if (!ui.state.dataset.kind || ui.state.dataset.kind !== "done") setState("closed", "done");
    } else {
      setState(`closed (${e.code})`, "error");
      showError(`connection closed ${e.code} (${meaning})${reason}`);
    }
    ui.state.dataset.closeCode = e.code;
    if (ui.partial.textContent) {
      // the connection ended without a final for it: keep what was heard
      addFinal({ text: ui.partial.textContent, start: 0, end: this.samplesSent / RATE });
    }
    this.teardown();
  }

  teardown() {
    this.releaseMicrophone();
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close();
    ui.start.disabled = false;
    ui.stop.disabled = true;
    ui.mic.disabled = false;
    ui.model.disabled = false;
    session = null;
    this.onClosed();
  }
}

async function start() {
  showError("");
  ui.start.disabled = true;
  ui.mic.disabled = true;
  ui.model.disabled = true;
  ui.stop.disabled = false;
  ui.partial.textContent = "";
  ui.latency.textContent = "–";
  ui.sent.textContent = "0.00";
  delete ui.state.dataset.closeCode;
  session = new Session();
  try {
    await session.start();
  } catch (err) {
    const name = err && err.name ? `${err.name}: ` : "";
    showError(`could not start the microphone: ${name}${err && err.message ? err.message : err}`);
    setState("idle", "error");
    session.teardown();
  }
}

ui.start.addEventListener("click", start);
ui.stop.addEventListener("click", () => session && session.stop());
ui.copy.addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(transcript(true));
    ui.copy.textContent = "Copied";
  } catch {
    ui.copy.textContent = "Copy failed";
  }
  setTimeout(() => (ui.copy.textContent = "Copy"), 1500);
});
ui.download.addEventListener("click", () => {
  const blob = new Blob([transcript(true) + "\n"], { type: "text/plain" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `transcript-${new Date().toISOString().replace(/[:.]/g, "-")}.txt`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
});
ui.clear.addEventListener("click", () => {
  ui.finals.replaceChildren();
  ui.partial.textContent = "";
});
if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
  navigator.mediaDevices.addEventListener("devicechange", listMicrophones);
}
if (!window.isSecureContext) {
  showError("the microphone needs a secure page: open it over https, or on localhost");
}
if (!window.AudioWorkletNode) {
  showError("this browser has no AudioWorklet; use a current Chrome, Firefox or Safari");
  ui.start.disabled = true;
}
listMicrophones();
listModels();
setState("idle");
