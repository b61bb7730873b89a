// Pre-call device check: camera preview, microphone level meter, speaker test tone and the
// connection test (the real Socket.IO connection with the join token). Failures come with a
// plain-language fix. Resolves with the chosen local stream when the user presses Join.
import { button, clear, h, setI18n, tx } from "./dom.js";
import { prompt } from "./voice.js";

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
      this.checkDevices();
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
          this.row("connection", "check_connection", h("p", { class: "hint", id: "connection-detail" })),
        ),
        h(
          "div",
          { class: "actions" },
          button("retry", () => this.checkDevices(), { id: "retry-btn" }),
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
      video: this.skip.camera ? false : { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 24 }, ...pick("camera") },
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
      const ms = await this.session.connect();
      off();
      setI18n(detail, ["connection_ok", { ms }]);
      this.setStatus("connection", "ok");
    } catch (refusal) {
      off();
      this.setStatus("connection", "failed");
      this.resolve({ refused: refusal });
    }
  }

  finish() {
    this.stopMeter();
    if (this.audioCtx) this.audioCtx.close().catch(() => null);
    this.resolve({ stream: this.stream });
  }
}
