// Pre-call device check: camera preview, microphone level meter, speaker test tone and the
// connection test: the real Socket.IO connection with the join token, then a short WebRTC
// loopback through the server (`rtc:echo`, docs/protocol.md) that reports the video bitrate
// that came back and the transport ICE chose (UDP, TCP, or the hospital's TURN relay).
// Failures come with a plain-language fix. Resolves with the chosen local stream on Join.
import { button, clear, h, setI18n, tx } from "./dom.js";
import { prompt } from "./voice.js";

const GATHER_MS = 5000; // bound on ICE gathering (TURN allocations included)
const FIRST_FRAME_MS = 12000; // no echoed frame by then: the media path is blocked
const MEASURE_MS = 3000; // bitrate window once frames flow

/** A moving test picture when no camera track is available (observers, a failed camera). */
function testPattern() {
  const canvas = document.createElement("canvas");
  canvas.width = 320;
  canvas.height = 240;
  const g = canvas.getContext("2d");
  let n = 0;
  const draw = () => {
    n += 1;
    g.fillStyle = `hsl(${(n * 7) % 360} 60% 45%)`;
    g.fillRect(0, 0, 320, 240);
    g.fillStyle = "#fff";
    g.fillRect((n * 9) % 320, 60, 40, 120);
  };
  draw();
  const stream = canvas.captureStream(15);
  const timer = setInterval(draw, 66);
  const track = stream.getVideoTracks()[0];
  track.addEventListener("ended", () => clearInterval(timer));
  return { track, stop: () => (clearInterval(timer), track.stop()) };
}

function waitFor(check, ms, poll = 200) {
  return new Promise((resolve) => {
    const started = performance.now();
    const tick = async () => {
      const value = await check();
      if (value || performance.now() - started > ms) resolve(value);
      else setTimeout(tick, poll);
    };
    tick();
  });
}

/** Which transport the selected candidate pair uses: udp | tcp | relay (+ relay protocol). */
function selectedTransport(report) {
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  let pair = null;
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId);
  });
  if (!pair) report.forEach((s) => { if (s.type === "candidate-pair" && s.state === "succeeded" && s.nominated) pair = s; });
  const local = pair && byId.get(pair.localCandidateId);
  if (!local) return { transport: "unknown" };
  if (local.candidateType === "relay") return { transport: "relay", relayProtocol: (local.relayProtocol || "udp").toLowerCase() };
  return { transport: (local.protocol || "udp").toLowerCase() };
}

function fixFor(err, which) {
  const device = { key: which === "camera" ? "device_camera" : "device_microphone" };
  const name = err && err.name;
  if (!window.isSecureContext || !navigator.mediaDevices) return ["fix_insecure", {}];
  if (name === "NotAllowedError" || name === "SecurityError") return ["fix_denied", { device }];
  if (name === "NotFoundError" || name === "OverconstrainedError") return ["fix_missing", { device }];
  if (name === "NotReadableError" || name === "AbortError") return ["fix_busy", { device }];
  return ["fix_other", { device, error: (err && (err.name || err.message)) || "?" }];
}

export class DeviceCheck {
  constructor(root, session) {
    this.root = root;
    this.session = session;
    this.stream = null;
    // observers (no publish grant) never send media: no camera or microphone needed
    const grants = (session.claims && session.claims.grants) || {};
    const listenOnly = grants.publish === false;
    this.skip = { camera: listenOnly, microphone: listenOnly };
    this.result = { camera: "checking", microphone: "checking", speaker: "idle", connection: "checking" };
    this.audioCtx = null;
    this.meterRaf = 0;
    this.choice = {};
    for (const kind of ["camera", "microphone", "speaker"]) {
      try {
        this.choice[kind] = localStorage.getItem(`tc.device.${kind}`) || null;
      } catch {
        this.choice[kind] = null;
      }
    }
  }

  /** Show the check; resolve with the stream to use when the user joins. */
  run() {
    return new Promise((resolve) => {
      this.resolve = resolve;
      this.render();
      this.devicesReady = this.checkDevices();
      this.checkConnection();
      prompt("check_title");
    });
  }

  row(id, labelKey, body) {
    const status = h("span", { class: "status", id: `status-${id}`, role: "status" });
    const fix = h("p", { class: "fix", id: `fix-${id}`, hidden: true });
    return h(
      "section",
      { class: "check-row", id: `check-${id}`, "aria-labelledby": `label-${id}` },
      h("h2", { id: `label-${id}` }, tx(labelKey), " ", status),
      body,
      fix,
    );
  }

