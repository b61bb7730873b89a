// Waiting room: queue position and expected wait, the pre-consult card (PreConsultCard in
// docs/protocol.md) and the hospital's health-education content (local files).
import { button, clear, formatMinutes, h, setI18n, tx } from "./dom.js";
import { lang, onLangChange } from "./i18n.js";
import { SymptomTree } from "./symptoms.js";
import { prompt } from "./voice.js";

function lines(text) {
  return text
    .split("\n")
    .map((s) => s.trim())
    .filter(Boolean)
    .slice(0, 50)
    .map((s) => s.slice(0, 200));
}

function num(form, name, integer) {
  const raw = form.elements[name].value.trim();
  if (!raw) return undefined;
  const value = Number(raw);
  if (!Number.isFinite(value)) return undefined;
  return integer ? Math.round(value) : value;
}

export function cardFromForm(form) {
  const symptoms = [];
  const pain = form.elements.pain.value.trim();
  if (pain) symptoms.push({ question: "Pain 0-10", answer: pain.slice(0, 500) });
  const since = form.elements.since.value.trim();
  if (since) symptoms.push({ question: "Since when", answer: since.slice(0, 500) });
  const vitals = {
    systolic_bp: num(form, "systolic_bp", true),
    diastolic_bp: num(form, "diastolic_bp", true),
    heart_rate: num(form, "heart_rate", true),
    temperature_c: num(form, "temperature_c", false),
    spo2: num(form, "spo2", true),
    glucose_mmol_l: num(form, "glucose_mmol_l", false),
    weight_kg: num(form, "weight_kg", false),
  };
  const hasVitals = Object.values(vitals).some((v) => v !== undefined);
  const card = {
    chief_complaint: form.elements.chief_complaint.value.trim().slice(0, 500),
    symptoms,
    medications: lines(form.elements.medications.value),
    allergies: lines(form.elements.allergies.value),
    notes: form.elements.notes.value.trim().slice(0, 2000),
  };
  if (hasVitals) {
    for (const key of Object.keys(vitals)) if (vitals[key] === undefined) delete vitals[key];
    vitals.measured_at = new Date().toISOString().slice(0, 16);
    card.vitals = vitals;
  }
  return card;
}

function field(labelKey, input) {
  return h("label", { class: "field" }, h("span", { class: "label" }, tx(labelKey)), input);
}

function numberInput(name, min, max, step = "1") {
  return h("input", { name, type: "number", inputmode: "decimal", min, max, step });
}

export class WaitingRoom {
  constructor(root, session, onLeave) {
    this.root = root;
    this.session = session;
    this.onLeave = onLeave;
    this.offs = [];
  }

  show(state) {
    const root = clear(this.root);
    this.status = h("div", { class: "queue", id: "queue-status", role: "status", "aria-live": "polite" });
    this.symptoms = new SymptomTree();
    this.symptoms.load();
    this.form = this.cardForm();
    this.education = h("div", { class: "education", id: "education" });
    root.append(
      h(
        "main",
        { class: "screen waiting", id: "screen-waiting" },
        h("h1", {}, tx("waiting_title")),
        this.status,
        h(
          "div",
          { class: "waiting-grid" },
          h("section", { class: "card-form", "aria-labelledby": "card-title" }, h("h2", { id: "card-title" }, tx("card_title")), h("p", { class: "hint" }, tx("card_intro")), this.form),
          h("section", { class: "education-box", "aria-labelledby": "edu-title" }, h("h2", { id: "edu-title" }, tx("education_title")), this.education),
        ),
        h("div", { class: "actions" }, button("leave", () => this.onLeave(), { id: "leave-waiting" })),
      ),
    );
    this.update(state);
    this.loadEducation();
    this.offs.push(this.session.on("lobby:position", (pos) => this.update(pos)));
    this.offs.push(onLangChange(() => this.loadEducation()));
    prompt("waiting_voice", { position: state.position });
  }

  hide() {
    for (const off of this.offs.splice(0)) off();
    if (this.symptoms) this.symptoms.close();
  }

