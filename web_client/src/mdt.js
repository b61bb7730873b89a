// MDT panel: the room's documents (images, PDF pages, DICOM series), a viewer with zoom/pan,
// slice scroll, window presets and follow-the-presenter, and shared annotation on Yjs synced
// with the server over `doc:*` events (y-protocols sync messages; docs/annotation.md).
// Annotation entries: see annotation/model.py (points in image pixels; measurements are written
// by the server; the live value while drawing is computed here the same way).
// This module composes the panel and keeps the view (frame, preset, zoom, pan, follow); its
// parts are in mdt/: uploads, sync (Yjs, awareness, saved state), cursors, tools (the canvas
// input), marks (the entries), drawing and exports.
import { button, clear, h, tx } from "./dom.js";
import { t } from "./i18n.js";
import { Cursors, drawCursor } from "./mdt/cursors.js";
import { drawMark, liveMeasure } from "./mdt/drawing.js";
import { exportGsps, exportPng } from "./mdt/exports.js";
import { addMark, readMarks, renderMarkList, undoLatest } from "./mdt/marks.js";
import { DocSync } from "./mdt/sync.js";
import { AnnotationTools, TOOLS } from "./mdt/tools.js";
import { Uploads } from "./mdt/uploads.js";

export { liveMeasure };

const PRESETS = ["", "soft_tissue", "lung", "bone", "brain"];
const VIEW_INTERVAL_MS = 150; // the presenter's view updates, under the server's rate limit

export class DocumentsPanel {
  constructor(session, features) {
    this.session = session;
    this.features = features;
    this.element = h("div", { class: "mdt", id: "mdt" });
    this.docs = [];
    this.follow = true;
    this.presenting = false;
    this.images = new Map();
    if (!features.documents) {
      this.element.append(h("p", { class: "unavailable", id: "docs-unavailable" }, tx("docs_unavailable")));
      return;
    }
    this.sync = new DocSync(session, {
      onMarks: () => this.redraw(),
      onView: () => this.followView(),
      onCursors: () => this.redraw(),
      onError: (err) => this.status(err),
    });
    this.uploads = new Uploads(session, (docId) => this.open(docId));
    this.cursors = new Cursors(() => this.current);
    this.tools = new AnnotationTools(this);
    this.build();
    session.on("doc:added", (msg) => {
      this.docs = [...this.docs.filter((d) => d.id !== msg.document.id), msg.document];
      this.renderList();
    });
    session.on("joined", () => this.refresh(true));
  }

  /** The open document: {info, ydoc, amap, vmap, awareness, frame, preset, zoom, panX, panY, image}. */
  get current() {
    return this.sync ? this.sync.current : null;
  }

  get canWrite() {
    return Boolean(this.sync && this.sync.canWrite);
  }

  get grants() {
    return (this.session.joined && this.session.joined.self.grants) || {};
  }

  build() {
    this.listEl = h("ul", { class: "doc-list", id: "doc-list" });
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
    this.element.append(this.uploads.label, this.uploads.status, this.listEl, this.viewer);
    this.tools.bind(this.canvas);
    new ResizeObserver(() => this.resizeCanvas()).observe(this.canvas.parentElement);
  }

  async refresh(reopen = false) {
    if (!this.features.documents) return;
    this.uploads.setAllowed(Boolean(this.grants.annotate));
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

  /** Open a document in the viewer (or re-sync `existing`, the open one, after a reconnect). */
  async open(docId, existing = null) {
    await this.sync.open(docId, existing);
    this.viewer.hidden = false;
    this.renderList();
    this.renderTools();
    this.followView();
    this.resizeCanvas();
    await this.loadFrame();
  }

  status(err) {
    this.uploads.showError(err);
  }

  // -- marks --------------------------------------------------------------------------------------
  commit(tool, points, text = "") {
    const cur = this.current;
    if (!cur || !this.canWrite) return;
    addMark(cur, this.session.joined.self, tool, points, text);
    this.redraw();
  }

  undo() {
    const cur = this.current;
    if (cur) undoLatest(cur, this.session.identity);
  }

  // -- toolbar ------------------------------------------------------------------------------------
  renderTools() {
    const bar = clear(this.toolbar);
    const cur = this.current;
    const tools = this.canWrite ? TOOLS : ["pan"];
    const chosen = this.tools.tool;
    for (const tool of tools) {
      bar.append(
        button(`tool_${tool}`, () => {
          this.tools.tool = tool;
          this.renderTools();
        }, { "aria-pressed": chosen === tool ? "true" : "false", "data-tool": tool, class: chosen === tool ? "toggled" : "" }),
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
    const onError = (err) => this.status(err);
    bar.append(button("export", () => exportPng(this.session, this.current, onError), { id: "export-png" }));
    if (cur && cur.info.kind === "dicom") bar.append(button("export_gsps", () => exportGsps(this.session, this.current, onError), { id: "export-gsps" }));
    bar.append(this.sync.savedEl);
    this.sync.renderSaved();
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

  // -- view ---------------------------------------------------------------------------------------

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
    }, VIEW_INTERVAL_MS);
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

  // -- geometry -----------------------------------------------------------------------------------
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

  // -- drawing ------------------------------------------------------------------------------------
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
    const marks = readMarks(cur);
    const lw = 2 / scale;
    for (const m of marks) {
      if ((m.frame || 0) !== cur.frame) continue;
      const label = m.measurement && m.measurement.label ? m.measurement.label : liveMeasure(m.tool, m.points, cur.info.pixel_spacing);
      drawMark(ctx, m.tool, m.points, m.colour || "#ff0000", lw, [m.text, label].filter(Boolean).join(" "), scale);
    }
    const cursors = this.cursors.remote();
    for (const c of cursors) drawCursor(ctx, c, scale);
    this.canvas.dataset.cursors = cursors.map((c) => c.name).join(",");
    const draft = this.tools.draft;
    if (draft) {
      drawMark(ctx, draft.tool, draft.points, "#ffff00", lw, liveMeasure(draft.tool, draft.points, cur.info.pixel_spacing), scale);
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    renderMarkList(this.markList, cur, marks);
    this.element.dataset.marks = String(marks.length);
  }
}
