// Rehab plans in the Exercise tab (server: rehab:plan_* / rehab:guide / rehab:progress, see
// docs/protocol.md). The patient sees their plan and a "Start my exercises" button; the server
// then guides the run (countdown, one counted set at a time, rest timer, done) and this module
// shows each step in the patient's full-screen exercise view (RehabPanel's overlay: their own
// video, the rep counter), with a big timer and spoken prompts. A clinician prescribes a plan
// (a form of steps), follows a run and reads the patient's progress table.
import { progressChart } from "./chart.js";
import { button, clear, h, setI18n, tx } from "./dom.js";
import { lang, t } from "./i18n.js";
import { say } from "./voice.js";

const SIDES = ["auto", "left", "right", "both"];
const MAX_STEPS = 30;

export class PlanView {
  constructor(panel) {
    this.panel = panel; // RehabPanel
    this.session = panel.session;
    this.plan = null; // rehab:plan_get answer's plan ({plan_id, plan, prescribed_by, ...}) for me
    this.guide = null; // last rehab:guide
    this.lastSpoken = "";
    this.element = h("div", { class: "rehab-plan", id: "rehab-plan" });
    this.mine = h("div", { class: "rehab-plan-mine", id: "rehab-plan-mine" });
    this.guideStatus = h("div", { class: "rehab-guide-status", id: "rehab-guide-status", role: "status", "aria-live": "polite" });
    this.message = h("p", { class: "rehab-plan-message", id: "rehab-plan-message", role: "status" });
    this.form = null;
    this.progressBox = h("div", { class: "rehab-progress", id: "rehab-progress" });
    this.session.on("rehab:guide", (g) => this.onGuide(g));
    this.session.on("rehab:plan", (info) => this.onPlan(info));
    this.session.on("joined", () => this.load());
  }

  get me() {
    return this.panel.me;
  }

  get isPatient() {
    return Boolean(this.me && this.me.role === "patient");
  }

  get guiding() {
    return Boolean(this.guide && this.guide.phase !== "done" && this.guide.phase !== "stopped");
  }

  get finished() {
    return Boolean(this.guide && !this.guiding);
  }

  // The panel re-renders itself; the form keeps its node (and what was typed in it).
  render() {
    const el = clear(this.element);
    el.append(this.guideStatus);
    if (this.isPatient) el.append(this.mine);
    if (this.panel.canStart) {
      if (!this.form) this.form = this.buildForm();
      this.refreshPatients();
      el.append(this.form, this.message, h("div", { class: "actions" }, button("plan_run_for", () => this.runFor(), { id: "rehab-plan-run-for" }), button("plan_progress", () => this.showProgress(), { id: "rehab-progress-btn" })), this.progressBox);
    }
    this.renderMine();
    this.renderGuideStatus();
    return el;
  }

  async load() {
    if (!this.isPatient || !this.panel.features.rehab) return;
    try {
      const ack = await this.session.call("rehab:plan_get", {});
      this.plan = ack.plan;
      if (ack.running) this.onGuide(ack.running);
    } catch {
      this.plan = null;
    }
    this.renderMine();
  }

  onPlan(info) {
    if (!this.me || info.patient !== this.me.identity) return;
    this.plan = info;
    this.renderMine();
  }

  // -- patient: my plan -----------------------------------------------------------------------
  renderMine() {
    if (!this.isPatient) return;
    const box = clear(this.mine);
    box.append(h("h3", {}, tx("plan_title")));
    if (!this.plan) {
      box.append(h("p", { class: "hint", id: "rehab-plan-none" }, tx("plan_none")));
      return;
    }
    const p = this.plan.plan;
    box.append(
      h("p", {}, h("strong", {}, p.title)),
      h(
        "ol",
        { class: "rehab-plan-steps" },
        p.items.map((i) => h("li", {}, tx("plan_line", { exercise: this.panel.exerciseTitle(i.exercise), sets: i.sets, reps: i.reps }), i.instructions ? h("span", { class: "hint" }, ` — ${i.instructions}`) : null)),
      ),
    );
    if (this.guiding) box.append(button("plan_stop", () => this.stop(), { class: "danger", id: "rehab-plan-stop" }));
    else box.append(button("plan_start_mine", () => this.start(), { class: "primary big", id: "rehab-plan-start" }));
  }

