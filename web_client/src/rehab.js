// Rehab mode, on the server's `rehab:*` events (rehab_vision/service.py): a clinician starts and
// stops a session on a patient's camera; the server's VisionAgent counts reps and scores form and
// sends `rehab:update` to the room. The patient sees their own video large with a big rep counter,
// the target, and each cue in large text, spoken with the browser's speech synthesis. The
// clinician sees live reps, angle, phase and score, and the report at the end. Each update carries
// the 2D pose of the frame the server processed: a skeleton is drawn over the patient's own video
// (the full-screen view and their self tile) and over the patient's tile for everyone else.
// Shown only when the server has the rehab events (features.rehab); otherwise "not available".
// Prescribed plans and the server-guided run (rehab:guide) are in plan.js; a guided run's sets
// are ordinary sessions here (their rehab:started / rehab:report carry its run_id), shown in the
// same full-screen view, which stays open from the countdown to the end of the plan.
import { angleChart } from "./chart.js";
import { button, clear, h, setI18n, tx } from "./dom.js";
import { hasKey, lang, t } from "./i18n.js";
import { PlanView } from "./plan.js";
import { SkeletonOverlay } from "./skeleton.js";
import { say } from "./voice.js";

const STALE_POSE_MS = 2000; // no update for this long: the skeleton is cleared

export class RehabPanel {
  constructor(session, media, features, exercises, participants) {
    this.participantsNow = participants; // () => [ParticipantInfo] (the call view's live list)
    this.session = session;
    this.media = media;
    this.features = features;
    this.exercises = exercises || [];
    this.element = h("div", { class: "rehab", id: "rehab" });
    this.running = null; // rehab:started info
    this.last = null; // last rehab:update
    this.report = null;
    this.overlay = null;
    this.skeletons = new Map(); // name -> SkeletonOverlay (full-screen view, call tiles)
    this.staleTimer = null;
    if (!features.rehab) {
      this.element.append(h("p", { class: "unavailable", id: "rehab-unavailable" }, tx("rehab_unavailable")));
      return;
    }
    this.planView = new PlanView(this);
    session.on("rehab:started", (info) => this.onStarted(info));
    session.on("rehab:update", (u) => this.onUpdate(u));
    session.on("rehab:report", (r) => this.onReport(r));
    // joined again after a lost connection (or late): the sessions running in the room
    session.on("joined", (st) => {
      const runs = st.rehab_sessions || [];
      const run = runs.find((r) => r.patient === st.self.identity) || runs[0];
      if (run && (!this.running || this.running.session_id !== run.session_id)) this.onStarted(run);
      else if (!run && this.running) {
        this.running = null; // it ended while we were away (its report was missed)
        this.render();
      }
    });
    for (const type of ["participant:joined", "participant:left", "joined"]) {
      session.on(type, () => setTimeout(() => !this.running && this.render(), 0));
    }
    this.render();
  }

  get me() {
    return this.session.joined ? this.session.joined.self : null;
  }

  get canStart() {
    const me = this.me;
    return Boolean(me && (me.role === "host" || me.role === "clinician"));
  }

  exerciseTitle(name) {
    const spec = this.exercises.find((e) => e.name === name);
    if (!spec) return name;
    return (spec.title && (spec.title[lang()] || spec.title.en)) || name;
  }

  people() {
    if (this.participantsNow) return this.participantsNow();
    return this.session.joined ? this.session.joined.room.participants : [];
  }

  patients() {
    return this.people().filter((p) => p.role === "patient");
  }

