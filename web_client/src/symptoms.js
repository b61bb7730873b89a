// The symptom tree: a FHIR R4 Questionnaire (GET /api/questionnaires/{id}) rendered as a form
// whose branches open with `enableWhen`, in the page's language (the FHIR translation
// extension), large and tappable in elderly mode. response() gives the QuestionnaireResponse
// that travels in the pre-consult card (docs/clinic.md).
import { clear, h, tx } from "./dom.js";
import { lang, onLangChange } from "./i18n.js";

const TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation";
const MIN = "http://hl7.org/fhir/StructureDefinition/minValue";
const MAX = "http://hl7.org/fhir/StructureDefinition/maxValue";

/** `base` in the current language from a `_field` element's translation extension. */
export function localized(base, element, want = lang()) {
  for (const ext of (element && element.extension) || []) {
    if (ext.url !== TRANSLATION) continue;
    const parts = Object.fromEntries((ext.extension || []).map((e) => [e.url, e.valueCode || e.valueString]));
    if (parts.lang === want) return parts.content;
  }
  return base;
}

function bound(item, url) {
  const ext = (item.extension || []).find((e) => e.url === url);
  return ext ? ext.valueInteger ?? ext.valueDecimal : undefined;
}

function conditionMet(cond, answers) {
  const values = answers.get(cond.question) || [];
  if (cond.operator === "exists") return values.length > 0 === Boolean(cond.answerBoolean);
  const key = Object.keys(cond).find((k) => k.startsWith("answer"));
  let expected = key ? cond[key] : undefined;
  if (expected && typeof expected === "object") expected = expected.code;
  switch (cond.operator) {
    case "=":
      return values.includes(expected);
    case "!=":
      return !values.includes(expected);
    case ">":
      return values.some((v) => v > expected);
    case "<":
      return values.some((v) => v < expected);
    case ">=":
      return values.some((v) => v >= expected);
    case "<=":
      return values.some((v) => v <= expected);
    default:
      return false;
  }
}

function selfEnabled(item, answers) {
  const conds = item.enableWhen || [];
  if (!conds.length) return true;
  const met = conds.map((c) => conditionMet(c, answers));
  return item.enableBehavior === "all" ? met.every(Boolean) : met.some(Boolean);
}

export class SymptomTree {
  constructor(questionnaireId = "symptom-tree") {
    this.id = questionnaireId;
    this.q = null;
    this.answers = new Map(); // linkId -> [code | boolean | number]
    this.element = h("div", { class: "symptom-tree", id: "symptom-tree" });
    this.element.addEventListener("change", () => this.readAnswers());
    this.element.addEventListener("input", () => this.readAnswers());
    this.off = onLangChange(() => this.render());
  }

  async load() {
    try {
      const res = await fetch(`/api/questionnaires/${encodeURIComponent(this.id)}`);
      if (!res.ok) throw new Error(String(res.status));
      this.q = await res.json();
    } catch {
      this.q = null;
    }
    this.render();
    return this.q !== null;
  }

  close() {
    this.off();
  }

  render() {
    const root = clear(this.element);
    if (!this.q) {
      root.append(h("p", { class: "hint" }, tx("symptoms_unavailable")));
      return;
    }
    root.append(...this.q.item.map((item) => this.renderItem(item)));
    this.applyEnabled();
  }

  renderItem(item) {
    const text = localized(item.text, item._text);
    const attrs = { class: `sym-item sym-${item.type}`, "data-link-id": item.linkId };
    if (item.type === "group") {
      return h("fieldset", { ...attrs, class: `${attrs.class} sym-group` }, h("legend", {}, text), ...(item.item || []).map((child) => this.renderItem(child)));
    }
    const have = this.answers.get(item.linkId) || [];
    const name = `sym-${item.linkId}`;
    if (item.type === "choice" || item.type === "boolean") {
      const options =
        item.type === "boolean"
          ? [
              { value: "true", label: tx("yes"), on: have.includes(true) },
              { value: "false", label: tx("no"), on: have.includes(false) },
            ]
          : item.answerOption.map((o) => ({
              value: o.valueCoding.code,
              label: localized(o.valueCoding.display, o.valueCoding._display),
              on: have.includes(o.valueCoding.code),
            }));
      const type = item.repeats ? "checkbox" : "radio";
      return h(
        "fieldset",
        attrs,
        h("legend", {}, text),
        h("div", { class: "sym-options" }, ...options.map((o) => h("label", { class: "sym-option" }, h("input", { type, name, value: o.value, checked: o.on }), h("span", {}, o.label)))),
      );
    }
    if (item.type === "integer" || item.type === "decimal") {
      const input = h("input", {
        type: "number",
        name,
        inputmode: "decimal",
        min: bound(item, MIN),
        max: bound(item, MAX),
        step: item.type === "integer" ? "1" : "0.1",
        value: have.length ? String(have[0]) : "",
      });
      return h("label", { ...attrs, class: `${attrs.class} field` }, h("span", { class: "label" }, text), input);
    }
    const input = h("input", { type: "text", name, maxlength: "500", value: have.length ? String(have[0]) : "" });
    return h("label", { ...attrs, class: `${attrs.class} field` }, h("span", { class: "label" }, text), input);
  }

