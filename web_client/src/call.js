// The call view: video grid with the active speaker highlighted, own controls, participants with
// roles and host controls, the lobby queue for admitters, chat with history and replies, the
// network indicator, and the side panels (documents, rehab).
import { button, clear, formatMinutes, h, setI18n, timeOfDay, tx } from "./dom.js";
import { t } from "./i18n.js";
import { responseRows } from "./symptoms.js";
import { Teaching } from "./teaching.js";
import { prompt } from "./voice.js";

const ROLE_KEYS = { host: "role_host", clinician: "role_clinician", patient: "role_patient", guest: "role_guest", observer: "role_observer" };

function roleBadge(role) {
  return h("span", { class: `role role-${role}` }, tx(ROLE_KEYS[role] || role));
}

export class CallView {
  constructor(root, session, media, features, panels) {
    this.root = root;
    this.session = session;
    this.media = media;
    this.features = features;
    this.panels = panels; // [{id, labelKey, element}]
    this.participants = new Map();
    this.lobby = [];
    this.room = {};
    this.self = null;
    this.chat = new Map();
    this.replyTo = null;
    this.tiles = new Map(); // key -> tile element
    this.speaker = null;
    this.offs = [];
  }

  // -- state ----------------------------------------------------------------------------------
  get grants() {
    return (this.self && this.self.grants) || {};
  }

  load(state) {
    this.self = state.self;
    this.room = state.room;
    this.participants.clear();
    for (const p of state.room.participants) this.participants.set(p.identity, p);
    this.lobby = state.lobby || [];
    this.recording = state.recording && state.recording.active ? state.recording : null;
    this.chat.clear();
    for (const m of state.chat || []) this.chat.set(m.id, m);
  }

  show(state) {
    this.load(state);
    this.render();
    const s = this.session;
    this.offs.push(
      s.on("joined", (st) => {
        // a reconnect: the join payload restores participants, chat and room state
        this.load(st);
        this.renderPeople();
        this.renderChat();
        this.renderRoomState();
        this.renderRecording();
        this.syncTiles();
      }),
      s.on("participant:joined", (p) => {
        this.participants.set(p.identity, p);
        this.renderPeople();
        this.syncTiles();
      }),
      s.on("participant:updated", (p) => {
        this.participants.set(p.identity, p);
        if (p.identity === this.self.identity) this.self = p;
        this.renderPeople();
        this.syncTiles();
      }),
      s.on("participant:left", (msg) => {
        this.participants.delete(msg.identity);
        this.renderPeople();
        this.syncTiles();
      }),
      s.on("lobby:queue", (msg) => {
        this.lobby = msg.entries;
        this.renderPeople();
      }),
      s.on("room:updated", (msg) => {
        this.room = { ...this.room, ...msg };
        this.renderRoomState();
      }),
      s.on("chat:message", (m) => {
        this.chat.set(m.id, m);
        this.renderChat(true);
      }),
      s.on("mute:request", async (msg) => {
        await this.media.forceMute(msg.kind);
        const kindKey = msg.kind === "audio" ? "device_microphone" : "device_camera";
        this.notice(["muted_by_host", { by: this.nameOf(msg.by), kind: { key: kindKey } }]);
        this.renderControls();
      }),
      s.on("connection", (info) => this.renderConnection(info)),
      s.on("record:state", (st) => {
        this.recording = st && st.active ? st : null;
        if (!this.recording) this.consentRequest = null;
        this.renderRecording();
        this.renderControls();
      }),
      s.on("record:consent_request", (req) => {
        this.consentRequest = req;
        this.renderRecording();
        prompt("record_consent_voice", { by: this.nameOf(req.by) });
      }),
    );
    this.media.on("remote", () => this.syncTiles());
    this.media.on("remote-gone", () => this.syncTiles());
    this.media.on("speaker", (msg) => this.setSpeaker(msg.identity));
    this.media.on("remote-muted", () => this.syncTiles());
    this.media.on("quality", (q) => this.renderQuality(q.quality));
    this.media.on("local-muted", () => {
      this.renderControls();
      this.syncTiles();
    });
    this.media.on("screen", () => {
      this.renderControls();
      this.syncTiles();
    });
    prompt("call_title");
    this.teaching = new Teaching(this); // raise hand / hands list (teaching rounds)
  }

