// MDT panel: the room's documents (images, PDF pages, DICOM series), a viewer with zoom/pan,
// slice scroll, window presets and follow-the-presenter, and shared annotation on Yjs synced
// with the server over `doc:*` events (y-protocols sync messages; docs/annotation.md).
// Annotation entries: see annotation/model.py (points in image pixels; measurements are written
// by the server; the live value while drawing is computed here the same way).
import * as Y from "yjs";
import * as encoding from "lib0/encoding";
import * as decoding from "lib0/decoding";
import * as awarenessProtocol from "y-protocols/awareness";
import * as syncProtocol from "y-protocols/sync";
import { button, clear, h, setI18n, tx } from "./dom.js";
import { t } from "./i18n.js";

const MESSAGE_SYNC = 0;
const MESSAGE_AWARENESS = 1;
const CURSOR_INTERVAL_MS = 150; // pointer updates, well under the server's rate limit
const TOOLS = ["pan", "arrow", "text", "freehand", "ellipse", "rect", "length", "angle"];
const PRESETS = ["", "soft_tissue", "lung", "bone", "brain"];
const REMOTE = "remote";

function uuid() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Uint8Array(0);
}

/** The value shown while drawing (the server's measurement replaces it once synced). */
export function liveMeasure(tool, points, spacing) {
  // pixel_spacing is [row_mm, col_mm]: y steps are rows, x steps are columns
  const [sy, sx] = spacing || [1, 1];
  const unit = spacing ? "mm" : "px";
  if (tool === "length" && points.length === 2) {
    const dx = (points[1][0] - points[0][0]) * sx;
    const dy = (points[1][1] - points[0][1]) * sy;
    return `${Math.hypot(dx, dy).toFixed(1)} ${unit}`;
  }
  if (tool === "angle" && points.length === 3) {
    const [a, v, b] = points;
    const a1 = Math.atan2((a[1] - v[1]) * sy, (a[0] - v[0]) * sx);
    const a2 = Math.atan2((b[1] - v[1]) * sy, (b[0] - v[0]) * sx);
    let deg = Math.abs(((a1 - a2) * 180) / Math.PI);
    if (deg > 180) deg = 360 - deg;
    return `${deg.toFixed(1)}°`;
  }
  if ((tool === "rect" || tool === "ellipse") && points.length === 2) {
    const w = Math.abs(points[1][0] - points[0][0]) * sx;
    const hgt = Math.abs(points[1][1] - points[0][1]) * sy;
    const area = tool === "rect" ? w * hgt : (Math.PI * w * hgt) / 4;
    return `${area.toFixed(1)} ${unit}²`;
  }
  return "";
}

export class DocumentsPanel {
  constructor(session, features) {
    this.session = session;
    this.features = features;
    this.element = h("div", { class: "mdt", id: "mdt" });
    this.docs = [];
    this.current = null; // {info, ydoc, amap, vmap, frame, preset, zoom, panX, panY}
    this.tool = "pan";
    this.follow = true;
    this.presenting = false;
    this.images = new Map();
    this.draft = null;
    this.canWrite = false;
    if (!features.documents) {
      this.element.append(h("p", { class: "unavailable", id: "docs-unavailable" }, tx("docs_unavailable")));
      return;
    }
    this.build();
    session.on("doc:added", (msg) => {
      this.docs = [...this.docs.filter((d) => d.id !== msg.document.id), msg.document];
      this.renderList();
    });
    session.on("doc:sync", (msg) => {
      if (this.current && msg.doc_id === this.current.info.id) this.handleMessage(toBytes(msg.msg));
    });
    session.on("doc:awareness", (msg) => {
      if (this.current && msg.doc_id === this.current.info.id) this.applyAwareness(toBytes(msg.msg));
    });
    session.on("doc:saved", (msg) => {
      if (this.current && msg.doc_id === this.current.info.id) {
        this.seqSaved = Math.max(this.seqSaved || 0, msg.seq);
        this.renderSaved();
      }
    });
    session.on("joined", () => this.refresh(true));
  }

