// Entry point: /join?token=... -> device check -> join -> waiting room -> call.
import { CallView } from "./call.js";
import { Dashboard } from "./dashboard.js";
import { DeviceCheck } from "./devicecheck.js";
import { button, clear, h, relabel, setI18n, tx } from "./dom.js";
import { hasKey, lang, onLangChange, setLang } from "./i18n.js";
import { Media } from "./media.js";
import { RecordView } from "./record.js";
import { DocumentsPanel } from "./mdt.js";
import { RehabPanel } from "./rehab.js";
import { Session } from "./session.js";
import { applyElderly, isElderly, onElderlyChange, prompt, setElderly } from "./voice.js";
import { WaitingRoom } from "./waiting.js";

const app = {
  screen: null,
  session: null,
  media: null,
  call: null,
  waiting: null,
  features: { media: false, documents: false, rehab: false },
};
window.__tc = app; // for the end-to-end tests and for debugging in the console

function header() {
  const langBtn = h("button", { type: "button", id: "lang-switch", onclick: () => setLang(lang() === "en" ? "zh-CN" : "en"), i18nAttr: { "aria-label": "lang_switch_label" } }, tx("lang_switch"));
  const elderlyBtn = h("button", {
    type: "button",
    id: "elderly-switch",
    "aria-pressed": isElderly() ? "true" : "false",
    onclick: () => setElderly(!isElderly()),
  }, tx(isElderly() ? "elderly_off" : "elderly_on"));
  onElderlyChange((on) => {
    elderlyBtn.setAttribute("aria-pressed", on ? "true" : "false");
    setI18n(elderlyBtn.firstChild, on ? "elderly_off" : "elderly_on");
  });
  return h("header", { class: "topbar" }, h("span", { class: "brand" }, tx("app_title")), h("div", { class: "topbar-actions" }, langBtn, elderlyBtn));
}

function screenRoot() {
  return document.getElementById("screen");
}

function message(id, titleKey, bodySpec, extra = []) {
  if (app.waiting) app.waiting.hide();
  if (app.call) app.call.hide();
  if (app.media) app.media.close();
  const root = clear(screenRoot());
  root.append(
    h(
      "main",
      { class: "screen message", id },
      h("h1", {}, tx(titleKey)),
      bodySpec ? h("p", { class: "lead", id: "message-body" }, Array.isArray(bodySpec) ? tx(...bodySpec) : tx(bodySpec)) : null,
      ...extra,
    ),
  );
  prompt(titleKey);
}

function refused(refusal) {
  app.screen = "refused";
  const code = refusal && refusal.code;
  const key = code && hasKey(`refused_${code}`) ? `refused_${code}` : "refused_token_invalid";
  message("screen-refused", "refused_title", key, [
    refusal && refusal.message ? h("p", { class: "server-message", id: "server-message", "data-code": code || "" }, tx("server_says", { message: refusal.message })) : null,
  ]);
}

function ended(titleKey, detail) {
  const reason = detail && detail.reason ? h("p", {}, tx("by_reason", { reason: detail.reason })) : null;
  const rejoin = titleKey === "left_title" || titleKey === "replaced_title" ? button("rejoin", () => location.reload(), { class: "primary big", id: "rejoin" }) : null;
  app.screen = "ended";
  const body = titleKey === "replaced_title" ? "replaced_body" : rejoin ? null : "close_window";
  // a host or clinician reads the consult record after the consult (record.js)
  const role = app.session && app.session.claims && app.session.claims.role;
  const canRead = (titleKey === "ended_title" || titleKey === "left_title") && (role === "host" || role === "clinician");
  const openRecord = canRead ? button("record_open", () => showRecord(), { class: "primary big", id: "open-record" }) : null;
  message(`screen-${titleKey.replace("_title", "")}`, titleKey, body, [reason, rejoin, openRecord]);
}

function showRecord() {
  app.screen = "record";
  app.record = new RecordView(screenRoot(), app.session);
  return app.record.show();
}

async function leave() {
  if (app.media) app.media.close();
  await app.session.leave();
  ended("left_title");
}

function showCall(state) {
  if (app.waiting) app.waiting.hide();
  app.session.joined = state;
  const docs = new DocumentsPanel(app.session, app.features);
  const rehab = new RehabPanel(app.session, app.media, app.features, app.exercises, () => (app.call ? [...app.call.participants.values()] : []));
  app.rehab = rehab;
  app.docs = docs;
  const panels = [
    { id: "documents", labelKey: "documents", element: docs.element },
    { id: "rehab", labelKey: "rehab", element: rehab.element },
  ];
  app.call = new CallView(screenRoot(), app.session, app.media, app.features, panels);
  app.call.onLeave = leave;
  app.call.show(state);
  docs.refresh();
  app.screen = "call";
}

function showWaiting(state) {
  app.waiting = new WaitingRoom(screenRoot(), app.session, leave);
  app.waiting.show(state);
  app.screen = "waiting";
}

async function start() {
  applyElderly();
  document.documentElement.lang = lang();
  document.body.prepend(header());
  onLangChange(() => relabel(document));
  const token = new URLSearchParams(location.search).get("token");
  if (location.pathname === "/dashboard" && token) {
    // a clinician's on-duty dashboard (duty token), docs/clinic.md
    app.screen = "dashboard";
    await new Dashboard(screenRoot(), token).start();
    return;
  }
  if (!token) {
    message("screen-no-token", "no_token_title", "no_token_body");
    return;
  }
  try {
    const res = await fetch("/api/client-config");
    const config = await res.json();
    app.features = config.features;
    app.exercises = config.exercises || [];
  } catch {
    /* keep everything marked unavailable */
  }
  const session = new Session(token);
  app.session = session;
  const media = new Media(session);
  app.media = media;
  const check = new DeviceCheck(screenRoot(), session);
  app.screen = "check";
  const outcome = await check.run();
  if (outcome.refused) {
    refused(outcome.refused);
    return;
  }
  media.setLocalTracks(outcome.stream);
  // screens follow the session: first join, admission, and re-joins after a reconnect
  session.on("joined", (state) => {
    if (app.screen !== "call") showCall(state);
  });
  session.on("waiting", (state) => {
    if (app.screen !== "waiting") showWaiting(state);
    else app.waiting.update(state);
  });
  session.on("lobby:admitted", (state) => session.applyJoin(state));
  session.on("lobby:denied", (d) => ended("denied_title", d));
  session.on("removed", (d) => ended("removed_title", d));
  session.on("room:ended", (d) => {
    session.close();
    ended("ended_title", d);
  });
  session.on("replaced", () => ended("replaced_title"));
  session.on("fatal", (refusal) => refused(refusal));
  try {
    await session.join();
  } catch (err) {
    refused(err);
  }
}

start();