  async start() {
    try {
      await this.session.call("rehab:plan_run", { lang: lang() });
    } catch (err) {
      setI18n(this.message, ["error_prefix", { message: err.message || err.code }]);
      this.mine.append(this.message);
    }
  }

  // A clinician starts the selected patient's plan and watches (the patient's page is guided).
  async runFor() {
    const patient = this.form && this.form.querySelector("#plan-patient").value;
    try {
      await this.session.call("rehab:plan_run", patient ? { patient_identity: patient, lang: lang() } : { lang: lang() });
    } catch (err) {
      setI18n(this.message, ["error_prefix", { message: err.message || err.code }]);
    }
  }

  async stop() {
    const payload = {};
    if (!this.isPatient && this.guide) payload.patient_identity = this.guide.patient;
    try {
      await this.session.call("rehab:plan_stop", payload);
    } catch (err) {
      setI18n(this.message, ["error_prefix", { message: err.message || err.code }]);
    }
  }

  // -- the guided run -------------------------------------------------------------------------
  onGuide(g) {
    this.guide = g;
    const mine = this.me && g.patient === this.me.identity;
    if (mine) {
      if (!this.panel.overlay) this.panel.showOverlay(g.exercise, { guided: true });
      this.renderGuide(this.panel.guideBox, g);
      this.panel.setCount(g.reps, g.target_reps);
      this.speak(g);
      if (!this.guiding) this.panel.guideFinished();
      this.renderMine();
    }
    this.renderGuideStatus();
  }

  renderGuide(box, g) {
    if (!box) return;
    clear(box);
    const title = g.exercise_title[lang()] || g.exercise_title.en;
    const timed = g.phase === "countdown" || g.phase === "rest";
    const parts = [
      h("p", { class: "guide-phase", id: "guide-phase", "data-phase": g.phase }, tx(`guide_phase_${g.phase}`)),
      timed && g.seconds_left != null ? h("p", { class: "guide-timer", id: "guide-timer", "aria-live": "off" }, String(Math.ceil(g.seconds_left))) : null,
      h("p", { class: "guide-step", id: "guide-step" }, tx("guide_step", { step: g.step, steps: g.steps }), " · ", h("strong", {}, title), " · ", h("span", { id: "guide-set" }, tx("guide_set", { set: g.set, sets: g.sets }))),
      g.phase === "countdown" || (g.phase === "exercise" && g.reps === 0) ? h("p", { class: "guide-demo", id: "guide-demo" }, g.demo[lang()] || g.demo.en) : null,
      g.instructions ? h("p", { class: "guide-instructions" }, g.instructions) : null,
      g.next ? h("p", { class: "guide-next" }, tx("guide_next", { exercise: this.panel.exerciseTitle(g.next.exercise), set: g.next.set })) : null,
      g.error ? h("p", { class: "guide-error", role: "alert" }, g.error.message) : null,
    ];
    box.append(...parts.filter(Boolean));
  }

  // One prompt per step: the countdown with the demonstration, each set, each rest, the end.
  speak(g) {
    const key = `${g.phase}:${g.step}:${g.set}`;
    if (key === this.lastSpoken) return;
    this.lastSpoken = key;
    const exercise = g.exercise_title[lang()] || g.exercise_title.en;
    if (g.phase === "countdown") say(t("guide_voice_countdown", { exercise, demo: g.demo[lang()] || g.demo.en }));
    else if (g.phase === "exercise") say(t("guide_voice_set", { exercise, set: g.set, sets: g.sets, reps: g.target_reps }));
    else if (g.phase === "rest") say(t("guide_voice_rest", { seconds: Math.round(g.seconds_left || 0) }));
    else if (g.phase === "done") say(t("guide_voice_done"));
  }