  get grants() {
    return (this.session.joined && this.session.joined.self.grants) || {};
  }

  build() {
    this.listEl = h("ul", { class: "doc-list", id: "doc-list" });
    this.uploadInput = h("input", { type: "file", id: "doc-upload", multiple: true, accept: "image/png,image/jpeg,application/pdf,.dcm,application/dicom", onchange: () => this.upload() });
    this.uploadStatus = h("p", { class: "hint", id: "upload-status", role: "status" });
    this.canvas = h("canvas", { id: "doc-canvas", tabindex: "0", width: 640, height: 480, "aria-label": "image viewer" });
    this.toolbar = h("div", { class: "doc-tools", role: "toolbar", "aria-label": "annotation tools" });
    this.frameBar = h("div", { class: "frame-bar" });
    this.markList = h("ul", { class: "mark-list", id: "mark-list" });
    this.viewer = h(
      "div",
      { class: "viewer", id: "doc-viewer", hidden: true },
      this.toolbar,
      h("div", { class: "canvas-box" }, this.canvas),
      this.frameBar,
      h("h3", {}, tx("marks")),
      this.markList,
    );
    this.uploadLabel = h("label", { class: "upload button-like", hidden: true }, tx("upload"), this.uploadInput);
    this.element.append(this.uploadLabel, this.uploadStatus, this.listEl, this.viewer);
    this.bindCanvas();
    new ResizeObserver(() => this.resizeCanvas()).observe(this.canvas.parentElement);
  }

  async refresh(reopen = false) {
    if (!this.features.documents) return;
    this.uploadLabel.hidden = !this.grants.annotate;
    try {
      const ack = await this.session.call("doc:list", {});
      this.docs = ack.documents;
      this.renderList();
    } catch {
      /* shown on the next try */
    }
    if (reopen && this.current) await this.open(this.current.info.id, this.current.ydoc);
  }

  renderList() {
    const list = clear(this.listEl);
    if (!this.docs.length) list.append(h("li", { class: "hint" }, tx("docs_empty")));
    for (const doc of this.docs) {
      const open = this.current && this.current.info.id === doc.id;
      list.append(
        h(
          "li",
          { class: open ? "open" : "", "data-doc": doc.id },
          button("open_doc", () => this.open(doc.id), { class: "link", "aria-label": `${t("open_doc")} ${doc.name}` }),
          " ",
          h("span", {}, doc.name),
          h("span", { class: "hint" }, ` · ${doc.kind}${doc.frames > 1 ? ` · ${doc.frames}` : ""}${doc.modality ? ` · ${doc.modality}` : ""}`),
        ),
      );
    }
  }

  async upload() {
    const files = [...this.uploadInput.files];
    if (!files.length) return;
    const body = new FormData();
    for (const f of files) body.append("file", f, f.name);
    setI18n(this.uploadStatus, "uploading");
    try {
      const res = await fetch(`/api/rooms/${encodeURIComponent(this.session.room)}/documents`, {
        method: "POST",
        headers: { Authorization: `Bearer ${this.session.token}` },
        body,
      });
      const data = await res.json();
      if (!res.ok) throw new Error((data.error && data.error.message) || res.statusText);
      this.uploadStatus.textContent = "";
      await this.open(data.document.id);
    } catch (err) {
      setI18n(this.uploadStatus, ["upload_failed", { message: err.message }]);
    }
    this.uploadInput.value = "";
  }

