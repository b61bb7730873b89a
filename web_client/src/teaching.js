// Teaching rounds in the call view (docs/clinic.md, "Teaching rounds"; events in
// docs/protocol.md, `teach:*`). An observer (no publish grant) raises or lowers a hand with an
// optional question; when the host promotes it, the page takes the camera and microphone and
// publishes them through the same media path as any participant with the publish grant
// (Media.publishAll); when demoted, it stops sending and releases the devices. Admitters see the
// raised hands with a count; moderators promote and demote.
import { button, clear, h, setI18n, tx } from "./dom.js";
import { prompt } from "./voice.js";

const SOURCES = ["microphone", "camera", "camera_low"];

function savedDevice(kind) {
  try {
    return localStorage.getItem(`tc.device.${kind}`);
  } catch {
    return null;
  }
}

export class Teaching {
  /** call: the CallView; the section goes below the call controls. */
  constructor(call) {
    this.call = call;
    this.session = call.session;
    this.media = call.media;
    // hands raised before we joined come in the join payload (admitters only)
    this.hands = (this.session.joined && this.session.joined.teach_hands) || [];
    this.raised = false;
    this.speaking = false; // promoted and publishing (or starting to)
    this.state = "watching"; // watching | raised | starting | speaking | failed
    this.el = h("section", { class: "teaching", id: "teaching", hidden: true });
    const stage = call.root.querySelector(".stage");
    if (stage) stage.append(this.el);
    const s = this.session;
    this.offs = [
      s.on("teach:hands", (msg) => {
        this.hands = msg.hands || [];
        this.render();
      }),
      s.on("teach:promoted", () => this.promoted()),
      s.on("teach:demoted", () => this.demoted("teach_demoted")),
      s.on("participant:updated", () => this.render()),
      s.on("participant:joined", () => this.render()),
      s.on("participant:left", () => this.render()),
      s.on("joined", (st) => {
        this.hands = st.teach_hands || [];
        // a reconnect joins with the token's grants: a promotion does not survive it
        if (this.speaking && !this.call.grants.publish) this.demoted("teach_demoted");
        else this.render();
      }),
    ];
    this.render();
  }

  hide() {
    for (const off of this.offs.splice(0)) off();
    this.el.remove();
  }

  // -- observer side --------------------------------------------------------------------------
  async setHand(raised) {
    const question = raised && this.questionEl ? this.questionEl.value.trim() : "";
    const payload = raised ? { raised: true, question: question || null } : { raised: false };
    try {
      const ack = await this.session.call("teach:hand", payload);
      this.raised = ack.raised;
      this.position = ack.position;
      this.state = ack.raised ? "raised" : "watching";
      this.notice = null;
      if (!ack.raised && this.questionEl) this.questionEl.value = "";
    } catch (err) {
      this.call.error(err);
    }
    this.render();
  }