  // The clinician's (and the patient's tab) view of a run.
  renderGuideStatus() {
    const box = clear(this.guideStatus);
    const g = this.guide;
    if (!g) return;
    box.append(h("h3", {}, tx("guide_running", { title: g.title })), h("p", {}, this.panel.nameOf(g.patient), " · ", tx(`guide_phase_${g.phase}`), g.seconds_left != null && g.phase !== "exercise" ? ` ${Math.ceil(g.seconds_left)} s` : ""));
    box.append(h("p", {}, tx("guide_step", { step: g.step, steps: g.steps }), " · ", this.panel.exerciseTitle(g.exercise), " · ", tx("guide_set", { set: g.set, sets: g.sets }), ` · ${g.reps} / ${g.target_reps}`));
    if (g.error) box.append(h("p", { class: "guide-error" }, g.error.message));
    if (!this.isPatient && this.guiding && this.panel.canStart) box.append(button("plan_stop", () => this.stop(), { class: "danger", id: "rehab-plan-stop-clinician" }));
  }

  // -- clinician: prescribe ---------------------------------------------------------------------
  refreshPatients() {
    const select = this.form && this.form.querySelector("#plan-patient");
    if (!select) return;
    const current = select.value;
    clear(select);
    for (const p of this.panel.patients()) select.append(h("option", { value: p.identity, selected: p.identity === current }, p.name));
  }

  buildForm() {
    this.steps = h("div", { class: "plan-steps", id: "plan-steps" });
    const form = h(
      "form",
      { id: "rehab-plan-form", class: "rehab-form", onsubmit: (e) => this.submit(e) },
      h("h3", {}, tx("plan_prescribe_heading")),
      h("label", { class: "field" }, h("span", { class: "label" }, tx("rehab_patient")), h("select", { name: "patient", id: "plan-patient" })),
      h("label", { class: "field" }, h("span", { class: "label" }, tx("plan_name")), h("input", { name: "title", id: "plan-name", maxlength: "200", value: t("plan_default_name") })),
      this.steps,
      button("plan_add_step", () => this.addStep(), { id: "plan-add-step" }),
      h("button", { type: "submit", class: "primary", id: "plan-prescribe" }, tx("plan_prescribe")),
    );
    this.addStep();
    return form;
  }

  addStep() {
    if (this.steps.children.length >= MAX_STEPS) return;
    const n = this.steps.children.length + 1;
    const exercise = h("select", { name: "exercise", class: "plan-exercise" });
    for (const e of this.panel.exercises) exercise.append(h("option", { value: e.name }, this.panel.exerciseTitle(e.name)));
    const side = h("select", { name: "side", class: "plan-side" });
    for (const s of SIDES) side.append(h("option", { value: s }, tx(`side_${s}`)));
    const num = (name, min, max, value) => h("input", { name, type: "number", min: String(min), max: String(max), value: String(value), required: true });
    const step = h(
      "fieldset",
      { class: "plan-step" },
      h("legend", {}, tx("plan_step", { n })),
      h("label", { class: "field" }, h("span", { class: "label" }, tx("rehab_exercise")), exercise),
      h("label", { class: "field" }, h("span", { class: "label" }, tx("plan_side")), side),
      h(
        "div",
        { class: "two" },
        h("label", { class: "field" }, h("span", { class: "label" }, tx("rehab_sets")), num("sets", 1, 20, 3)),
        h("label", { class: "field" }, h("span", { class: "label" }, tx("rehab_target")), num("reps", 1, 100, 10)),
      ),
      h("label", { class: "field" }, h("span", { class: "label" }, tx("plan_rest")), num("rest", 0, 900, 60)),
      h("label", { class: "field" }, h("span", { class: "label" }, tx("plan_instructions")), h("textarea", { name: "instructions", maxlength: "1000", rows: "2" })),
    );
    step.append(
      button(
        "plan_remove_step",
        () => {
          if (this.steps.children.length > 1) step.remove();
        },
        { class: "plan-remove-step" },
      ),
    );
    this.steps.append(step);
  }