  hide() {
    for (const off of this.offs.splice(0)) off();
    if (this.teaching) this.teaching.hide();
  }

  nameOf(identity) {
    const p = this.participants.get(identity);
    return p ? p.name : identity;
  }

  // -- layout ---------------------------------------------------------------------------------
  render() {
    const root = clear(this.root);
    this.grid = h("div", { class: "video-grid", id: "video-grid", "aria-label": "video" });
    this.controls = h("div", { class: "controls", role: "toolbar", "aria-label": "call controls" });
    this.noticeEl = h("div", { class: "notice", id: "call-notice", role: "status", "aria-live": "polite", hidden: true });
    this.netEl = h("span", { class: "net good", id: "net-indicator", role: "status" }, tx("network_good"));
    this.lockEl = h("span", { class: "locked-badge", id: "locked-badge", hidden: true }, tx("room_locked"));
    this.recEl = h("div", { class: "recording", id: "recording" });
    this.peopleEl = h("div", { class: "people", id: "people" });
    this.chatEl = this.buildChat();
    const tabs = [
      { id: "people", labelKey: "participants", element: this.peopleEl },
      { id: "chat", labelKey: "chat", element: this.chatEl },
      ...this.panels,
    ];
    this.tabButtons = h("div", { class: "tabs", role: "tablist" });
    this.tabBodies = h("div", { class: "tab-bodies" });
    for (const tab of tabs) {
      const btn = h("button", { type: "button", role: "tab", id: `tab-${tab.id}`, "aria-controls": `panel-${tab.id}`, onclick: () => this.selectTab(tab.id) }, tx(tab.labelKey));
      btn.addEventListener("keydown", (e) => this.tabKeys(e));
      this.tabButtons.append(btn);
      this.tabBodies.append(h("section", { class: "tab-body", role: "tabpanel", id: `panel-${tab.id}`, "aria-labelledby": `tab-${tab.id}`, hidden: true }, tab.element));
    }
    root.append(
      h(
        "main",
        { class: "screen call", id: "screen-call" },
        h("div", { class: "call-status" }, h("h1", { class: "visually-hidden" }, tx("call_title")), this.netEl, this.lockEl, this.recEl, this.noticeEl),
        h("div", { class: "call-layout" }, h("div", { class: "stage" }, this.grid, this.controls), h("aside", { class: "side" }, this.tabButtons, this.tabBodies)),
      ),
    );
    this.selectTab("people");
    this.renderControls();
    this.renderPeople();
    this.renderChat();
    this.renderRoomState();
    this.renderRecording();
    this.syncTiles();
  }

  // -- recording (with consent) ---------------------------------------------------------------
  renderRecording() {
    if (!this.recEl) return;
    const el = clear(this.recEl);
    const rec = this.recording;
    const me = this.self && this.self.identity;
    const req = this.consentRequest;
    if (req && rec && req.recording_id !== rec.recording_id) this.consentRequest = null;
    if (this.consentRequest) {
      el.append(
        h(
          "div",
          { class: "consent", id: "consent-prompt", role: "alertdialog", "aria-labelledby": "consent-text" },
          h("p", { id: "consent-text" }, tx("record_consent", { by: this.nameOf(this.consentRequest.by) })),
          this.consentRequest.reason ? h("p", { class: "hint" }, tx("by_reason", { reason: this.consentRequest.reason })) : null,
          h("div", { class: "row-actions" }, button("record_agree", () => this.consent(true), { class: "primary", id: "consent-yes" }), button("record_decline", () => this.consent(false), { id: "consent-no" })),
        ),
      );
    }
    if (!rec) return;
    const mine = rec.consented.includes(me) ? "yes" : rec.declined.includes(me) ? "no" : null;
    el.append(
      h(
        "span",
        { class: "rec-badge", id: "rec-badge", role: "status" },
        "● ",
        tx("recording_on"),
        mine ? [" · ", tx(mine === "yes" ? "record_you_agreed" : "record_you_declined")] : null,
      ),
    );
    if (mine) el.append(button("record_change", () => this.consent(mine !== "yes"), { class: "link", id: "consent-change" }));
  }