  // -- clinician tab --------------------------------------------------------------------------
  render() {
    const el = clear(this.element);
    this.status = h("div", { class: "rehab-status", id: "rehab-status", role: "status", "aria-live": "polite" });
    if (this.canStart) {
      const exercise = h("select", { name: "exercise", id: "rehab-exercise" });
      const chosen = this.choice || {};
      for (const e of this.exercises) exercise.append(h("option", { value: e.name, selected: e.name === chosen.exercise }, this.exerciseTitle(e.name)));
      const patient = h("select", { name: "patient", id: "rehab-patient" });
      for (const p of this.patients()) patient.append(h("option", { value: p.identity, selected: p.identity === chosen.patient }, p.name));
      const form = h(
        "form",
        {
          id: "rehab-form",
          class: "rehab-form",
          onsubmit: async (e) => {
            e.preventDefault();
            const payload = {
              exercise: exercise.value,
              target_reps: Number(form.elements.target.value) || 10,
              sets: Number(form.elements.sets.value) || 1,
              lang: lang(),
            };
            if (patient.value) payload.patient_identity = patient.value;
            this.choice = { exercise: payload.exercise, patient: patient.value, target: payload.target_reps, sets: payload.sets };
            try {
              await this.session.call("rehab:start", payload);
            } catch (err) {
              setI18n(this.status, ["error_prefix", { message: err.message || err.code }]);
            }
          },
        },
        h("label", { class: "field" }, h("span", { class: "label" }, tx("rehab_exercise")), exercise),
        h("label", { class: "field" }, h("span", { class: "label" }, tx("rehab_patient")), patient),
        h(
          "div",
          { class: "two" },
          h("label", { class: "field" }, h("span", { class: "label" }, tx("rehab_target")), h("input", { name: "target", type: "number", min: "1", max: "100", value: String(chosen.target || 10) })),
          h("label", { class: "field" }, h("span", { class: "label" }, tx("rehab_sets")), h("input", { name: "sets", type: "number", min: "1", max: "20", value: String(chosen.sets || 1) })),
        ),
        h("button", { type: "submit", class: "primary", id: "rehab-start", disabled: Boolean(this.running) }, tx("rehab_start")),
      );
      el.append(form);
    }
    el.append(this.status);
    if (this.running) el.append(button("rehab_stop", () => this.stop(), { class: "danger", id: "rehab-stop" }));
    this.renderStatus();
    el.append(this.planView.render());
  }

  renderStatus() {
    if (!this.status) return;
    const box = clear(this.status);
    const run = this.running;
    const u = this.last;
    if (run) {
      box.append(
        h("p", {}, h("strong", {}, this.exerciseTitle(run.exercise)), " · ", this.nameOf(run.patient)),
        h(
          "dl",
          { class: "rehab-live-stats" },
          h("dt", {}, tx("rehab_reps")),
          h("dd", { id: "rehab-reps" }, `${u ? u.rep : 0} / ${run.target_reps}`),
          h("dt", {}, tx("rehab_angle")),
          h("dd", { id: "rehab-angle" }, u && u.angle != null ? `${u.angle.toFixed(0)}°` : "–"),
          h("dt", {}, tx("rehab_phase")),
          h("dd", { id: "rehab-phase" }, u ? (hasKey(`phase_${u.phase}`) ? tx(`phase_${u.phase}`) : u.phase) : "–"),
          h("dt", {}, tx("rehab_score")),
          h("dd", { id: "rehab-score" }, u && u.score != null ? u.score.toFixed(0) : "–"),
          h("dt", {}, tx("rehab_tracking")),
          // the server's view status holds for a while: one untracked frame changes nothing
          h("dd", { id: "rehab-view" }, tx(!u || u.view === "ok" || !u.view ? "rehab_tracked" : u.view === "step_back" ? "rehab_step_back_short" : "rehab_not_tracked")),
        ),
      );
    } else if (this.report) {
      const r = this.report;
      box.append(
        h("h3", {}, tx("rehab_report")),
        h("p", { id: "rehab-report" }, tx("rehab_report_line", { exercise: this.exerciseTitle(r.exercise), reps: r.reps, target: r.target_reps, score: r.score == null ? "–" : r.score })),
      );
      // the joint angle over time of each set, reps marked, target range shaded (uPlot)
      for (const s of r.sets || []) {
        if (!s.angle_trace || !s.angle_trace.t.length) continue;
        const el = h("div", { class: "rehab-chart", id: `rehab-chart-${s.set}`, role: "img", "aria-label": tx("rehab_chart_label", { set: s.set, reps: s.reps }) });
        box.append(el);
        angleChart(el, s, { time: tx("rehab_chart_time"), angle: tx("rehab_chart_angle") }, { width: Math.max(280, Math.min(560, (box.clientWidth || 560) - 8)), height: 200 });
      }
    } else {
      box.append(h("p", { class: "hint" }, tx("rehab_idle")));
    }
  }

