// The consult record screen (a host's or clinician's, after the consult): reads the record as
// FHIR R4 from GET /api/rooms/{room}/record with the join token, shows the pre-consult card,
// the vitals, shared documents, rehab (sessions, plan, adherence), recordings and chat, and
// offers the FHIR Bundle (and each recording) as a download. Everything shown comes from the
// standard resources, so what the screen shows is what a hospital system would read.
import { button, clear, h, tx } from "./dom.js";

const LOINC = "http://loinc.org";
const VITAL_ORDER = ["85354-9", "8867-4", "8310-5", "59408-5", "9279-1", "29463-7", "15074-8"];

function resources(bundle, type) {
  return (bundle.entry || []).map((e) => e.resource).filter((r) => r.resourceType === type);
}

function loincCode(resource) {
  const coding = (resource.code && resource.code.coding) || [];
  const c = coding.find((x) => x.system === LOINC);
  return c ? c.code : null;
}

function quantity(q) {
  if (!q) return "";
  return `${q.value} ${q.unit || q.code || ""}`.trim();
}

function answers(item) {
  return (item.answer || []).map((a) => a.valueString ?? quantity(a.valueQuantity)).filter(Boolean);
}

function section(id, titleKey, body) {
  const empty = !body || (Array.isArray(body) && body.length === 0);
  return h("section", { class: "record-section", id, "aria-labelledby": `${id}-title` }, h("h2", { id: `${id}-title` }, tx(titleKey)), empty ? h("p", { class: "record-none" }, tx("record_none")) : body);
}