  async consent(agree) {
    const rec = this.recording || (this.consentRequest && { recording_id: this.consentRequest.recording_id });
    if (!rec) return;
    try {
      const ack = await this.session.call("record:consent", { recording_id: rec.recording_id, consent: agree });
      this.recording = ack.recording;
      this.consentRequest = null;
      this.renderRecording();
    } catch (err) {
      this.error(err);
    }
  }

  selectTab(id) {
    for (const btn of this.tabButtons.children) {
      const on = btn.id === `tab-${id}`;
      btn.setAttribute("aria-selected", on ? "true" : "false");
      btn.tabIndex = on ? 0 : -1;
    }
    for (const body of this.tabBodies.children) body.hidden = body.id !== `panel-${id}`;
    // the image viewer needs room: widen the side panel while it is open
    const layout = this.root.querySelector(".call-layout");
    if (layout) layout.classList.toggle("wide-side", id === "documents" || id === "rehab");
    this.currentTab = id;
    if (id === "chat") this.chatUnread(false);
  }

  tabKeys(e) {
    const buttons = [...this.tabButtons.children];
    const i = buttons.indexOf(e.currentTarget);
    let next = null;
    if (e.key === "ArrowRight") next = buttons[(i + 1) % buttons.length];
    if (e.key === "ArrowLeft") next = buttons[(i - 1 + buttons.length) % buttons.length];
    if (next) {
      e.preventDefault();
      next.focus();
      next.click();
    }
  }

  notice(spec) {
    setI18n(this.noticeEl, spec);
    this.noticeEl.hidden = false;
  }

  renderConnection(info) {
    if (info.status === "lost" || info.status === "reconnecting") {
      this.netEl.className = "net offline";
      setI18n(this.netEl, "network_offline");
      this.notice(["reconnecting", { n: info.attempt || 1 }]);
    } else if (info.status === "restored") {
      this.renderQuality(this.media.quality);
      this.notice("reconnected");
    }
  }

  renderQuality(quality) {
    if (this.session.state !== "joined") return;
    this.netEl.className = `net ${quality}`;
    this.netEl.dataset.quality = quality;
    setI18n(this.netEl, `network_${quality}`);
  }

  renderRoomState() {
    this.lockEl.hidden = !this.room.locked;
    this.renderControls();
  }

  // -- controls -------------------------------------------------------------------------------
  renderControls() {
    if (!this.controls) return;
    const m = this.media;
    const c = clear(this.controls);
    const hasMic = Boolean(m.localTrack("microphone"));
    const hasCam = Boolean(m.localTrack("camera"));
    const canPublish = Boolean(this.grants.publish);
    c.append(
      button(m.muted.microphone ? "unmute" : "mute", () => m.setMuted("microphone", !m.muted.microphone), {
        id: "btn-mute",
        class: m.muted.microphone ? "toggled" : "",
        "aria-pressed": m.muted.microphone ? "true" : "false",
        disabled: !hasMic || !canPublish,
      }),
      button(m.muted.camera ? "camera_on" : "camera_off", () => m.setMuted("camera", !m.muted.camera), {
        id: "btn-camera",
        class: m.muted.camera ? "toggled" : "",
        "aria-pressed": m.muted.camera ? "true" : "false",
        disabled: !hasCam || !canPublish,
      }),
    );
    if (navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia && canPublish && this.features.media) {
      c.append(
        button(m.screenTrack ? "stop_share" : "share_screen", () => (m.screenTrack ? m.stopScreen() : m.startScreen().catch((err) => this.notice(["error_prefix", { message: err.message }]))), {
          id: "btn-share",
        }),
      );
    }
    if (this.grants.record) {
      c.append(
        this.recording
          ? button("record_stop", () => this.session.call("record:stop", {}).catch((e) => this.error(e)), { id: "btn-record" })
          : button("record_start", () => this.session.call("record:start", {}).catch((e) => this.error(e)), { id: "btn-record" }),
      );
    }
    if (this.grants.moderate) {
      c.append(
        button(this.room.locked ? "unlock_room" : "lock_room", () => this.session.call("host:lock", { locked: !this.room.locked }).catch((err) => this.error(err)), { id: "btn-lock" }),
        button(
          "end_for_all",
          () => {
            if (window.confirm(t("confirm_end"))) this.session.call("host:end", {}).catch((err) => this.error(err));
          },
          { id: "btn-end", class: "danger" },
        ),
      );
    }
    c.append(button("leave_call", () => this.onLeave && this.onLeave(), { id: "btn-leave", class: "danger" }));
  }