  nameOf(identity) {
    const p = this.people().find((x) => x.identity === identity);
    return p ? p.name : identity;
  }

  async stop() {
    if (!this.running) return;
    try {
      await this.session.call("rehab:stop", { session_id: this.running.session_id });
    } catch (err) {
      setI18n(this.status, ["error_prefix", { message: err.message || err.code }]);
    }
  }

  // -- events ---------------------------------------------------------------------------------
  onStarted(info) {
    this.running = info;
    this.last = null;
    this.report = null;
    this.render();
    this.clearSkeletons(true);
    if (this.me && info.patient === this.me.identity) {
      if (info.run_id && this.overlay) this.updateOverlay();
      else this.showOverlay(info.exercise, { guided: Boolean(info.run_id) });
    }
  }

  onUpdate(u) {
    if (!this.running || u.session_id !== this.running.session_id) return;
    const before = this.last ? this.last.rep : 0;
    this.last = u;
    this.renderStatus();
    this.drawSkeletons(u);
    if (this.overlay) {
      this.updateOverlay();
      if (u.cue) say(u.cue[lang()] || u.cue.en);
      else if (u.rep > before) say(String(u.rep), { interrupt: false });
    }
  }

  onReport(r) {
    if (!this.running || r.session_id !== this.running.session_id) return;
    this.report = r;
    this.running = null;
    this.clearSkeletons(true);
    this.render();
    if (r.run_id) return; // one set of a guided plan: the guide says what comes next
    if (this.overlay) {
      this.updateOverlay(true);
      this.overlay.classList.remove("minimised");
      const back = this.overlay.querySelector("#rehab-toggle");
      if (back) setI18n(back.firstChild, "rehab_close");
      say(t("rehab_done_voice", { reps: r.reps }));
    }
  }

  // -- skeleton -------------------------------------------------------------------------------
  // The videos that show the patient's camera here: the full-screen view and the self tile for
  // the patient, the patient's tile for everyone else (tiles come and go with the call view).
  skeletonTargets() {
    const targets = [];
    const run = this.running;
    if (!run) return targets;
    const mine = this.me && run.patient === this.me.identity;
    if (mine && this.overlay) targets.push(["live", this.overlay.querySelector("video.rehab-self"), "rehab-skeleton"]);
    const key = mine ? "self" : `p:${run.patient}`;
    const tile = [...document.querySelectorAll(".tile[data-key]")].find((el) => el.dataset.key === key);
    if (tile) targets.push(["tile", tile.querySelector("video"), "rehab-skeleton-tile"]);
    return targets.filter(([, video]) => video);
  }

  drawSkeletons(u) {
    const wanted = this.skeletonTargets();
    for (const [name, video, id] of wanted) {
      let sk = this.skeletons.get(name);
      if (sk && (sk.video !== video || !sk.canvas.isConnected)) {
        sk.detach();
        sk = null;
      }
      if (!sk) {
        sk = new SkeletonOverlay(video, { id });
        this.skeletons.set(name, sk);
      }
      sk.show(u);
    }
    for (const [name, sk] of this.skeletons) {
      if (!wanted.some(([n]) => n === name)) {
        sk.detach();
        this.skeletons.delete(name);
      }
    }
    clearTimeout(this.staleTimer);
    this.staleTimer = setTimeout(() => this.clearSkeletons(), STALE_POSE_MS);
  }