  // -- sync -----------------------------------------------------------------------------------
  async open(docId, existing = null) {
    if (this.current && this.current.info.id !== docId) {
      this.session.call("doc:close", { doc_id: this.current.info.id }).catch(() => null);
      if (this.current.awareness) this.current.awareness.destroy();
      this.current.ydoc.destroy();
      this.current = null;
    }
    const ydoc = existing || new Y.Doc();
    const enc = encoding.createEncoder();
    encoding.writeVarUint(enc, MESSAGE_SYNC);
    syncProtocol.writeSyncStep1(enc, ydoc);
    const ack = await this.session.call("doc:open", { doc_id: docId, msg: encoding.toUint8Array(enc) });
    if (!existing) {
      this.seqSent = 0;
      this.seqSaved = 0;
      const cur = { info: ack.document, ydoc, amap: ydoc.getMap("annotations"), vmap: ydoc.getMap("view"), frame: 0, preset: "", zoom: 1, panX: 0, panY: 0 };
      this.current = cur;
      cur.awareness = new awarenessProtocol.Awareness(ydoc);
      cur.awareness.on("update", ({ added, updated, removed }, origin) => {
        if (origin === REMOTE) {
          this.redraw();
          return;
        }
        const changed = added.concat(updated, removed).filter((id) => id === ydoc.clientID);
        if (!changed.length || this.current !== cur) return;
        const e = encoding.createEncoder();
        encoding.writeVarUint(e, MESSAGE_AWARENESS);
        encoding.writeVarUint8Array(e, awarenessProtocol.encodeAwarenessUpdate(cur.awareness, changed));
        this.session.call("doc:awareness", { doc_id: cur.info.id, msg: encoding.toUint8Array(e) }).catch(() => null);
      });
      ydoc.on("update", (update, origin) => {
        if (origin === REMOTE || this.current !== cur) return;
        const e = encoding.createEncoder();
        encoding.writeVarUint(e, MESSAGE_SYNC);
        syncProtocol.writeUpdate(e, update);
        this.send(encoding.toUint8Array(e));
      });
      cur.amap.observeDeep(() => this.redraw());
      cur.vmap.observe(() => this.followView());
    } else {
      this.current.info = ack.document;
    }
    this.canWrite = Boolean(ack.can_write);
    for (const reply of ack.replies || []) this.handleMessage(toBytes(reply));
    if (ack.awareness) this.applyAwareness(toBytes(ack.awareness));
    this.viewer.hidden = false;
    this.renderList();
    this.renderTools();
    this.followView();
    this.resizeCanvas();
    await this.loadFrame();
  }

  send(msg) {
    const cur = this.current;
    if (!cur) return;
    this.session
      .call("doc:sync", { doc_id: cur.info.id, msg })
      .then((ack) => {
        if (typeof ack.seq === "number") {
          this.seqSent = Math.max(this.seqSent || 0, ack.seq);
          this.renderSaved();
        }
        for (const reply of ack.replies || []) this.handleMessage(toBytes(reply));
      })
      .catch((err) => this.status(err));
  }

  handleMessage(bytes) {
    if (!this.current || !bytes.length) return;
    const decoder = decoding.createDecoder(bytes);
    if (decoding.readVarUint(decoder) !== MESSAGE_SYNC) return;
    const enc = encoding.createEncoder();
    encoding.writeVarUint(enc, MESSAGE_SYNC);
    syncProtocol.readSyncMessage(decoder, enc, this.current.ydoc, REMOTE);
    if (encoding.length(enc) > 1) this.send(encoding.toUint8Array(enc));
  }

  applyAwareness(bytes) {
    if (!this.current || !bytes.length) return;
    const decoder = decoding.createDecoder(bytes);
    if (decoding.readVarUint(decoder) !== MESSAGE_AWARENESS) return;
    awarenessProtocol.applyAwarenessUpdate(this.current.awareness, decoding.readVarUint8Array(decoder), REMOTE);
  }

  /** Share this pointer (image coordinates and frame) with the others, throttled. */
  shareCursor(point) {
    const cur = this.current;
    if (!cur || !cur.awareness) return;
    this.pendingCursor = point;
    if (this.cursorTimer) return;
    this.cursorTimer = setTimeout(() => {
      this.cursorTimer = null;
      const p = this.pendingCursor;
      if (!this.current || !this.current.awareness) return;
      this.current.awareness.setLocalStateField("cursor", p ? { x: Number(p[0].toFixed(1)), y: Number(p[1].toFixed(1)), frame: this.current.frame } : null);
    }, CURSOR_INTERVAL_MS);
  }

