// WebRTC with the server's SFU (see docs/media.md): two peer connections per participant.
// Publisher PC: the browser offers (sendonly transceivers, one per source), the server answers.
// Subscriber PC: the server offers the forwarded tracks, the browser answers. ICE candidates
// trickle from the browser; the server's are in its SDP. No simulcast rids (aiortc cannot
// receive them). Every (re)join brings an `rtc:config`, which (re)starts both connections.

const SOURCE_KIND = { camera: "video", microphone: "audio", screen: "video" };
const SIGNAL_KIND = { camera: "video", microphone: "audio", screen: "screen" };

export class Media extends EventTarget {
  constructor(session) {
    super();
    this.session = session;
    this.config = null;
    this.local = new MediaStream(); // camera + microphone chosen at the device check
    this.screenTrack = null;
    this.pub = null; // {pc, transceivers: {source: RTCRtpTransceiver}, ready, pending: []}
    this.sub = null; // {pc, ready, pending: []}
    this.midInfo = new Map(); // subscriber mid -> {publisher, source}
    this.remote = new Map(); // publisher -> {main: MediaStream, screen: MediaStream|null}
    this.muted = { microphone: false, camera: false };
    this.forced = { microphone: false, camera: false };
    this.generation = 0;
    this.pubChain = Promise.resolve();
    this.subChain = Promise.resolve();
    this.quality = "good";
    this.qualityTimer = null;
    this.prevInbound = null;
    const s = session;
    s.on("rtc:config", (cfg) => this.start(cfg));
    s.on("rtc:disconnected", () => this.config && this.start(this.config));
    s.on("rtc:offer", (msg) => this.enqueueSub(() => this.onServerOffer(msg)));
    s.on("rtc:track_unpublished", (msg) => this.dropRemote(msg.publisher, msg.source));
    s.on("participant:left", (msg) => this.dropPublisher(msg.identity));
    s.on("rtc:active_speaker", (msg) => this.fire("speaker", msg));
    s.on("rtc:track_muted", (msg) => this.fire("remote-muted", msg));
    s.on("connection", (info) => {
      if (info.status === "lost") this.stopConnections();
    });
  }