  clearSkeletons(detach = false) {
    clearTimeout(this.staleTimer);
    for (const sk of this.skeletons.values()) {
      if (detach) sk.detach();
      else sk.clear();
    }
    if (detach) this.skeletons.clear();
  }

  // -- patient overlay ------------------------------------------------------------------------
  showOverlay(exercise, { guided = false } = {}) {
    if (this.overlay) this.overlay.remove();
    const video = h("video", { autoplay: true, muted: true, playsInline: true, class: "rehab-self" });
    video.muted = true;
    const cam = this.media.localTrack("camera");
    if (cam) video.srcObject = new MediaStream([cam]);
    this.counter = h("div", { class: "rehab-counter", id: "rehab-counter", "aria-live": "polite" });
    this.cue = h("p", { class: "rehab-cue", id: "rehab-cue", "aria-live": "assertive" });
    this.guideBox = h("div", { class: "rehab-guide", id: "rehab-guide", "aria-live": "polite" });
    this.overlay = h(
      "section",
      { class: "rehab-overlay", id: "rehab-live", "aria-label": t("rehab") },
      h("div", { class: "rehab-video" }, video),
      h("div", { class: "rehab-side" }, h("h2", { id: "rehab-live-title" }, this.exerciseTitle(exercise)), this.guideBox, this.counter, this.cue, button("rehab_back", () => (this.canClose() ? this.closeOverlay() : this.overlay.classList.toggle("minimised")), { id: "rehab-toggle" })),
    );
    document.body.append(this.overlay);
    if (this.running) this.updateOverlay();
    if (!guided) say(t("rehab_start_voice", { exercise: this.exerciseTitle(exercise), target: this.running.target_reps }));
  }

  canClose() {
    if (this.planView.guide && this.me && this.planView.guide.patient === this.me.identity) return this.planView.finished && !this.running;
    return Boolean(this.report) && !this.running;
  }

  // The guided run's own view of the count (before a set's session starts, and between sets).
  setCount(reps, target) {
    if (!this.counter) return;
    const title = this.overlay && this.overlay.querySelector("#rehab-live-title");
    if (title && this.planView.guide) title.textContent = this.exerciseTitle(this.planView.guide.exercise);
    if (this.running && this.last && this.last.rep > reps) return;
    clear(this.counter).append(h("span", { class: "reps", id: "rehab-count" }, String(reps)), h("span", { class: "target" }, ` / ${target}`));
  }

  guideFinished() {
    if (!this.overlay) return;
    this.overlay.classList.remove("minimised");
    const back = this.overlay.querySelector("#rehab-toggle");
    if (back) setI18n(back.firstChild, "rehab_close");
    if (this.cue) this.cue.textContent = "";
  }

  closeOverlay() {
    this.clearSkeletons(true);
    if (this.overlay) this.overlay.remove();
    this.overlay = null;
    this.guideBox = null;
  }

  updateOverlay(done = false) {
    if (!this.counter || (!done && !this.running) || (done && !this.report)) return;
    const u = this.last;
    const target = done ? this.report.target_reps : this.running.target_reps;
    const reps = done ? this.report.reps : u ? u.rep : 0;
    clear(this.counter).append(h("span", { class: "reps", id: "rehab-count" }, String(reps)), h("span", { class: "target" }, ` / ${target}`));
    if (done) setI18n(this.cue, ["rehab_done", { reps }]);
    else if (u && u.cue) {
      this.cue.textContent = u.cue[lang()] || u.cue.en;
      delete this.cue.dataset.i18n;
    } else if (u && u.view === "step_back") setI18n(this.cue, "rehab_step_into_view");
    else if (u && u.view === "not_in_view") setI18n(this.cue, "rehab_come_into_view");
  }
}