  remoteCursors() {
    const cur = this.current;
    const out = [];
    if (!cur || !cur.awareness) return out;
    cur.awareness.getStates().forEach((state, clientId) => {
      if (clientId === cur.ydoc.clientID || !state || !state.cursor || !state.user) return;
      if (state.cursor.frame !== cur.frame) return;
      out.push({ x: state.cursor.x, y: state.cursor.y, name: state.user.name, colour: state.user.colour });
    });
    return out;
  }

  status(err) {
    setI18n(this.uploadStatus, ["error_prefix", { message: (err && (err.message || err.code)) || "?" }]);
  }

  // -- tools and view -------------------------------------------------------------------------
  renderTools() {
    const bar = clear(this.toolbar);
    const cur = this.current;
    const tools = this.canWrite ? TOOLS : ["pan"];
    for (const tool of tools) {
      bar.append(
        button(`tool_${tool}`, () => {
          this.tool = tool;
          this.renderTools();
        }, { "aria-pressed": this.tool === tool ? "true" : "false", "data-tool": tool, class: this.tool === tool ? "toggled" : "" }),
      );
    }
    bar.append(
      button("zoom_in", () => this.setView({ zoom: cur.zoom * 1.25 }), { "data-tool": "zoom-in" }),
      button("zoom_out", () => this.setView({ zoom: cur.zoom / 1.25 }), { "data-tool": "zoom-out" }),
      button("reset_view", () => this.setView({ zoom: 1, panX: 0, panY: 0 })),
    );
    if (this.canWrite) {
      bar.append(button("undo", () => this.undo(), { id: "undo-mark" }));
    }
    bar.append(button("export", () => this.exportPng(), { id: "export-png" }));
    if (cur && cur.info.kind === "dicom") bar.append(button("export_gsps", () => this.exportGsps(), { id: "export-gsps" }));
    this.savedEl = h("span", { class: "hint saved-state", id: "saved-state", role: "status" });
    bar.append(this.savedEl);
    this.renderSaved();
    if (cur && cur.info.kind === "dicom") {
      const select = h("select", { id: "preset-select", onchange: (e) => this.setView({ preset: e.target.value }) });
      for (const p of PRESETS) select.append(h("option", { value: p, selected: cur.preset === p }, t(p ? `preset_${p}` : "preset_default")));
      bar.append(h("label", {}, tx("window_preset"), " ", select));
    }
    const followBox = h("input", { type: "checkbox", id: "follow-box", checked: this.follow, onchange: (e) => { this.follow = e.target.checked; this.followView(); } });
    bar.append(h("label", { class: "check" }, followBox, " ", tx("follow")));
    if (this.canWrite) {
      const presentBox = h("input", { type: "checkbox", id: "present-box", checked: this.presenting, onchange: (e) => { this.presenting = e.target.checked; if (this.presenting) this.publishView(); } });
      bar.append(h("label", { class: "check" }, presentBox, " ", tx("present")));
    } else {
      bar.append(h("p", { class: "hint" }, tx("read_only")));
    }
    this.renderFrameBar();
  }

  renderFrameBar() {
    const cur = this.current;
    const bar = clear(this.frameBar);
    if (!cur || cur.info.frames <= 1) return;
    const total = cur.info.frames;
    const range = h("input", { type: "range", min: "0", max: String(total - 1), value: String(cur.frame), id: "frame-range", oninput: (e) => this.setView({ frame: Number(e.target.value) }) });
    bar.append(range, h("span", { id: "frame-label" }, tx(cur.info.kind === "dicom" ? "slice" : "page", { n: cur.frame + 1, total })));
    range.setAttribute("aria-label", t(cur.info.kind === "dicom" ? "slice" : "page", { n: cur.frame + 1, total }));
  }

  setView(change) {
    const cur = this.current;
    if (!cur) return;
    const frameChanged = change.frame !== undefined && change.frame !== cur.frame;
    const presetChanged = change.preset !== undefined && change.preset !== cur.preset;
    if (change.frame !== undefined) change.frame = Math.max(0, Math.min(cur.info.frames - 1, change.frame));
    if (change.zoom !== undefined) change.zoom = Math.max(0.25, Math.min(16, change.zoom));
    Object.assign(cur, change);
    if (this.presenting && this.canWrite) this.publishViewSoon();
    if (frameChanged) this.renderFrameBar();
    if (frameChanged || presetChanged) this.loadFrame();
    else this.redraw();
  }