  error(err) {
    this.notice(["error_prefix", { message: (err && (err.message || err.code)) || "?" }]);
  }

  // -- people and lobby -----------------------------------------------------------------------
  renderPeople() {
    if (!this.peopleEl) return;
    const el = clear(this.peopleEl);
    if (this.grants.admit) {
      const queue = h("ul", { class: "lobby-list", id: "lobby-list" });
      for (const entry of this.lobby) queue.append(this.lobbyEntry(entry));
      el.append(
        h(
          "section",
          { class: "lobby", "aria-labelledby": "lobby-title" },
          h("h2", { id: "lobby-title" }, tx("lobby"), ` (${this.lobby.length})`),
          this.lobby.length ? queue : h("p", { class: "hint" }, tx("lobby_empty")),
          this.lobby.length > 1 ? button("admit_all", () => this.session.call("lobby:admit_all", {}).catch((e) => this.error(e)), { id: "admit-all" }) : null,
        ),
      );
    }
    const list = h("ul", { class: "participant-list", id: "participant-list" });
    for (const p of this.participants.values()) list.append(this.participantRow(p));
    el.append(h("h2", {}, tx("participants"), ` (${this.participants.size})`), list);
  }

  lobbyEntry(entry) {
    const card = entry.card;
    const details = card
      ? h(
          "dl",
          { class: "card-view" },
          h("dt", {}, tx("card_chief")),
          h("dd", { class: "chief" }, card.chief_complaint),
          ...(card.symptoms || []).flatMap((s) => [h("dt", {}, s.question), h("dd", {}, s.answer)]),
          ...responseRows(card.questionnaire_response),
          card.medications && card.medications.length ? [h("dt", {}, tx("card_medications")), h("dd", {}, card.medications.join(", "))] : null,
          card.allergies && card.allergies.length ? [h("dt", {}, tx("card_allergies")), h("dd", {}, card.allergies.join(", "))] : null,
          card.vitals ? [h("dt", {}, tx("card_vitals")), h("dd", {}, vitalsText(card.vitals))] : null,
          card.notes ? [h("dt", {}, tx("card_notes")), h("dd", {}, card.notes)] : null,
        )
      : h("p", { class: "hint" }, tx("no_card"));
    return h(
      "li",
      { class: "lobby-entry", "data-identity": entry.identity },
      h("div", { class: "who" }, h("strong", {}, entry.name), " ", roleBadge(entry.role), " ", h("span", { class: "hint" }, tx("waited", { minutes: formatMinutes(entry.waited_s) }))),
      details,
      h(
        "div",
        { class: "row-actions" },
        button("admit", () => this.session.call("lobby:admit", { identity: entry.identity }).catch((e) => this.error(e)), { class: "primary", "data-action": "admit" }),
        button("deny", () => this.session.call("lobby:deny", { identity: entry.identity }).catch((e) => this.error(e)), { "data-action": "deny" }),
      ),
    );
  }

  participantRow(p) {
    const isSelf = this.self && p.identity === this.self.identity;
    const actions = h("div", { class: "row-actions" });
    if (this.grants.moderate && !isSelf) {
      actions.append(
        button("host_mute", () => this.session.call("host:mute", { identity: p.identity, kind: "audio" }).catch((e) => this.error(e)), { "data-action": "mute", disabled: p.muted && p.muted.audio }),
        button("host_mute_video", () => this.session.call("host:mute", { identity: p.identity, kind: "video" }).catch((e) => this.error(e)), { "data-action": "mute-video", disabled: p.muted && p.muted.video }),
        button(
          "host_remove",
          () => {
            if (window.confirm(t("confirm_remove", { name: p.name }))) this.session.call("host:remove", { identity: p.identity }).catch((e) => this.error(e));
          },
          { "data-action": "remove", class: "danger" },
        ),
      );
    }
    const flags = [];
    if (p.muted && p.muted.audio) flags.push(h("span", { class: "flag" }, tx("muted_label")));
    if (p.muted && p.muted.video) flags.push(h("span", { class: "flag" }, tx("camera_off_label")));
    return h(
      "li",
      { class: "participant", "data-identity": p.identity },
      h("div", { class: "who" }, h("strong", {}, p.name), isSelf ? [" (", tx("you"), ")"] : null, " ", roleBadge(p.role), " ", ...flags),
      actions,
    );
  }

