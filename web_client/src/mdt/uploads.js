// Uploading documents to the room (images, PDF, DICOM files) and the panel's status line, which
// also shows the panel's other errors.
import { h, setI18n, tx } from "../dom.js";

const ACCEPT = "image/png,image/jpeg,application/pdf,.dcm,application/dicom";

export class Uploads {
  /** onUploaded(docId) opens what was uploaded; its failure is shown as an upload failure. */
  constructor(session, onUploaded) {
    this.session = session;
    this.onUploaded = onUploaded;
    this.input = h("input", { type: "file", id: "doc-upload", multiple: true, accept: ACCEPT, onchange: () => this.upload() });
    this.status = h("p", { class: "hint", id: "upload-status", role: "status" });
    this.label = h("label", { class: "upload button-like", hidden: true }, tx("upload"), this.input);
  }

  /** Only those with the annotate grant see the upload button. */
  setAllowed(allowed) {
    this.label.hidden = !allowed;
  }

  async upload() {
    const files = [...this.input.files];
    if (!files.length) return;
    const body = new FormData();
    for (const f of files) body.append("file", f, f.name);
    setI18n(this.status, "uploading");
    try {
      const res = await fetch(`/api/rooms/${encodeURIComponent(this.session.room)}/documents`, {
        method: "POST",
        headers: { Authorization: `Bearer ${this.session.token}` },
        body,
      });
      const data = await res.json();
      if (!res.ok) throw new Error((data.error && data.error.message) || res.statusText);
      this.status.textContent = "";
      await this.onUploaded(data.document.id);
    } catch (err) {
      setI18n(this.status, ["upload_failed", { message: err.message }]);
    }
    this.input.value = "";
  }

  showError(err) {
    setI18n(this.status, ["error_prefix", { message: (err && (err.message || err.code)) || "?" }]);
  }
}