  render() {
    const root = clear(this.root);
    this.video = h("video", { id: "preview", autoplay: true, muted: true, playsInline: true, "aria-hidden": "true" });
    this.meter = h("div", { class: "meter", role: "meter", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0", id: "mic-meter", i18nAttr: { "aria-label": "check_microphone" } }, h("div", { class: "meter-fill" }));
    this.joinBtn = button("join_now", () => this.finish(), { class: "primary big", id: "join-btn", disabled: true });
    this.selects = {
      camera: h("select", { id: "select-camera", hidden: true, i18nAttr: { "aria-label": "check_camera" }, onchange: (e) => this.choose("camera", e.target.value) }),
      microphone: h("select", { id: "select-microphone", hidden: true, i18nAttr: { "aria-label": "check_microphone" }, onchange: (e) => this.choose("microphone", e.target.value) }),
      speaker: h("select", { id: "select-speaker", hidden: true, i18nAttr: { "aria-label": "check_speaker" }, onchange: (e) => this.choose("speaker", e.target.value) }),
    };
    root.append(
      h(
        "main",
        { class: "screen device-check", id: "screen-check" },
        h("h1", {}, tx("check_title")),
        h("p", { class: "lead" }, tx("check_intro")),
        h(
          "div",
          { class: "check-grid" },
          this.row("camera", "check_camera", h("div", { class: "preview-box" }, this.video, this.selects.camera)),
          this.row(
            "microphone",
            "check_microphone",
            h("div", {}, this.meter, h("p", { class: "hint" }, tx("mic_speak")), this.selects.microphone),
          ),
          this.row(
            "speaker",
            "check_speaker",
            h(
              "div",
              { class: "row-actions" },
              button("speaker_play", () => this.playTone(), { id: "speaker-play" }),
              button("speaker_heard", () => this.setStatus("speaker", "ok"), { id: "speaker-heard" }),
              h("p", { class: "hint" }, tx("speaker_hint")),
              this.selects.speaker,
            ),
          ),
          this.row(
            "connection",
            "check_connection",
            h("div", {}, h("p", { class: "hint", id: "connection-detail" }), h("p", { class: "media-result", id: "media-result", role: "status", "data-state": "idle" })),
          ),
        ),
        h(
          "div",
          { class: "actions" },
          button("retry", () => this.retry(), { id: "retry-btn" }),
          button("continue_without_camera", () => this.skipDevice("camera"), { id: "skip-camera", hidden: true }),
          button("continue_without_mic", () => this.skipDevice("microphone"), { id: "skip-microphone", hidden: true }),
          this.joinBtn,
        ),
      ),
    );
    for (const key of ["camera", "microphone", "connection"]) this.setStatus(key, this.result[key]);
    this.setStatus("speaker", "idle");
  }

  setStatus(id, status, fix) {
    this.result[id] = status;
    const el = this.root.querySelector(`#status-${id}`);
    if (el) {
      const keys = { checking: "status_checking", ok: "status_ok", failed: "status_failed", skipped: "status_skipped" };
      el.className = `status ${status}`;
      el.dataset.state = status;
      if (keys[status]) setI18n(el, keys[status]);
      else el.textContent = "";
    }
    const fixEl = this.root.querySelector(`#fix-${id}`);
    if (fixEl) {
      if (fix) {
        setI18n(fixEl, fix);
        fixEl.hidden = false;
      } else {
        fixEl.hidden = true;
      }
    }
    const skipBtn = this.root.querySelector(`#skip-${id}`);
    if (skipBtn) skipBtn.hidden = status !== "failed";
    this.updateJoin();
  }

  updateJoin() {
    if (!this.joinBtn) return;
    const devicesReady = ["camera", "microphone"].every((k) => this.result[k] === "ok" || this.result[k] === "skipped");
    this.joinBtn.disabled = !(devicesReady && this.result.connection === "ok");
  }

  async getStream(constraints) {
    return navigator.mediaDevices.getUserMedia(constraints);
  }

  async checkDevices() {
    this.stopMeter();
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = new MediaStream();
    const wanted = ["camera", "microphone"].filter((k) => !this.skip[k]);
    for (const k of wanted) this.setStatus(k, "checking");
    if (!navigator.mediaDevices || !window.isSecureContext) {
      for (const k of wanted) this.setStatus(k, "failed", ["fix_insecure", {}]);
      return;
    }
    const pick = (kind) => (this.choice[kind] ? { deviceId: { exact: this.choice[kind] } } : {});
    const constraints = {
      video: this.skip.camera ? false : { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 24 }, ...pick("camera") },
      audio: this.skip.microphone ? false : { echoCancellation: true, noiseSuppression: true, ...pick("microphone") },
    };
    let stream = null;
    if (wanted.length) {
      try {
        stream = await this.getStream(constraints);
      } catch (err) {
        if (err && err.name === "OverconstrainedError" && (this.choice.camera || this.choice.microphone)) {
          // a remembered device is gone: forget it and take the default
          this.choice.camera = this.choice.microphone = null;
          return this.checkDevices();
        }
        stream = null;
      }
    }
    if (stream) {
      this.stream = stream;
    } else {
      // find out which device failed, and why
      for (const k of wanted) {
        try {
          const single = await this.getStream(k === "camera" ? { video: constraints.video } : { audio: constraints.audio });
          for (const track of single.getTracks()) this.stream.addTrack(track);
        } catch (err) {
          this.setStatus(k, "failed", fixFor(err, k));
        }
      }
    }
    const video = this.stream.getVideoTracks()[0];
    const audio = this.stream.getAudioTracks()[0];
    if (video) {
      this.video.srcObject = new MediaStream([video]);
      this.setStatus("camera", "ok");
    } else if (this.skip.camera) this.setStatus("camera", "skipped");
    if (audio) {
      this.startMeter(audio);
      this.setStatus("microphone", "ok");
    } else if (this.skip.microphone) this.setStatus("microphone", "skipped");
    await this.listDevices();
  }

  /** Fill the device pickers (labels are only known once permission was granted). */
  async listDevices() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
    const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
    const kinds = { camera: "videoinput", microphone: "audioinput", speaker: "audiooutput" };
    const inUse = {
      camera: this.stream.getVideoTracks()[0],
      microphone: this.stream.getAudioTracks()[0],
    };
    for (const [key, kind] of Object.entries(kinds)) {
      const select = this.selects[key];
      const list = devices.filter((d) => d.kind === kind && d.deviceId);
      const usable = key !== "speaker" || (window.AudioContext && "setSinkId" in AudioContext.prototype);
      clear(select);
      list.forEach((d, i) => select.append(h("option", { value: d.deviceId }, d.label || `${key} ${i + 1}`)));
      const current = inUse[key] ? inUse[key].getSettings().deviceId : this.choice[key];
      if (current) select.value = current;
      select.hidden = !usable || list.length < 2;
    }
  }

