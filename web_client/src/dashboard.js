// On-duty dashboard for clinicians (/dashboard?token=<duty token>): the queues of their
// departments with cards and triage risk, open device alerts, their consults today; "take next"
// opens a consult with the next patient. A sound, the tab title and a desktop notification
// announce a new patient or alert. Kept current by long polling GET /api/clinic/dashboard.
import { button, clear, formatMinutes, h, setI18n, timeOfDay, tx } from "./dom.js";
import { lang, onLangChange, t } from "./i18n.js";
import { responseRows } from "./symptoms.js";

const BASE_TITLE_KEY = "dash_title";
const RETRY_MS = 3000;

function beep() {
  // two short tones, generated (no sound file to fetch)
  try {
    const ctx = new (window.AudioContext || window.webkitAudioContext)();
    const gain = ctx.createGain();
    gain.gain.value = 0.15;
    gain.connect(ctx.destination);
    [0, 0.25].forEach((at, i) => {
      const osc = ctx.createOscillator();
      osc.frequency.value = i ? 660 : 880;
      osc.connect(gain);
      osc.start(ctx.currentTime + at);
      osc.stop(ctx.currentTime + at + 0.18);
    });
    setTimeout(() => ctx.close(), 1000);
    return true;
  } catch {
    return false;
  }
}

// the triage reasons in the page's language (older queue entries carry English only)
function reasonsText(e) {
  const zh = lang() === "zh-CN" && e.reasons_zh && e.reasons_zh.length === e.reasons.length;
  return (zh ? e.reasons_zh : e.reasons).join(zh ? "；" : "; ");
}

function vitalsText(v) {
  const parts = [];
  if (v.systolic_bp || v.diastolic_bp) parts.push(`BP ${v.systolic_bp ?? "?"}/${v.diastolic_bp ?? "?"}`);
  if (v.heart_rate) parts.push(`HR ${v.heart_rate}`);
  if (v.temperature_c) parts.push(`T ${v.temperature_c} °C`);
  if (v.spo2) parts.push(`SpO₂ ${v.spo2}%`);
  if (v.glucose_mmol_l) parts.push(`Glu ${v.glucose_mmol_l}`);
  return parts.join(" · ");
}

export class Dashboard {
  constructor(root, token) {
    this.root = root;
    this.token = token;
    this.version = "";
    this.seenRooms = null; // null until the first snapshot: nothing is "new" on opening
    this.seenAlerts = null;
    this.unseen = 0;
    this.stopped = false;
    this.events = { beeps: 0, notifications: [] }; // for the browser tests
    window.__tcDash = this;
  }

  async api(method, path) {
    const res = await fetch(path, { method, headers: { Authorization: `Bearer ${this.token}` } });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw { status: res.status, ...(body.error || { code: "unknown", message: String(res.status) }) };
    return body;
  }