  /** Publish the view at most every 150 ms while dragging or zooming (the server rate-limits). */
  publishViewSoon() {
    if (this.viewTimer) return;
    this.viewTimer = setTimeout(() => {
      this.viewTimer = null;
      this.publishView();
    }, 150);
  }

  publishView() {
    const cur = this.current;
    if (!cur) return;
    cur.ydoc.transact(() => {
      cur.vmap.set("frame", cur.frame);
      cur.vmap.set("preset", cur.preset || null);
      cur.vmap.set("zoom", cur.zoom);
      cur.vmap.set("pan_x", cur.panX);
      cur.vmap.set("pan_y", cur.panY);
      cur.vmap.set("presenter", this.session.identity);
    });
  }

  followView() {
    const cur = this.current;
    if (!cur || !this.follow || this.presenting) return;
    const v = cur.vmap.toJSON();
    if (!v.presenter || v.presenter === this.session.identity) return;
    const frame = Number.isInteger(v.frame) ? v.frame : cur.frame;
    const preset = v.preset || "";
    const reload = frame !== cur.frame || preset !== cur.preset;
    Object.assign(cur, { frame, preset, zoom: v.zoom || 1, panX: v.pan_x || 0, panY: v.pan_y || 0 });
    if (reload) {
      this.renderTools();
      this.loadFrame();
    } else this.redraw();
  }

  async loadFrame() {
    const cur = this.current;
    if (!cur) return;
    const key = `${cur.info.id}:${cur.frame}:${cur.preset}`;
    if (!this.images.has(key)) {
      const q = cur.preset ? `?preset=${cur.preset}` : "";
      const url = `/api/rooms/${encodeURIComponent(this.session.room)}/documents/${cur.info.id}/frames/${cur.frame}.png${q}`;
      const promise = fetch(url, { headers: { Authorization: `Bearer ${this.session.token}` } })
        .then((res) => (res.ok ? res.blob() : Promise.reject(new Error(res.statusText))))
        .then((blob) => createImageBitmap(blob));
      this.images.set(key, promise);
      if (this.images.size > 64) this.images.delete(this.images.keys().next().value);
    }
    try {
      cur.image = await this.images.get(key);
    } catch (err) {
      this.images.delete(key);
      this.status(err);
    }
    this.redraw();
  }