  fire(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  on(type, fn) {
    this.addEventListener(type, (e) => fn(e.detail));
  }

  setLocalTracks(stream) {
    this.local = stream || new MediaStream();
  }

  localTrack(source) {
    if (source === "screen") return this.screenTrack;
    if (source === "camera_low") return this.lowTrack || null;
    const kind = SOURCE_KIND[source];
    return this.local.getTracks().find((track) => track.kind === kind) || null;
  }

  // -- lifecycle ------------------------------------------------------------------------------
  start(config) {
    this.config = config;
    this.stopConnections();
    const generation = ++this.generation;
    if (config.can_publish) {
      this.enqueuePub(() => this.publishAll(generation));
    }
    if (!this.qualityTimer) this.qualityTimer = setInterval(() => this.measureQuality(), 3000);
  }

  stopConnections() {
    this.generation++;
    for (const side of [this.pub, this.sub]) {
      if (side) side.pc.close();
    }
    this.pub = null;
    this.sub = null;
    this.midInfo.clear();
    for (const publisher of [...this.remote.keys()]) this.dropPublisher(publisher);
  }

  close() {
    this.stopConnections();
    clearInterval(this.qualityTimer);
    this.qualityTimer = null;
    for (const track of this.local.getTracks()) track.stop();
    if (this.lowTrack) this.lowTrack.stop();
    if (this.screenTrack) this.screenTrack.stop();
  }

  enqueuePub(fn) {
    this.pubChain = this.pubChain.then(fn).catch((err) => this.fire("error", err));
    return this.pubChain;
  }

  enqueueSub(fn) {
    this.subChain = this.subChain.then(fn).catch((err) => this.fire("error", err));
    return this.subChain;
  }

  newPc(which) {
    const pc = new RTCPeerConnection({ iceServers: (this.config && this.config.ice_servers) || [] });
    const side = { pc, ready: false, pending: [], transceivers: {} };
    pc.onicecandidate = (e) => {
      const c = e.candidate;
      const msg = {
        pc: which,
        candidate: c && c.candidate ? c.candidate : null,
        sdp_mid: c ? c.sdpMid : null,
        sdp_mline_index: c ? c.sdpMLineIndex : null,
      };
      if (side.ready) this.sendCandidate(msg);
      else side.pending.push(msg);
    };
    pc.onconnectionstatechange = () => this.fire("pc-state", { which, state: pc.connectionState });
    return side;
  }

  sendCandidate(msg) {
    this.session.call("rtc:candidate", msg).catch(() => {
      /* a stale candidate after a reset: harmless */
    });
  }

  markReady(side) {
    if (side.ready) return;
    side.ready = true;
    for (const msg of side.pending.splice(0)) this.sendCandidate(msg);
  }

  // -- publishing -----------------------------------------------------------------------------
  async publishAll(generation) {
    if (generation !== this.generation) return;
    const sources = ["microphone", "camera"].filter((source) => this.localTrack(source));
    const cam = this.localTrack("camera");
    if (cam) {
      // a second, small camera layer: the SFU switches lossy subscribers to it (no simulcast)
      await this.makeLowLayer();
      if (this.lowTrack) sources.push("camera_low");
      if (!(this.hd && this.hd.on)) {
        // the device check opened the camera at up to 1280x720; publishing starts at 640x480
        // scaled from it (only after the clone exists: a track alone on its source would
        // reopen the device at 640x480, and a shared source cannot be raised again) and
        // adaptCapture goes back up once the estimate has room
        await this.setCaptureSize(cam, 640, 480);
      }
    }
    if (this.screenTrack) sources.push("screen");
    if (!sources.length) return;
    this.pub = this.newPc("publisher");
    for (const source of sources) {
      this.pub.transceivers[source] = this.pub.pc.addTransceiver(this.localTrack(source), {
        direction: "sendonly",
        streams: source === "camera_low" ? [] : [this.local],
      });
    }
    await this.negotiatePublisher(generation);
    await this.capBitrate("camera_low", 150_000);
    // apply mute state the user chose before (re)connecting
    for (const source of ["microphone", "camera"]) {
      if (this.muted[source] && this.pub && this.pub.transceivers[source]) {
        await this.session.call("rtc:mute", { source, muted: true }).catch(() => null);
      }
    }
  }

  async makeLowLayer() {
    const cam = this.localTrack("camera");
    if (!cam || (this.lowTrack && this.lowTrack.readyState === "live")) return;
    const low = cam.clone();
    try {
      await low.applyConstraints({ width: { ideal: 320 }, height: { ideal: 240 }, frameRate: { max: 15 } });
    } catch {
      /* the device cannot scale: the clone still works, at full size */
    }
    low.enabled = cam.enabled;
    this.lowTrack = low;
  }

  async capBitrate(source, bps) {
    const tr = this.pub && this.pub.transceivers[source];
    if (!tr) return;
    try {
      const params = tr.sender.getParameters();
      if (!params.encodings || !params.encodings.length) params.encodings = [{}];
      params.encodings[0].maxBitrate = bps;
      await tr.sender.setParameters(params);
    } catch {
      /* not supported: the browser's own rate control applies */
    }
  }

  async negotiatePublisher(generation) {
    const side = this.pub;
    if (!side || generation !== this.generation) return;
    const offer = await side.pc.createOffer();
    await side.pc.setLocalDescription(offer);
    const tracks = [];
    for (const [source, tr] of Object.entries(side.transceivers)) {
      if (tr.mid && (tr.direction === "sendonly" || tr.direction === "sendrecv")) {
        tracks.push({ mid: tr.mid, source });
      }
    }
    const ack = await this.session.call("rtc:offer", { sdp: side.pc.localDescription.sdp, tracks });
    if (side !== this.pub || generation !== this.generation) return;
    await side.pc.setRemoteDescription({ type: "answer", sdp: ack.sdp });
    this.markReady(side);
    this.fire("published", { sources: tracks.map((t) => t.source) });
  }

  async setMuted(source, muted) {
    this.muted[source] = muted;
    const track = this.localTrack(source);
    if (track) track.enabled = !muted;
    if (source === "camera" && this.lowTrack) this.lowTrack.enabled = !muted;
    const kind = SIGNAL_KIND[source];
    if (!muted && this.forced[source]) {
      // lifting a host's mute: tell signaling first, it releases the SFU's forced mute
      this.forced[source] = false;
    }
    await this.session.call("media:mute", { kind, muted }).catch(() => null);
    if (this.pub && this.pub.transceivers[source]) {
      await this.session.call("rtc:mute", { source, muted }).catch(() => null);
    }
    this.fire("local-muted", { source, muted });
  }

  /** The host muted us (`mute:request`): mute locally; the user may unmute later. */
  async forceMute(kind) {
    if (kind === "screen") return this.stopScreen();
    const source = kind === "audio" ? "microphone" : "camera";
    this.forced[source] = true;
    this.muted[source] = true;
    const track = this.localTrack(source);
    if (track) track.enabled = false;
    if (source === "camera" && this.lowTrack) this.lowTrack.enabled = false;
    if (this.pub && this.pub.transceivers[source]) {
      await this.session.call("rtc:mute", { source, muted: true }).catch(() => null);
    }
    this.fire("local-muted", { source, muted: true, forced: true });
  }

  async startScreen() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) throw new Error("screen sharing is not supported");
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const track = stream.getVideoTracks()[0];
    this.screenTrack = track;
    track.onended = () => this.stopScreen();
    await this.enqueuePub(async () => {
      if (!this.pub) return this.publishAll(this.generation);
      const existing = this.pub.transceivers.screen;
      if (existing) {
        existing.direction = "sendonly";
        await existing.sender.replaceTrack(track);
      } else {
        this.pub.transceivers.screen = this.pub.pc.addTransceiver(track, { direction: "sendonly" });
      }
      await this.negotiatePublisher(this.generation);
    });
    this.fire("screen", { on: true, track });
  }

  async stopScreen() {
    const track = this.screenTrack;
    if (!track) return;
    this.screenTrack = null;
    track.stop();
    await this.enqueuePub(async () => {
      const tr = this.pub && this.pub.transceivers.screen;
      if (!tr) return;
      await tr.sender.replaceTrack(null);
      tr.direction = "inactive";
      await this.negotiatePublisher(this.generation);
    });
    this.fire("screen", { on: false });
  }

  // -- subscribing ----------------------------------------------------------------------------
  async onServerOffer(msg) {
    const generation = this.generation;
    if (!this.sub) {
      this.sub = this.newPc("subscriber");
      this.sub.pc.ontrack = (e) => this.onTrack(e);
    }
    const side = this.sub;
    for (const track of msg.tracks) this.midInfo.set(track.mid, track);
    await side.pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
    const answer = await side.pc.createAnswer();
    await side.pc.setLocalDescription(answer);
    if (side !== this.sub || generation !== this.generation) return;
    await this.session.call("rtc:answer", { sdp: side.pc.localDescription.sdp, offer_id: msg.offer_id });
    this.markReady(side);
  }

  onTrack(e) {
    const info = this.midInfo.get(e.transceiver.mid);
    if (!info) return;
    const { publisher, source } = info;
    let entry = this.remote.get(publisher);
    if (!entry) {
      entry = { main: new MediaStream(), screen: null };
      this.remote.set(publisher, entry);
    }
    let stream;
    if (source === "screen") {
      entry.screen = entry.screen || new MediaStream();
      stream = entry.screen;
    } else {
      stream = entry.main;
    }
    for (const old of stream.getTracks()) {
      if (old.kind === e.track.kind) stream.removeTrack(old);
    }
    stream.addTrack(e.track);
    this.fire("remote", { publisher, source, stream });
  }

  dropRemote(publisher, source) {
    const entry = this.remote.get(publisher);
    if (!entry) return;
    if (source === "screen") {
      entry.screen = null;
    } else {
      const kind = SOURCE_KIND[source];
      for (const track of entry.main.getTracks()) if (track.kind === kind) entry.main.removeTrack(track);
    }
    this.fire("remote-gone", { publisher, source });
  }

  dropPublisher(publisher) {
    if (!this.remote.delete(publisher)) return;
    this.fire("remote-gone", { publisher, source: null });
  }

  // -- network quality ------------------------------------------------------------------------
  async measureQuality() {
    const pcs = [this.pub, this.sub].filter(Boolean).map((side) => side.pc);
    if (!pcs.length) return;
    let rtt = null;
    let lost = 0;
    let received = 0;
    for (const pc of pcs) {
      const stats = await pc.getStats().catch(() => null);
      if (!stats) continue;
      stats.forEach((report) => {
        if (report.type === "candidate-pair" && report.nominated && report.currentRoundTripTime !== undefined) {
          rtt = Math.max(rtt || 0, report.currentRoundTripTime);
        }
        if (report.type === "inbound-rtp") {
          lost += report.packetsLost || 0;
          received += report.packetsReceived || 0;
        }
      });
    }
    const prev = this.prevInbound || { lost: 0, received: 0 };
    this.prevInbound = { lost, received };
    const dLost = Math.max(0, lost - prev.lost);
    const dRecv = Math.max(0, received - prev.received);
    const loss = dLost + dRecv > 0 ? dLost / (dLost + dRecv) : 0;
    let quality = "good";
    if ((rtt !== null && rtt > 0.6) || loss > 0.08) quality = "poor";
    else if ((rtt !== null && rtt > 0.3) || loss > 0.02) quality = "fair";
    this.quality = quality;
    this.fire("quality", { quality, rtt, loss });
    await this.adaptCapture();
  }

  // -- capture size ---------------------------------------------------------------------------
  // The device check opens the camera at up to 1280x720 (Chromium cannot raise a source's
  // resolution later while another track, camera_low, shares it; scaling down and back up is
  // free). Publishing starts at 640x480; the camera track goes to the device's full size (up to
  // 1280x720) when the browser's own bandwidth estimate (transport-cc feedback from the server)
  // has room for it, and back to 640x480 when the encoder stays limited by bandwidth or CPU
  // (or sends under 60 % of the camera's frame rate), waiting longer before the next try each
  // time (1, 2, 4 ... 16 min).
  async adaptCapture() {
    const tr = this.pub && this.pub.transceivers.camera;
    const cam = this.localTrack("camera");
    if (!tr || !cam || cam.readyState !== "live" || this.muted.camera) return;
    const stats = await tr.sender.getStats().catch(() => null);
    if (!stats) return;
    let bwe = null;
    let limited = null;
    let fps = null;
    stats.forEach((r) => {
      if (r.type === "outbound-rtp" && r.kind === "video") {
        limited = r.qualityLimitationReason || "none";
        fps = r.framesPerSecond || 0;
      }
      if (r.type === "candidate-pair" && r.nominated && r.availableOutgoingBitrate) bwe = r.availableOutgoingBitrate;
    });
    // a saved preference keeps the camera at 640x480 (metered links, weak devices; tests)
    if (!this.hd && (localStorage.getItem("tc.capture") || "") === "vga") return;
    const hd = this.hd || (this.hd = { on: false, strikes: 0, backoff: 60_000, notBefore: 0 });
    const now = Date.now();
    if (!hd.on) {
      const caps = cam.getCapabilities ? cam.getCapabilities() : {};
      const can = !caps.width || !caps.width.max || caps.width.max >= 1280;
      if (can && now >= hd.notBefore && bwe !== null && bwe >= 2_500_000 && limited === "none") {
        await this.setCaptureSize(cam, 1280, 720);
        hd.on = true;
        hd.strikes = 0;
      }
      return;
    }
    // a starved machine shows as a frame rate far below the camera's, not always as "cpu"
    const want = (cam.getSettings && cam.getSettings().frameRate) || 24;
    const starved = fps !== null && fps < want * 0.6;
    hd.strikes = limited === "bandwidth" || limited === "cpu" || starved ? hd.strikes + 1 : 0;
    if (hd.strikes >= 3) {
      await this.setCaptureSize(cam, 640, 480);
      hd.on = false;
      hd.notBefore = now + hd.backoff;
      hd.backoff = Math.min(hd.backoff * 2, 16 * 60_000);
    }
  }

  async setCaptureSize(track, width, height) {
    try {
      await track.applyConstraints({ width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: 24 } });
      this.fire("capture", { width, height });
    } catch {
      /* the device refused: keep what it gives */
    }
  }
}