  async start() {
    const notifyBtn = button("dash_enable_notifications", () => this.askPermission(), { id: "dash-notify" });
    this.status = h("p", { class: "dash-status", id: "dash-status", role: "status", "aria-live": "polite" });
    this.me = h("p", { class: "dash-me", id: "dash-me" });
    this.queuesBox = h("section", { class: "dash-queues", id: "dash-queues", "aria-labelledby": "dash-queues-title" });
    this.alertsBox = h("section", { class: "dash-alerts", id: "dash-alerts", "aria-labelledby": "dash-alerts-title" });
    this.todayBox = h("section", { class: "dash-today", id: "dash-today", "aria-labelledby": "dash-today-title" });
    this.takeResult = h("p", { class: "form-result", id: "take-result", role: "status", "aria-live": "polite" });
    const take = h("button", { type: "button", class: "primary big", id: "take-next", onclick: () => this.takeNext() }, tx("dash_take_next"));
    clear(this.root).append(
      h(
        "main",
        { class: "screen dashboard", id: "screen-dashboard" },
        h("h1", {}, tx(BASE_TITLE_KEY)),
        this.me,
        h("div", { class: "actions" }, take, notifyBtn),
        this.takeResult,
        this.status,
        h("div", { class: "dash-grid" }, this.queuesBox, h("div", {}, this.alertsBox, this.todayBox)),
      ),
    );
    onLangChange(() => this.last && this.render(this.last, true));
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.clearUnseen();
    });
    this.poll();
  }

  askPermission() {
    if (!("Notification" in window)) return;
    Notification.requestPermission().then((p) => setI18n(this.status, p === "granted" ? "dash_notifications_on" : "dash_notifications_off"));
  }

  async poll() {
    while (!this.stopped) {
      try {
        const since = this.version ? `?since=${encodeURIComponent(this.version)}&wait=20` : "";
        const snap = await this.api("GET", `/api/clinic/dashboard${since}`);
        this.version = snap.version;
        this.render(snap);
      } catch (err) {
        if (err && err.status === 401) {
          setI18n(this.status, ["dash_unauthorized", { message: err.message }]);
          this.stopped = true;
          return;
        }
        setI18n(this.status, "dash_offline");
        await new Promise((r) => setTimeout(r, RETRY_MS));
      }
    }
  }

  render(snap, relabelOnly = false) {
    this.last = snap;
    setI18n(this.me, ["dash_me", { name: snap.me.name, level: t(`level_${snap.me.level}`), departments: snap.me.departments.join(", ") }]);
    this.me.dataset.level = snap.me.level;
    setI18n(this.status, "dash_live");
    const entries = Object.values(snap.queues).flat();
    const rooms = new Set(entries.map((e) => e.room));
    const alerts = snap.alerts.filter((a) => a.status === "open");
    const alertIds = new Set(alerts.map((a) => a.id));
    if (this.seenRooms !== null && !relabelOnly) {
      const arrived = entries.filter((e) => !this.seenRooms.has(e.room));
      const opened = alerts.filter((a) => !this.seenAlerts.has(a.id));
      if (arrived.length || opened.length) this.announce(arrived, opened);
    }
    this.seenRooms = rooms;
    this.seenAlerts = alertIds;
    this.renderQueues(snap);
    this.renderAlerts(alerts);
    this.renderToday(snap.consults_today);
    this.updateTitle(entries.length, alerts.length);
  }

  announce(arrived, opened) {
    this.unseen += arrived.length + opened.length;
    if (beep()) this.events.beeps += 1;
    const title = opened.length ? t("dash_notify_alert", { count: opened.length }) : t("dash_notify_patient", { count: arrived.length });
    const first = opened[0] ? `${opened[0].patient.identity}: ${opened[0].label} ${opened[0].value} ${opened[0].unit}` : arrived[0] ? `${arrived[0].patient.name} (${t(`risk_${arrived[0].risk}`)})` : "";
    this.events.notifications.push({ title, body: first });
    if ("Notification" in window && Notification.permission === "granted") {
      try {
        const n = new Notification(title, { body: first, tag: "teleconsult-duty", renotify: true });
        n.onclick = () => window.focus();
      } catch {
        /* some platforms only allow notifications from a service worker */
      }
    }
  }

  clearUnseen() {
    this.unseen = 0;
    this.updateTitle(this.lastCount || 0, this.lastAlerts || 0);
  }

  updateTitle(count, alerts) {
    this.lastCount = count;
    this.lastAlerts = alerts;
    const mark = this.unseen && document.hidden !== false ? "● " : this.unseen ? "● " : "";
    document.title = `${mark}(${count}${alerts ? ` · ${alerts}!` : ""}) ${t(BASE_TITLE_KEY)}`;
  }

  renderQueues(snap) {
    const box = clear(this.queuesBox);
    box.append(h("h2", { id: "dash-queues-title" }, tx("dash_queues")));
    for (const [dept, entries] of Object.entries(snap.queues)) {
      const list = h("ol", { class: "dash-queue", "data-department": dept });
      for (const e of entries) {
        const card = e.card || {};
        list.append(
          h(
            "li",
            { class: `dash-entry risk-${e.risk}`, "data-room": e.room, "data-identity": e.patient.identity, "data-risk": e.risk },
            h("span", { class: `risk-badge risk-${e.risk}` }, tx(`risk_${e.risk}`)),
            h("strong", {}, ` ${e.patient.name} `),
            h("span", { class: "hint" }, tx("waited", { minutes: formatMinutes(e.waited_s) })),
            card.chief_complaint ? h("p", { class: "chief" }, card.chief_complaint) : null,
            e.reasons.length ? h("p", { class: "reasons" }, reasonsText(e)) : null,
            h("dl", { class: "card-view" }, ...responseRows(card.questionnaire_response), card.vitals ? [h("dt", {}, tx("card_vitals")), h("dd", {}, vitalsText(card.vitals))] : null),
          ),
        );
      }
      box.append(h("h3", {}, dept, ` (${entries.length})`), entries.length ? list : h("p", { class: "hint" }, tx("lobby_empty")));
    }
  }

  renderAlerts(alerts) {
    const box = clear(this.alertsBox);
    box.append(h("h2", { id: "dash-alerts-title" }, tx("dash_alerts")));
    if (!alerts.length) {
      box.append(h("p", { class: "hint" }, tx("dash_no_alerts")));
      return;
    }
    const list = h("ul", { class: "dash-alert-list" });
    for (const a of alerts) {
      const out = h("p", { class: "alert-link" });
      list.append(
        h(
          "li",
          { class: "dash-alert", "data-alert-id": String(a.id), "data-identity": a.patient.identity },
          h("strong", {}, a.patient.identity),
          ` ${lang() === "zh-CN" && a.label_zh ? a.label_zh : a.label}: ${a.value} ${a.unit} `,
          h("span", { class: "flag" }, tx(a.direction === "low" ? "dash_below" : "dash_above", { limit: a.limit })),
          h("span", { class: "hint" }, ` ${timeOfDay(a.opened_at)}`),
          h("button", { type: "button", class: "start-consult", onclick: () => this.startConsult(a, out) }, tx("dash_start_consult")),
          out,
        ),
      );
    }
    box.append(list);
  }

  renderToday(consults) {
    const box = clear(this.todayBox);
    box.append(h("h2", { id: "dash-today-title" }, tx("dash_today")));
    const list = h("ul", { class: "dash-today-list" });
    for (const c of consults) list.append(h("li", { "data-room": c.room }, `${timeOfDay(c.taken_at)} ${c.patient.name} · ${c.department}`, c.risk ? [" ", h("span", { class: `risk-badge risk-${c.risk}` }, tx(`risk_${c.risk}`))] : null));
    box.append(consults.length ? list : h("p", { class: "hint" }, tx("dash_none_today")));
  }

  open(url) {
    // the consult opens on this same origin (the server's public URL may differ from how
    // this clinician reaches it)
    const local = `${location.origin}/join${new URL(url, location.origin).search}`;
    window.open(local, "_blank", "noopener");
    return local;
  }

  async takeNext() {
    try {
      const taken = await this.api("POST", "/api/clinic/take-next");
      setI18n(this.takeResult, ["dash_taken", { name: taken.patient.name, risk: t(`risk_${taken.risk}`) }]);
      this.takeResult.className = "form-result ok";
      this.takeResult.dataset.room = taken.room;
      const local = this.open(taken.url);
      const link = h("a", { href: local, target: "_blank", rel: "noopener", id: "taken-link" }, tx("dash_open_consult"));
      this.takeResult.append(" ", link);
    } catch (err) {
      setI18n(this.takeResult, err.code === "queue_empty" ? "dash_queue_empty" : ["error_prefix", { message: err.message || err.code }]);
      this.takeResult.className = "form-result error";
    }
  }

  async startConsult(alert, out) {
    try {
      const r = await this.api("POST", `/api/clinic/alerts/${alert.id}/start-consult`);
      // the alert leaves the list once handled: the patient's link stays up here
      const local = this.open(r.url);
      clear(this.takeResult).append(
        tx("dash_patient_link"),
        " ",
        h("input", { readonly: true, value: r.patient_url, class: "patient-link", id: "patient-link", "aria-label": t("dash_patient_link") }),
        " ",
        h("a", { href: local, target: "_blank", rel: "noopener" }, tx("dash_open_consult")),
      );
      this.takeResult.className = "form-result ok";
    } catch (err) {
      setI18n(out, ["error_prefix", { message: err.message || err.code }]);
    }
  }
}