  update(state) {
    const rows = [h("p", { class: "position big-number", id: "queue-position" }, tx("waiting_position", { position: state.position }))];
    rows.push(h("p", {}, tx("waiting_count", { waiting: state.waiting })));
    rows.push(
      h(
        "p",
        { id: "expected-wait" },
        state.expected_wait_s == null ? tx("waiting_expected_unknown") : tx("waiting_expected", { minutes: formatMinutes(state.expected_wait_s) }),
      ),
    );
    const present = Boolean(state.admitters_present);
    rows.push(h("p", { class: `doctor-presence${present ? " present" : ""}`, id: "doctor-presence", "data-present": String(present) }, tx(present ? "waiting_doctor_present" : "waiting_no_doctor")));
    clear(this.status).append(...rows);
    // say it once when the doctor arrives (lobby:position carries admitters_present)
    if (present && this.doctorPresent === false) prompt("waiting_doctor_present");
    this.doctorPresent = present;
  }

  cardForm() {
    const result = h("p", { class: "form-result", id: "card-result", role: "status", "aria-live": "polite" });
    const form = h(
      "form",
      {
        id: "card-form",
        onsubmit: async (e) => {
          e.preventDefault();
          const card = cardFromForm(form);
          const answers = this.symptoms.response();
          if (answers) card.questionnaire_response = answers;
          if (!card.chief_complaint) card.chief_complaint = this.symptoms.summary();
          if (!card.chief_complaint) {
            setI18n(result, "card_need_chief");
            result.className = "form-result error";
            return;
          }
          try {
            await this.session.call("lobby:card", { card });
            this.session.card = card; // re-sent on a reconnect
            setI18n(result, "card_sent");
            result.className = "form-result ok";
          } catch (err) {
            setI18n(result, ["card_invalid", { message: err.message || err.code }]);
            result.className = "form-result error";
          }
        },
      },
      h("fieldset", { class: "symptoms-box" }, h("legend", {}, tx("symptoms_title")), this.symptoms.element),
      field("card_chief", h("textarea", { name: "chief_complaint", maxlength: "500", rows: "2" })),
      h("div", { class: "two" }, field("card_pain", numberInput("pain", "0", "10")), field("card_duration", h("input", { name: "since", maxlength: "100" }))),
      field("card_medications", h("textarea", { name: "medications", rows: "2" })),
      field("card_allergies", h("textarea", { name: "allergies", rows: "2" })),
      h(
        "fieldset",
        {},
        h("legend", {}, tx("card_vitals")),
        h(
          "div",
          { class: "vitals" },
          field("card_bp_sys", numberInput("systolic_bp", "40", "300")),
          field("card_bp_dia", numberInput("diastolic_bp", "20", "200")),
          field("card_hr", numberInput("heart_rate", "20", "300")),
          field("card_temp", numberInput("temperature_c", "30", "45", "0.1")),
          field("card_spo2", numberInput("spo2", "50", "100")),
          field("card_glucose", numberInput("glucose_mmol_l", "0.5", "60", "0.1")),
          field("card_weight", numberInput("weight_kg", "0.5", "500", "0.1")),
        ),
      ),
      field("card_notes", h("textarea", { name: "notes", maxlength: "2000", rows: "2" })),
      h("button", { type: "submit", class: "primary", id: "card-send" }, tx("card_send")),
      result,
    );
    return form;
  }

  async loadEducation() {
    let items = [];
    try {
      const res = await fetch("/api/education");
      items = (await res.json()).items || [];
    } catch {
      items = [];
    }
    const want = lang();
    // prefer the current language; items without a language tag always show
    const shown = items.filter((item) => !item.lang || item.lang === want);
    const box = clear(this.education);
    for (const item of shown) {
      const article = h("article", { class: "edu-item" });
      if (item.kind === "text") {
        const res = await fetch(item.url).catch(() => null);
        const text = res && res.ok ? await res.text() : "";
        const [first, ...rest] = text.split("\n");
        article.append(h("h3", {}, first.replace(/^#+\s*/, "")), ...rest.filter((l) => l.trim()).map((l) => h("p", {}, l)));
      } else if (item.kind === "image") {
        article.append(h("h3", {}, item.title), h("img", { src: item.url, alt: item.title, loading: "lazy" }));
      } else if (item.kind === "video") {
        article.append(h("h3", {}, item.title), h("video", { src: item.url, controls: true, preload: "metadata" }));
      }
      box.append(article);
    }
  }
}