  choose(kind, deviceId) {
    this.choice[kind] = deviceId;
    try {
      localStorage.setItem(`tc.device.${kind}`, deviceId);
    } catch {
      /* private mode */
    }
    if (kind === "speaker") {
      if (this.audioCtx && this.audioCtx.setSinkId) this.audioCtx.setSinkId(deviceId).catch(() => null);
      return;
    }
    this.checkDevices();
  }

  skipDevice(kind) {
    this.skip[kind] = true;
    this.setStatus(kind, "skipped");
  }

  ctx() {
    if (!this.audioCtx) {
      this.audioCtx = new AudioContext();
      // browsers start audio suspended until the user interacts: resume on the first touch/key
      const resume = () => this.audioCtx && this.audioCtx.state === "suspended" && this.audioCtx.resume().catch(() => null);
      for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, resume, { once: true, capture: true });
    }
    if (this.audioCtx.state === "suspended") this.audioCtx.resume().catch(() => null);
    return this.audioCtx;
  }

  startMeter(track) {
    const ctx = this.ctx();
    const source = ctx.createMediaStreamSource(new MediaStream([track]));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const data = new Float32Array(analyser.fftSize);
    const fill = this.meter.firstChild;
    const tick = () => {
      analyser.getFloatTimeDomainData(data);
      let sum = 0;
      for (const v of data) sum += v * v;
      const rms = Math.sqrt(sum / data.length);
      const level = Math.min(100, Math.round(rms * 400));
      fill.style.width = `${level}%`;
      this.meter.setAttribute("aria-valuenow", String(level));
      this.meter.dataset.peak = String(Math.max(Number(this.meter.dataset.peak || 0), level));
      this.meterRaf = requestAnimationFrame(tick);
    };
    this.meterSource = source;
    tick();
  }

  stopMeter() {
    cancelAnimationFrame(this.meterRaf);
    if (this.meterSource) this.meterSource.disconnect();
    this.meterSource = null;
  }

  playTone() {
    const ctx = this.ctx();
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.frequency.value = 660;
    gain.gain.setValueAtTime(0.0001, ctx.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.3, ctx.currentTime + 0.05);
    gain.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + 0.8);
    osc.connect(gain).connect(ctx.destination);
    osc.start();
    osc.stop(ctx.currentTime + 0.85);
    this.root.querySelector("#speaker-play").dataset.played = "1";
  }

  async checkConnection() {
    this.setStatus("connection", "checking");
    const detail = this.root.querySelector("#connection-detail");
    const off = this.session.on("connection", (info) => {
      // still trying (server restarting, network down): say so while we wait
      if (info.status === "reconnecting" && this.result.connection !== "ok") {
        setI18n(detail, `refused_${info.code === "unreachable" || !info.code ? "unreachable" : info.code}`);
      }
    });
    try {
      await this.session.connect();
      off();
      detail.textContent = "";
      delete detail.dataset.i18n;
      this.setStatus("connection", "ok");
    } catch (refusal) {
      off();
      this.setStatus("connection", "failed");
      this.resolve({ refused: refusal });
      return;
    }
    this.mediaCheck = this.checkMediaPath();
  }

  /** "Try again": the devices, and the media path if it failed (the network may be fixed). */
  retry() {
    this.devicesReady = this.checkDevices();
    const out = this.root.querySelector("#media-result");
    if (this.result.connection === "ok" && out && out.dataset.state === "failed" && !this.echoPc) {
      this.mediaCheck = this.checkMediaPath();
    }
  }

  /** Send video to the server and measure what comes back (rtc:echo). */
  async checkMediaPath() {
    const out = this.root.querySelector("#media-result");
    const show = (state, spec, data = {}) => {
      if (!out) return;
      out.dataset.state = state;
      for (const [k, v] of Object.entries(data)) out.dataset[k] = String(v);
      setI18n(out, spec);
    };
    if (!window.RTCPeerConnection) {
      show("failed", "media_unavailable");
      return;
    }
    show("checking", "media_testing");
    let pattern = null;
    let peer = null;
    try {
      // the camera, once the device check has it (else a moving test picture)
      await Promise.race([this.devicesReady, new Promise((r) => setTimeout(r, GATHER_MS))]).catch(() => null);
      const config = await this.session.call("rtc:echo_config", {});
      if (this.finished) return; // joined meanwhile: no loopback during the call
      peer = new RTCPeerConnection({ iceServers: config.ice_servers || [] });
      this.echoPc = peer;
      const camera = this.stream && this.stream.getVideoTracks().find((t) => t.readyState === "live");
      if (!camera) pattern = testPattern();
      peer.addTransceiver(camera || pattern.track, { direction: "sendrecv" });
      await peer.setLocalDescription(await peer.createOffer());
      await waitFor(() => peer.iceGatheringState === "complete", GATHER_MS, 100);
      const ack = await this.session.call("rtc:echo", { sdp: peer.localDescription.sdp });
      await peer.setRemoteDescription({ type: "answer", sdp: ack.sdp });
      const inbound = async () => {
        const report = await peer.getStats();
        let found = null;
        report.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") found = s; });
        return { report, inbound: found };
      };
      const first = await waitFor(async () => {
        const r = await inbound();
        return r.inbound && r.inbound.framesDecoded > 0 ? r : null;
      }, FIRST_FRAME_MS);
      if (this.echoPc !== peer) return; // finished (joined) meanwhile
      if (!first) throw new Error("no video came back");
      const t0 = performance.now();
      const b0 = first.inbound.bytesReceived;
      await new Promise((r) => setTimeout(r, MEASURE_MS));
      if (this.echoPc !== peer) return;
      const last = await inbound();
      const seconds = (performance.now() - t0) / 1000;
      const kbps = Math.round(((last.inbound.bytesReceived - b0) * 8) / seconds / 1000);
      const path = selectedTransport(last.report);
      const key = path.transport === "relay" ? `transport_relay_${path.relayProtocol}` : `transport_${path.transport}`;
      const mbps = (kbps / 1000).toFixed(kbps < 1000 ? 2 : 1);
      show("ok", ["media_ok", { mbps, transport: { key } }], {
        kbps,
        transport: path.transport,
        relayProtocol: path.relayProtocol || "",
        width: last.inbound.frameWidth || 0,
        height: last.inbound.frameHeight || 0,
      });
    } catch (err) {
      if (peer && this.echoPc !== peer) return; // finished (joined) meanwhile
      show("failed", "media_failed", { error: (err && (err.code || err.message)) || "?" });
    } finally {
      if (pattern) pattern.stop();
      this.stopEcho();
    }
  }

  stopEcho() {
    const peer = this.echoPc;
    this.echoPc = null;
    if (!peer) return;
    peer.close();
    this.session.call("rtc:echo_stop", {}).catch(() => null);
  }

  finish() {
    this.finished = true;
    this.stopEcho();
    this.stopMeter();
    if (this.audioCtx) this.audioCtx.close().catch(() => null);
    this.resolve({ stream: this.stream });
  }
}