  // -- chat -----------------------------------------------------------------------------------
  buildChat() {
    this.chatList = h("ol", { class: "chat-list", id: "chat-list", "aria-live": "polite" });
    this.replyBar = h("div", { class: "reply-bar", hidden: true });
    this.chatInput = h("textarea", { id: "chat-input", rows: "2", maxlength: "4000", i18nAttr: { placeholder: "chat_placeholder", "aria-label": "chat_placeholder" } });
    this.chatInput.addEventListener("keydown", (e) => {
      // Enter sends, Shift+Enter breaks the line; Enter that confirms an IME composition
      // (Chinese input) must not send
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        this.sendChat();
      }
    });
    const form = h(
      "form",
      {
        class: "chat-form",
        onsubmit: (e) => {
          e.preventDefault();
          this.sendChat();
        },
      },
      this.replyBar,
      this.chatInput,
      h("button", { type: "submit", class: "primary", id: "chat-send" }, tx("chat_send")),
    );
    return h("div", { class: "chat" }, button("chat_older", () => this.loadOlder(), { id: "chat-older", class: "link" }), this.chatList, form);
  }

  async sendChat() {
    const text = this.chatInput.value.trim();
    if (!text) return;
    const payload = { text };
    if (this.replyTo) payload.reply_to = this.replyTo;
    try {
      await this.session.call("chat:send", payload);
      this.chatInput.value = "";
      this.setReply(null);
    } catch (err) {
      this.error(err);
    }
  }

  async loadOlder() {
    const ids = [...this.chat.keys()];
    const before = ids.length ? Math.min(...ids) : undefined;
    try {
      const ack = await this.session.call("chat:history", before ? { before_id: before, limit: 50 } : { limit: 50 });
      for (const m of ack.messages) this.chat.set(m.id, m);
      this.renderChat();
    } catch (err) {
      this.error(err);
    }
  }

  setReply(id) {
    this.replyTo = id;
    const bar = clear(this.replyBar);
    if (!id) {
      bar.hidden = true;
      return;
    }
    const m = this.chat.get(id);
    bar.hidden = false;
    bar.append(tx("chat_replying", { name: m ? m.sender.name : "?" }), " ", button("chat_cancel_reply", () => this.setReply(null), { class: "link" }));
    this.chatInput.focus();
  }

  chatUnread(on) {
    const tab = this.tabButtons && this.tabButtons.querySelector("#tab-chat");
    if (tab) tab.classList.toggle("unread", on);
  }

  renderChat(incoming = false) {
    if (!this.chatList) return;
    const list = clear(this.chatList);
    const messages = [...this.chat.values()].sort((a, b) => a.id - b.id);
    if (!messages.length) list.append(h("li", { class: "hint" }, tx("chat_empty")));
    for (const m of messages) {
      const quoted = m.reply_to ? this.chat.get(m.reply_to) : null;
      const mine = this.self && m.sender.identity === this.self.identity;
      list.append(
        h(
          "li",
          { class: `chat-msg${mine ? " mine" : ""}`, "data-id": String(m.id) },
          h("div", { class: "meta" }, h("strong", {}, m.sender.name), " ", roleBadge(m.sender.role), " ", h("time", {}, timeOfDay(m.ts))),
          quoted ? h("blockquote", { class: "quote" }, h("strong", {}, quoted.sender.name), ": ", quoted.text.slice(0, 140)) : null,
          h("p", { class: "text" }, m.text),
          button("chat_reply", () => this.setReply(m.id), { class: "link reply" }),
        ),
      );
    }
    list.scrollTop = list.scrollHeight;
    if (incoming && this.currentTab !== "chat") this.chatUnread(true);
  }

  // -- video tiles ----------------------------------------------------------------------------
  tile(key, label, stream, { mirror = false, muted = false, identity = null, screen = false, off = false } = {}) {
    let tile = this.tiles.get(key);
    if (!tile) {
      const video = h("video", { autoplay: true, playsInline: true, muted });
      video.muted = muted;
      const speaker = savedSpeaker();
      if (!muted && speaker && video.setSinkId) video.setSinkId(speaker).catch(() => null);
      tile = h("figure", { class: "tile", "data-key": key, "data-identity": identity || "" }, video, h("figcaption", {}));
      tile.video = video;
      this.tiles.set(key, tile);
    }
    tile.classList.toggle("mirror", mirror);
    tile.classList.toggle("screen", screen);
    const video = tile.video;
    if (video.srcObject !== stream) video.srcObject = stream || null;
    const hasVideo = stream && stream.getVideoTracks().length > 0;
    tile.classList.toggle("no-video", !hasVideo || off);
    const caption = clear(tile.lastChild);
    caption.append(...label);
    return tile;
  }

  syncTiles() {
    if (!this.grid) return;
    const wanted = [];
    const m = this.media;
    const me = this.self;
    if (me) {
      const local = new MediaStream(m.local.getVideoTracks());
      const key = "self";
      const prev = this.tiles.get(key);
      const stream = prev && prev.video.srcObject && sameTracks(prev.video.srcObject, local) ? prev.video.srcObject : local;
      const label = [me.name, " (", tx("you"), ")"];
      if (m.muted.microphone) label.push(" · ", tx("muted_label"));
      wanted.push(this.tile(key, label, stream, { mirror: true, muted: true, identity: me.identity, off: m.muted.camera }));
      if (m.screenTrack) {
        const sk = "self-screen";
        const prevS = this.tiles.get(sk);
        const sstream = prevS && prevS.video.srcObject && prevS.video.srcObject.getTracks()[0] === m.screenTrack ? prevS.video.srcObject : new MediaStream([m.screenTrack]);
        wanted.push(this.tile(sk, [me.name, " · ", tx("screen_label")], sstream, { muted: true, identity: me.identity, screen: true }));
      }
    }
    for (const p of this.participants.values()) {
      if (me && p.identity === me.identity) continue;
      const entry = m.remote.get(p.identity);
      const label = [p.name, " ", roleBadge(p.role)];
      if (p.muted && p.muted.audio) label.push(" · ", tx("muted_label"));
      const camOff = Boolean(p.muted && p.muted.video);
      wanted.push(this.tile(`p:${p.identity}`, label, entry ? entry.main : null, { identity: p.identity, off: camOff }));
      if (entry && entry.screen) wanted.push(this.tile(`s:${p.identity}`, [p.name, " · ", tx("screen_label")], entry.screen, { identity: p.identity, screen: true }));
    }
    for (const [key, tile] of this.tiles) {
      if (!wanted.includes(tile)) {
        tile.remove();
        this.tiles.delete(key);
      }
    }
    // keep the order without moving tiles that are already in place (moving a playing video
    // element is wasted work)
    wanted.forEach((tile, i) => {
      if (this.grid.children[i] !== tile) this.grid.insertBefore(tile, this.grid.children[i] || null);
    });
    this.grid.dataset.count = String(wanted.length);
    if (!this.features.media) {
      if (!this.grid.querySelector(".unavailable")) this.grid.append(h("p", { class: "unavailable" }, tx("video_unavailable")));
    }
    this.setSpeaker(this.speaker);
  }

  setSpeaker(identity) {
    this.speaker = identity;
    for (const tile of this.tiles.values()) {
      tile.classList.toggle("speaking", Boolean(identity) && tile.dataset.identity === identity && !tile.classList.contains("screen"));
    }
  }
}

function savedSpeaker() {
  try {
    return localStorage.getItem("tc.device.speaker");
  } catch {
    return null;
  }
}

function sameTracks(a, b) {
  const x = a.getTracks();
  const y = b.getTracks();
  return x.length === y.length && x.every((track, i) => track === y[i]);
}

function vitalsText(v) {
  const parts = [];
  if (v.systolic_bp || v.diastolic_bp) parts.push(`BP ${v.systolic_bp ?? "?"}/${v.diastolic_bp ?? "?"}`);
  if (v.heart_rate) parts.push(`HR ${v.heart_rate}`);
  if (v.temperature_c) parts.push(`T ${v.temperature_c} °C`);
  if (v.spo2) parts.push(`SpO₂ ${v.spo2}%`);
  if (v.respiratory_rate) parts.push(`RR ${v.respiratory_rate}`);
  if (v.glucose_mmol_l) parts.push(`Glu ${v.glucose_mmol_l}`);
  if (v.weight_kg) parts.push(`${v.weight_kg} kg`);
  return parts.join(" · ");
}