  async submit(e) {
    e.preventDefault();
    const form = this.form;
    const patient = form.querySelector("#plan-patient").value;
    const items = [...this.steps.querySelectorAll(".plan-step")].map((s) => {
      const val = (name) => s.querySelector(`[name=${name}]`).value;
      const item = { exercise: val("exercise"), sets: Number(val("sets")) || 1, reps: Number(val("reps")) || 1, rest_s: Number(val("rest")) || 0, instructions: val("instructions").trim() };
      if (val("side") !== "auto") item.side = val("side");
      return item;
    });
    const plan = { title: form.querySelector("#plan-name").value.trim() || t("plan_default_name"), items };
    try {
      await this.session.call("rehab:plan_set", { patient_identity: patient, plan });
      setI18n(this.message, ["plan_saved", { patient: this.panel.nameOf(patient) }]);
    } catch (err) {
      setI18n(this.message, ["error_prefix", { message: err.message || err.code }]);
    }
  }

  // -- clinician: progress ----------------------------------------------------------------------
  async showProgress() {
    const patient = this.form && this.form.querySelector("#plan-patient").value;
    const box = clear(this.progressBox);
    try {
      const p = await this.session.call("rehab:progress", patient ? { patient_identity: patient } : {});
      box.append(h("h3", {}, tx("plan_progress_heading"), ` · ${this.panel.nameOf(p.patient)}`));
      if (!p.sessions.length && !p.runs.length) {
        box.append(h("p", { class: "hint" }, tx("progress_none")));
        return;
      }
      const fmt = (v) => (v == null ? "–" : String(v));
      const pct = (v) => (v == null ? "–" : `${Math.round(v * 100)} %`);
      const table = (caption, heads, rows, id) =>
        h(
          "table",
          { class: "rehab-progress-table", id },
          h("caption", {}, tx(caption)),
          h("thead", {}, h("tr", {}, heads.map((k) => h("th", { scope: "col" }, tx(k))))),
          h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))),
        );
      if (p.weeks && p.weeks.length) {
        // ROM, score and adherence per week as a chart (uPlot), the tables below
        const el = h("div", { class: "rehab-chart", id: "rehab-progress-chart", role: "img", "aria-label": tx("progress_chart_label") });
        box.append(el);
        progressChart(el, p.weeks.map((w) => ({ week: w.week, rom_deg: w.mean_rom_deg, score: w.mean_score, adherence: w.adherence })), { rom: tx("progress_rom"), score: tx("progress_score"), adherence: tx("progress_adherence") }, { width: Math.max(280, Math.min(560, (box.clientWidth || 560) - 8)), height: 220 });
      }
      box.append(table("progress_runs", ["progress_date", "progress_sets", "progress_adherence", "rehab_reps", "progress_rom", "progress_score"], p.days.map((d) => [d.date, d.sets_prescribed ? `${d.sets_done} / ${d.sets_prescribed}` : "–", pct(d.adherence), fmt(d.reps), fmt(d.mean_rom_deg), fmt(d.mean_score)]), "rehab-progress-days"));
      box.append(table("progress_sessions", ["progress_date", "rehab_exercise", "rehab_reps", "progress_rom", "progress_score"], p.sessions.map((s) => [s.date, this.panel.exerciseTitle(s.exercise), fmt(s.reps), fmt(s.mean_rom_deg), fmt(s.mean_score)]), "rehab-progress-sessions"));
    } catch (err) {
      box.append(h("p", {}, tx("error_prefix", { message: err.message || err.code })));
    }
  }
}