  async promoted() {
    this.raised = false;
    this.speaking = true;
    this.state = "starting";
    this.render();
    const m = this.media;
    try {
      const pick = (kind) => (savedDevice(kind) ? { deviceId: savedDevice(kind) } : {});
      const stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 24 }, ...pick("camera") },
        audio: { echoCancellation: true, noiseSuppression: true, ...pick("microphone") },
      });
      if (!this.speaking) {
        // demoted while the devices were opening
        for (const track of stream.getTracks()) track.stop();
        return;
      }
      m.setLocalTracks(stream);
      m.muted.microphone = m.muted.camera = false;
      // a restart of the media connections (network) publishes again while promoted
      if (m.config) m.config = { ...m.config, can_publish: true };
      await m.enqueuePub(async () => {
        const tr = m.pub && m.pub.transceivers;
        if (!tr) return m.publishAll(m.generation);
        // promoted again: the earlier publisher connection is still there, its sending
        // stopped at demotion; new tracks restart it (the server lifts its forced mute)
        await m.makeLowLayer();
        for (const source of SOURCES) if (tr[source]) await tr[source].sender.replaceTrack(m.localTrack(source));
      });
      this.state = "speaking";
      prompt("teach_promoted");
    } catch (err) {
      this.state = "failed";
      this.failure = (err && (err.name || err.message)) || "?";
    }
    this.render();
    this.call.renderControls();
    this.call.syncTiles();
  }

  async demoted(noticeKey) {
    const wasSpeaking = this.speaking;
    this.speaking = false;
    this.state = "watching";
    const m = this.media;
    if (m.config) m.config = { ...m.config, can_publish: false };
    if (wasSpeaking) {
      await m.enqueuePub(async () => {
        // the server no longer forwards our tracks and refuses new offers: send nothing
        const tr = (m.pub && m.pub.transceivers) || {};
        for (const source of SOURCES) if (tr[source]) await tr[source].sender.replaceTrack(null);
      });
      for (const track of m.local.getTracks()) track.stop();
      if (m.lowTrack) m.lowTrack.stop();
      m.lowTrack = null;
      m.setLocalTracks(new MediaStream());
    }
    this.notice = noticeKey;
    this.render();
    this.call.renderControls();
    this.call.syncTiles();
  }

  // -- host side ------------------------------------------------------------------------------
  speakers() {
    // observers promoted for this session: their role lacks publish, their grants have it
    return [...this.call.participants.values()].filter((p) => p.role === "observer" && p.grants && p.grants.publish);
  }

  async setSpeaker(identity, speak) {
    try {
      await this.session.call(speak ? "teach:promote" : "teach:demote", { identity });
    } catch (err) {
      this.call.error(err);
    }
  }

  // -- rendering ------------------------------------------------------------------------------
  render() {
    const el = clear(this.el);
    const g = this.call.grants;
    const me = this.call.self;
    const observer = me && me.role === "observer";
    if (!g.publish || (observer && this.speaking)) el.append(this.observerBox());
    else if (g.admit) {
      const observers = [...this.call.participants.values()].some((p) => p.role === "observer");
      if (observers || this.hands.length) el.append(this.handsBox(Boolean(g.moderate)));
    }
    el.hidden = !el.firstChild;
    if (el.hidden) el.removeAttribute("aria-labelledby");
    else el.setAttribute("aria-labelledby", "teaching-title");
  }

  observerBox() {
    const status = h("p", { class: `teach-status ${this.state}`, id: "teach-status", role: "status", "aria-live": "polite", "data-state": this.state });
    if (this.state === "raised") setI18n(status, ["teach_hand_up", { n: this.position || 1 }]);
    else if (this.state === "starting") setI18n(status, "teach_starting");
    else if (this.state === "speaking") setI18n(status, "teach_speaking");
    else if (this.state === "failed") setI18n(status, ["teach_failed", { error: this.failure }]);
    else setI18n(status, this.notice || "teach_watching");
    const box = h("div", { class: "teach-box" }, h("h2", { id: "teaching-title" }, tx("teach_title")), status);
    if (this.speaking) return box;
    if (this.raised) {
      box.append(button("teach_lower", () => this.setHand(false), { id: "teach-lower" }));
      return box;
    }
    this.questionEl = h("input", { type: "text", id: "teach-question", maxlength: "500", i18nAttr: { placeholder: "teach_question_hint" } });
    const form = h(
      "form",
      {
        class: "teach-form",
        onsubmit: (e) => {
          e.preventDefault();
          this.setHand(true);
        },
      },
      h("label", { for: "teach-question" }, tx("teach_question")),
      this.questionEl,
      h("button", { type: "submit", class: "primary", id: "teach-raise" }, tx("teach_raise")),
    );
    box.append(form);
    return box;
  }

  handsBox(canPromote) {
    const n = this.hands.length;
    const list = h("ul", { class: "hands-list", id: "hands-list" });
    for (const hand of this.hands) {
      list.append(
        h(
          "li",
          { class: "hand", "data-identity": hand.identity },
          h("strong", {}, hand.name),
          hand.question ? h("p", { class: "question" }, hand.question) : h("p", { class: "hint" }, tx("teach_no_question")),
          canPromote
            ? button("teach_promote", () => this.setSpeaker(hand.identity, true), { class: "primary", "data-action": "promote" })
            : null,
        ),
      );
    }
    const speakers = this.speakers();
    const speakerList = h("ul", { class: "hands-list", id: "speakers-list" });
    for (const p of speakers) {
      speakerList.append(
        h(
          "li",
          { class: "hand speaker", "data-identity": p.identity },
          h("strong", {}, p.name),
          " ",
          tx("teach_is_speaking"),
          canPromote ? button("teach_demote", () => this.setSpeaker(p.identity, false), { "data-action": "demote" }) : null,
        ),
      );
    }
    return h(
      "div",
      { class: "teach-box" },
      h(
        "h2",
        { id: "teaching-title" },
        tx("teach_hands"),
        " ",
        h("span", { class: `count-badge${n ? " on" : ""}`, id: "hands-count", "data-count": String(n) }, String(n)),
      ),
      n ? list : h("p", { class: "hint" }, tx("teach_no_hands")),
      speakers.length ? [h("h3", {}, tx("teach_speakers")), speakerList] : null,
      canPromote ? null : h("p", { class: "hint" }, tx("teach_host_promotes")),
    );
  }
}