  readAnswers() {
    this.answers = new Map();
    for (const el of this.element.querySelectorAll("[data-link-id]")) {
      const link = el.dataset.linkId;
      const inputs = [...el.querySelectorAll(`:scope input[name="sym-${CSS.escape(link)}"]`)];
      const values = [];
      for (const input of inputs) {
        if (input.type === "radio" || input.type === "checkbox") {
          if (!input.checked) continue;
          values.push(input.value === "true" ? true : input.value === "false" ? false : input.value);
        } else if (input.value.trim() !== "") {
          values.push(input.type === "number" ? Number(input.value) : input.value.trim());
        }
      }
      if (values.length) this.answers.set(link, values);
    }
    this.applyEnabled();
  }

  applyEnabled() {
    const walk = (items, parentOn) => {
      for (const item of items) {
        const on = parentOn && selfEnabled(item, this.answers);
        const el = this.element.querySelector(`[data-link-id="${CSS.escape(item.linkId)}"]`);
        if (el) el.hidden = !on;
        walk(item.item || [], on);
      }
    };
    if (this.q) walk(this.q.item, true);
  }

  /** The answers as a FHIR QuestionnaireResponse (enabled, answered items only), or null. */
  response() {
    if (!this.q) return null;
    const build = (items) => {
      const out = [];
      for (const item of items) {
        if (!selfEnabled(item, this.answers)) continue;
        const entry = { linkId: item.linkId, text: localized(item.text, item._text).slice(0, 500) };
        if (item.type === "group") {
          const children = build(item.item || []);
          if (!children.length) continue;
          entry.item = children;
        } else {
          const values = this.answers.get(item.linkId) || [];
          if (!values.length) continue;
          entry.answer = values.map((v) => {
            if (item.type === "choice") {
              const o = item.answerOption.find((opt) => opt.valueCoding.code === v);
              return { valueCoding: { system: o.valueCoding.system, code: v, display: localized(o.valueCoding.display, o.valueCoding._display) } };
            }
            if (item.type === "boolean") return { valueBoolean: v };
            if (item.type === "integer") return { valueInteger: Math.round(v) };
            if (item.type === "decimal") return { valueDecimal: v };
            return { valueString: String(v) };
          });
        }
        out.push(entry);
      }
      return out;
    };
    const item = build(this.q.item);
    if (!item.length) return null;
    return {
      resourceType: "QuestionnaireResponse",
      questionnaire: this.q.url || `Questionnaire/${this.id}`,
      status: "completed",
      authored: new Date().toISOString(),
      language: lang(),
      item,
    };
  }

  /** The chosen answer to the first question, for the chief complaint when it is left empty. */
  summary() {
    if (!this.q) return "";
    const first = this.q.item[0];
    const code = (this.answers.get(first.linkId) || [])[0];
    const o = (first.answerOption || []).find((opt) => opt.valueCoding.code === code);
    return o ? localized(o.valueCoding.display, o.valueCoding._display) : "";
  }
}

/** dt/dd pairs of a QuestionnaireResponse's answers, for the doctor's view of the card. */
export function responseRows(qr) {
  const rows = [];
  const walk = (items) => {
    for (const item of items || []) {
      if (item.answer && item.answer.length) {
        const shown = item.answer.map((a) => {
          if (a.valueCoding) return a.valueCoding.display || a.valueCoding.code;
          if (a.valueBoolean !== undefined) return a.valueBoolean ? "✓" : "✗";
          return String(a.valueInteger ?? a.valueDecimal ?? a.valueString ?? "");
        });
        rows.push(h("dt", {}, item.text || item.linkId), h("dd", { "data-link-id": item.linkId }, shown.join(", ")));
      }
      walk(item.item);
    }
  };
  walk(qr && qr.item);
  return rows;
}