  async download(path, filename) {
    const res = await fetch(path, { headers: { Authorization: `Bearer ${this.session.token}` } });
    if (!res.ok) return this.status(new Error(res.statusText));
    const url = URL.createObjectURL(await res.blob());
    const a = h("a", { href: url, download: filename });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  async exportGsps() {
    const cur = this.current;
    if (!cur) return;
    const q = cur.preset ? `?preset=${cur.preset}` : "";
    await this.download(`/api/rooms/${encodeURIComponent(this.session.room)}/documents/${cur.info.id}/export.gsps.dcm${q}`, `${cur.info.id}-gsps.dcm`);
  }

  /** "Saving…" until the server reports every change of ours committed (doc:saved). */
  renderSaved() {
    if (!this.savedEl) return;
    const sent = this.seqSent || 0;
    const saved = this.seqSaved || 0;
    if (!sent) this.savedEl.textContent = "";
    else setI18n(this.savedEl, saved >= sent ? "doc_saved" : "doc_saving");
    this.savedEl.dataset.state = !sent ? "" : saved >= sent ? "saved" : "saving";
  }

  async exportPng() {
    const cur = this.current;
    if (!cur) return;
    const q = new URLSearchParams({ frame: String(cur.frame) });
    if (cur.preset) q.set("preset", cur.preset);
    await this.download(`/api/rooms/${encodeURIComponent(this.session.room)}/documents/${cur.info.id}/export.png?${q}`, `${cur.info.name}-${cur.frame + 1}.png`);
  }

  // -- geometry -------------------------------------------------------------------------------
  resizeCanvas() {
    const box = this.canvas.parentElement;
    if (!box) return;
    const width = Math.max(200, box.clientWidth);
    const height = Math.max(200, Math.round(width * 0.75));
    const dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(width * dpr);
    this.canvas.height = Math.round(height * dpr);
    this.canvas.style.height = `${height}px`;
    this.redraw();
  }

  transform() {
    const cur = this.current;
    const [w, hgt] = cur.info.frame_sizes ? cur.info.frame_sizes[cur.frame] || [cur.info.width, cur.info.height] : [cur.info.width, cur.info.height];
    const cw = this.canvas.width;
    const ch = this.canvas.height;
    const fit = Math.min(cw / w, ch / hgt);
    const scale = fit * cur.zoom;
    const ox = (cw - w * scale) / 2 + cur.panX * cw;
    const oy = (ch - hgt * scale) / 2 + cur.panY * ch;
    return { scale, ox, oy, w, h: hgt };
  }

  toImage(evt) {
    const rect = this.canvas.getBoundingClientRect();
    const px = ((evt.clientX - rect.left) * this.canvas.width) / rect.width;
    const py = ((evt.clientY - rect.top) * this.canvas.height) / rect.height;
    const { scale, ox, oy } = this.transform();
    return [(px - ox) / scale, (py - oy) / scale];
  }

  bindCanvas() {
    const c = this.canvas;
    let panStart = null;
    c.addEventListener("pointerdown", (e) => {
      if (!this.current) return;
      c.setPointerCapture(e.pointerId);
      const p = this.toImage(e);
      if (this.tool === "pan" || !this.canWrite) {
        panStart = { x: e.clientX, y: e.clientY, panX: this.current.panX, panY: this.current.panY };
        return;
      }
      if (this.tool === "angle") {
        if (!this.draft) this.draft = { tool: "angle", points: [p, p] };
        else if (this.draft.points.length === 2) this.draft.points.push(p);
        return;
      }
      if (this.tool === "text") {
        const text = window.prompt(t("text_prompt"));
        if (text) this.commit("text", [p], text);
        return;
      }
      this.draft = { tool: this.tool, points: [p, p] };
    });
    c.addEventListener("pointerleave", () => this.shareCursor(null));
    c.addEventListener("pointermove", (e) => {
      if (!this.current) return;
      this.shareCursor(this.toImage(e));
      if (panStart) {
        const rect = c.getBoundingClientRect();
        this.setView({ panX: panStart.panX + (e.clientX - panStart.x) / rect.width, panY: panStart.panY + (e.clientY - panStart.y) / rect.height });
        return;
      }
      if (!this.draft) return;
      const p = this.toImage(e);
      if (this.draft.tool === "freehand") {
        if (this.draft.points.length < 4096) this.draft.points.push(p);
      } else {
        this.draft.points[this.draft.points.length - 1] = p;
      }
      this.redraw();
    });
    c.addEventListener("pointerup", (e) => {
      if (panStart) {
        panStart = null;
        return;
      }
      if (!this.draft) return;
      const p = this.toImage(e);
      const d = this.draft;
      if (d.tool === "angle") {
        d.points[d.points.length - 1] = p;
        if (d.points.length === 3) {
          this.draft = null;
          this.commit("angle", d.points);
        } else {
          d.points.push(p); // first leg done: the next click places the second arm
        }
        return;
      }
      this.draft = null;
      if (d.tool !== "freehand") d.points[1] = p;
      const [a, b] = [d.points[0], d.points[d.points.length - 1]];
      if (Math.hypot(a[0] - b[0], a[1] - b[1]) < 1 && d.tool !== "freehand") {
        this.redraw();
        return;
      }
      let text = "";
      if (d.tool === "arrow") text = window.prompt(t("arrow_text_prompt")) || "";
      this.commit(d.tool, d.points, text);
    });
    c.addEventListener(
      "wheel",
      (e) => {
        if (!this.current) return;
        e.preventDefault();
        if (e.ctrlKey || this.current.info.frames <= 1) this.setView({ zoom: this.current.zoom * (e.deltaY < 0 ? 1.1 : 1 / 1.1) });
        else this.setView({ frame: this.current.frame + (e.deltaY > 0 ? 1 : -1) });
      },
      { passive: false },
    );
    c.addEventListener("keydown", (e) => {
      if (!this.current) return;
      const cur = this.current;
      const keys = {
        ArrowDown: () => this.setView({ frame: cur.frame + 1 }),
        PageDown: () => this.setView({ frame: cur.frame + 1 }),
        ArrowUp: () => this.setView({ frame: cur.frame - 1 }),
        PageUp: () => this.setView({ frame: cur.frame - 1 }),
        "+": () => this.setView({ zoom: cur.zoom * 1.25 }),
        "-": () => this.setView({ zoom: cur.zoom / 1.25 }),
        Escape: () => {
          this.draft = null;
          this.redraw();
        },
      };
      if (keys[e.key]) {
        e.preventDefault();
        keys[e.key]();
      }
    });
  }

  commit(tool, points, text = "") {
    const cur = this.current;
    if (!cur || !this.canWrite) return;
    const id = uuid();
    const now = Date.now() / 1000;
    const me = this.session.joined.self;
    const entry = new Y.Map();
    const sop = cur.info.sop_uids ? cur.info.sop_uids[cur.frame] || null : null;
    const fields = {
      id,
      author: me.identity,
      author_name: me.name,
      colour: "#ff0000", // the server stamps the author's real colour
      tool,
      points: points.map(([x, y]) => [Number(x.toFixed(2)), Number(y.toFixed(2))]),
      frame: cur.frame,
      sop_uid: sop,
      text: text.slice(0, 2000),
      created: now,
      updated: now,
    };
    cur.ydoc.transact(() => {
      for (const [k, v] of Object.entries(fields)) entry.set(k, v);
      cur.amap.set(id, entry);
    });
    this.redraw();
  }

  undo() {
    const cur = this.current;
    if (!cur) return;
    const me = this.session.identity;
    let latest = null;
    cur.amap.forEach((entry, key) => {
      const v = entry instanceof Y.Map ? entry.toJSON() : entry;
      if (v && v.author === me && (!latest || (v.created || 0) >= latest.created)) latest = { key, created: v.created || 0 };
    });
    if (latest) cur.amap.delete(latest.key);
  }

  marks() {
    const cur = this.current;
    const out = [];
    if (!cur) return out;
    cur.amap.forEach((entry, key) => {
      const v = entry instanceof Y.Map ? entry.toJSON() : entry;
      if (v && v.id === key && Array.isArray(v.points)) out.push(v);
    });
    out.sort((a, b) => (a.created || 0) - (b.created || 0));
    return out;
  }

  // -- drawing --------------------------------------------------------------------------------
  redraw() {
    const cur = this.current;
    if (!cur || !this.canvas) return;
    const ctx = this.canvas.getContext("2d");
    const { scale, ox, oy, w, h: hgt } = this.transform();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#111";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    ctx.setTransform(scale, 0, 0, scale, ox, oy);
    if (cur.image) ctx.drawImage(cur.image, 0, 0, w, hgt);
    const marks = this.marks();
    const lw = 2 / scale;
    for (const m of marks) {
      if ((m.frame || 0) !== cur.frame) continue;
      const label = m.measurement && m.measurement.label ? m.measurement.label : liveMeasure(m.tool, m.points, cur.info.pixel_spacing);
      drawMark(ctx, m.tool, m.points, m.colour || "#ff0000", lw, [m.text, label].filter(Boolean).join(" "), scale);
    }
    const cursors = this.remoteCursors();
    for (const c of cursors) drawCursor(ctx, c, scale);
    this.canvas.dataset.cursors = cursors.map((c) => c.name).join(",");
    if (this.draft) {
      drawMark(ctx, this.draft.tool, this.draft.points, "#ffff00", lw, liveMeasure(this.draft.tool, this.draft.points, cur.info.pixel_spacing), scale);
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    this.renderMarks(marks);
  }

  renderMarks(marks) {
    const list = clear(this.markList);
    const cur = this.current;
    for (const m of marks) {
      const label = m.measurement && m.measurement.label ? m.measurement.label : "";
      list.append(
        h(
          "li",
          { "data-mark": m.id, "data-tool": m.tool, "data-author": m.author, "data-frame": String(m.frame || 0) },
          h("span", { class: "swatch", style: { background: m.colour } }),
          ` ${m.author_name || m.author} · `,
          tx(`tool_${m.tool}`),
          m.text ? ` “${m.text}”` : "",
          label ? h("span", { class: "measurement" }, ` ${label}`) : "",
          cur && cur.info.frames > 1 ? ` · #${(m.frame || 0) + 1}` : "",
        ),
      );
    }
    this.element.dataset.marks = String(marks.length);
  }
}

function drawCursor(ctx, c, scale) {
  ctx.save();
  ctx.fillStyle = c.colour || "#ff0";
  ctx.strokeStyle = "#000";
  ctx.lineWidth = 1.5 / scale;
  ctx.beginPath();
  ctx.arc(c.x, c.y, 6 / scale, 0, Math.PI * 2);
  ctx.fill();
  ctx.stroke();
  ctx.font = `${12 / scale}px system-ui, sans-serif`;
  ctx.lineWidth = 3 / scale;
  ctx.fillStyle = "#fff";
  ctx.strokeText(c.name, c.x + 9 / scale, c.y + 4 / scale);
  ctx.fillText(c.name, c.x + 9 / scale, c.y + 4 / scale);
  ctx.restore();
}

function drawMark(ctx, tool, points, colour, lw, label, scale) {
  ctx.save();
  ctx.strokeStyle = colour;
  ctx.fillStyle = colour;
  ctx.lineWidth = lw;
  const [a, b] = points;
  ctx.beginPath();
  if (tool === "length" || tool === "arrow") {
    ctx.moveTo(a[0], a[1]);
    ctx.lineTo(b[0], b[1]);
    ctx.stroke();
    if (tool === "arrow") {
      const ang = Math.atan2(b[1] - a[1], b[0] - a[0]);
      const size = 12 / scale;
      ctx.beginPath();
      ctx.moveTo(b[0], b[1]);
      ctx.lineTo(b[0] - size * Math.cos(ang - 0.4), b[1] - size * Math.sin(ang - 0.4));
      ctx.lineTo(b[0] - size * Math.cos(ang + 0.4), b[1] - size * Math.sin(ang + 0.4));
      ctx.closePath();
      ctx.fill();
    }
  } else if (tool === "angle") {
    ctx.moveTo(a[0], a[1]);
    ctx.lineTo(b[0], b[1]);
    if (points[2]) ctx.lineTo(points[2][0], points[2][1]);
    ctx.stroke();
  } else if (tool === "rect") {
    ctx.strokeRect(Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.abs(b[0] - a[0]), Math.abs(b[1] - a[1]));
  } else if (tool === "ellipse") {
    ctx.ellipse((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, Math.abs(b[0] - a[0]) / 2, Math.abs(b[1] - a[1]) / 2, 0, 0, Math.PI * 2);
    ctx.stroke();
  } else if (tool === "freehand") {
    ctx.moveTo(a[0], a[1]);
    for (const p of points.slice(1)) ctx.lineTo(p[0], p[1]);
    ctx.stroke();
  } else if (tool === "text") {
    ctx.arc(a[0], a[1], 3 / scale, 0, Math.PI * 2);
    ctx.fill();
  }
  if (label) {
    const at = tool === "angle" ? b : points[points.length - 1];
    ctx.font = `600 ${14 / scale}px system-ui, sans-serif`;
    ctx.lineWidth = 3 / scale;
    ctx.strokeStyle = "#000";
    ctx.fillStyle = "#fff"; // white on a dark outline reads on any image; the mark has the colour
    ctx.strokeText(label, at[0] + 6 / scale, at[1] - 6 / scale);
    ctx.fillText(label, at[0] + 6 / scale, at[1] - 6 / scale);
  }
  ctx.restore();
}