function list(items) {
  return items.length ? h("ul", {}, items.map((i) => h("li", {}, i))) : [];
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** Save `blob` as a file named `name` (an <a download> on a blob: URL). */
function save(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name, style: { display: "none" } });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export class RecordView {
  constructor(root, session) {
    this.root = root;
    this.session = session;
    this.bundle = null;
  }

  headers() {
    return { Authorization: `Bearer ${this.session.token}` };
  }

  async show() {
    const main = h("main", { class: "screen record", id: "screen-record" }, h("h1", {}, tx("record_title")), h("p", { id: "record-status", role: "status" }, tx("record_loading")));
    clear(this.root).append(main);
    try {
      const res = await fetch(`/api/rooms/${encodeURIComponent(this.session.room)}/record`, { headers: this.headers() });
      const body = await res.json();
      if (!res.ok) throw new Error((body.error && body.error.message) || res.statusText);
      this.bundle = body;
    } catch (err) {
      main.querySelector("#record-status").replaceChildren(tx("record_error", { message: err.message || String(err) }));
      return;
    }
    main.querySelector("#record-status").remove();
    main.append(...this.render(this.bundle));
  }

  render(bundle) {
    const [patient] = resources(bundle, "Patient");
    const [encounter] = resources(bundle, "Encounter");
    const who = [];
    if (patient) {
      const name = (patient.name && patient.name[0] && patient.name[0].text) || "";
      const mrn = (patient.identifier || []).find((i) => i.system !== "urn:teleconsult:identity");
      who.push(h("p", { id: "record-patient" }, tx("record_patient", { name }), mrn ? [" · ", tx("record_mrn", { mrn: mrn.value })] : null));
    }
    if (encounter && encounter.period) {
      who.push(h("p", { id: "record-period" }, `${when(encounter.period.start)} – ${when(encounter.period.end)}`));
    }
    const download = button("record_download_fhir", () => save(new Blob([JSON.stringify(bundle, null, 2)], { type: "application/fhir+json" }), `consult-record-${this.session.room}.fhir.json`), { id: "record-download", class: "primary" });
    return [
      ...who,
      h("p", {}, download),
      this.card(bundle),
      this.vitals(bundle),
      this.documents(bundle),
      this.rehab(bundle),
      this.recordings(bundle),
      this.chat(bundle),
    ];
  }

  card(bundle) {
    const body = [];
    for (const qr of resources(bundle, "QuestionnaireResponse")) {
      const byId = Object.fromEntries((qr.item || []).map((i) => [i.linkId, i]));
      const row = (link, key) => (byId[link] ? h("p", { class: `card-${link}` }, h("strong", {}, tx(key)), ": ", answers(byId[link]).join(", ")) : null);
      const symptoms = byId.symptoms ? (byId.symptoms.item || []).map((s) => `${s.text} ${answers(s).join(", ") || "–"}`) : [];
      body.push(
        row("chief-complaint", "record_complaint"),
        symptoms.length ? h("div", {}, h("strong", {}, tx("record_symptoms")), list(symptoms)) : null,
        row("medications", "record_medications"),
        row("allergies", "record_allergies"),
        row("notes", "record_notes"),
      );
    }
    return section("record-card", "record_card", body.filter(Boolean));
  }

  vitals(bundle) {
    const found = resources(bundle, "Observation").filter((o) => VITAL_ORDER.includes(loincCode(o)));
    found.sort((a, b) => VITAL_ORDER.indexOf(loincCode(a)) - VITAL_ORDER.indexOf(loincCode(b)));
    const items = found.map((o) => {
      const code = loincCode(o);
      let value = quantity(o.valueQuantity);
      if (o.component) {
        const [sys, dia] = o.component.map((c) => c.valueQuantity);
        value = `${sys ? sys.value : "?"}/${dia ? dia.value : "?"} ${(sys && sys.unit) || "mmHg"}`;
      }
      return h("span", { "data-loinc": code }, h("strong", {}, tx(`vital_${code}`)), ": ", value);
    });
    return section("record-vitals", "record_vitals", list(items));
  }

  documents(bundle) {
    const docs = resources(bundle, "DocumentReference").filter((d) => !(d.type && (d.type.text || "").startsWith("consult recording")));
    return section("record-documents", "record_documents", list(docs.map((d) => `${d.description || (d.content[0].attachment.title ?? "")}`)));
  }

  rehab(bundle) {
    const items = [];
    for (const plan of resources(bundle, "CarePlan")) {
      items.push(h("span", { class: "rehab-plan" }, tx("record_plan", { title: plan.title || "" }), ": ", (plan.activity || []).map((a) => `${a.detail.code.text} (${a.detail.description})`).join("; ")));
    }
    for (const obs of resources(bundle, "Observation")) {
      if (obs.basedOn && obs.valueQuantity && obs.valueQuantity.code === "%") {
        items.push(h("span", { class: "rehab-adherence" }, tx("record_adherence", { value: obs.valueQuantity.value }), ` (${when(obs.effectivePeriod && obs.effectivePeriod.start)})`));
      } else if (loincCode(obs) === "73985-4") {
        const reps = obs.component && obs.component[0] && obs.component[0].valueQuantity;
        items.push(h("span", { class: "rehab-session" }, (obs.valueCodeableConcept && obs.valueCodeableConcept.text) || "", ": ", tx("record_reps", { reps: reps ? reps.value : 0 })));
      }
    }
    return section("record-rehab", "record_rehab", list(items));
  }

  recordings(bundle) {
    const files = resources(bundle, "DocumentReference").filter((d) => d.type && (d.type.text || "").startsWith("consult recording"));
    const items = files.map((d, i) => {
      const att = d.content[0].attachment;
      const name = att.url.split("/").pop() + (att.contentType.includes("webm") ? ".webm" : ".mkv");
      return h(
        "span",
        { class: "recording" },
        `${att.title} (${Math.round((att.size || 0) / 1024)} KB) `,
        button("record_download", () => this.fetchFile(att.url, name), { id: `recording-download-${i}` }),
      );
    });
    return section("record-recordings", "record_recordings", list(items));
  }

  chat(bundle) {
    const msgs = resources(bundle, "Communication").map((c) => `${(c.sender && c.sender.display) || ""}: ${c.payload[0].contentString}`);
    return section("record-chat", "record_chat", list(msgs));
  }

  async fetchFile(url, name) {
    const res = await fetch(url, { headers: this.headers() });
    if (res.ok) save(await res.blob(), name);
  }
}
