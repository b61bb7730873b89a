// The annotation tools on the viewer's canvas: the chosen tool, the mark being drawn (draft),
// and the canvas input: pan and draw with the pointer, zoom or scroll slices with the wheel,
// slices and zoom with the keys.
import { t } from "../i18n.js";

export const TOOLS = ["pan", "arrow", "text", "freehand", "ellipse", "rect", "length", "angle"];

export class AnnotationTools {
  /**
   * host: the documents panel (current, canWrite, toImage(evt), setView(change), redraw(),
   * commit(tool, points, text), cursors).
   */
  constructor(host) {
    this.host = host;
    this.tool = "pan";
    this.draft = null; // {tool, points} while a mark is being drawn
  }

  /** Listen to the canvas' pointer, wheel and key events. */
  bind(c) {
    const host = this.host;
    let panStart = null;
    c.addEventListener("pointerdown", (e) => {
      if (!host.current) return;
      c.setPointerCapture(e.pointerId);
      const p = host.toImage(e);
      if (this.tool === "pan" || !host.canWrite) {
        panStart = { x: e.clientX, y: e.clientY, panX: host.current.panX, panY: host.current.panY };
        return;
      }
      if (this.tool === "angle") {
        if (!this.draft) this.draft = { tool: "angle", points: [p, p] };
        else if (this.draft.points.length === 2) this.draft.points.push(p);
        return;
      }
      if (this.tool === "text") {
        const text = window.prompt(t("text_prompt"));
        if (text) host.commit("text", [p], text);
        return;
      }
      this.draft = { tool: this.tool, points: [p, p] };
    });
    c.addEventListener("pointerleave", () => host.cursors.share(null));
    c.addEventListener("pointermove", (e) => {
      if (!host.current) return;
      host.cursors.share(host.toImage(e));
      if (panStart) {
        const rect = c.getBoundingClientRect();
        host.setView({ panX: panStart.panX + (e.clientX - panStart.x) / rect.width, panY: panStart.panY + (e.clientY - panStart.y) / rect.height });
        return;
      }
      if (!this.draft) return;
      const p = host.toImage(e);
      if (this.draft.tool === "freehand") {
        if (this.draft.points.length < 4096) this.draft.points.push(p);
      } else {
        this.draft.points[this.draft.points.length - 1] = p;
      }
      host.redraw();
    });
    c.addEventListener("pointerup", (e) => {
      if (panStart) {
        panStart = null;
        return;
      }
      if (!this.draft) return;
      const p = host.toImage(e);
      const d = this.draft;
      if (d.tool === "angle") {
        d.points[d.points.length - 1] = p;
        if (d.points.length === 3) {
          this.draft = null;
          host.commit("angle", d.points);
        } else {
          d.points.push(p); // first leg done: the next click places the second arm
        }
        return;
      }
      this.draft = null;
      if (d.tool !== "freehand") d.points[1] = p;
      const [a, b] = [d.points[0], d.points[d.points.length - 1]];
      if (Math.hypot(a[0] - b[0], a[1] - b[1]) < 1 && d.tool !== "freehand") {
        host.redraw();
        return;
      }
      let text = "";
      if (d.tool === "arrow") text = window.prompt(t("arrow_text_prompt")) || "";
      host.commit(d.tool, d.points, text);
    });
    c.addEventListener(
      "wheel",
      (e) => {
        if (!host.current) return;
        e.preventDefault();
        if (e.ctrlKey || host.current.info.frames <= 1) host.setView({ zoom: host.current.zoom * (e.deltaY < 0 ? 1.1 : 1 / 1.1) });
        else host.setView({ frame: host.current.frame + (e.deltaY > 0 ? 1 : -1) });
      },
      { passive: false },
    );
    c.addEventListener("keydown", (e) => {
      if (!host.current) return;
      const cur = host.current;
      const keys = {
        ArrowDown: () => host.setView({ frame: cur.frame + 1 }),
        PageDown: () => host.setView({ frame: cur.frame + 1 }),
        ArrowUp: () => host.setView({ frame: cur.frame - 1 }),
        PageUp: () => host.setView({ frame: cur.frame - 1 }),
        "+": () => host.setView({ zoom: cur.zoom * 1.25 }),
        "-": () => host.setView({ zoom: cur.zoom / 1.25 }),
        Escape: () => {
          this.draft = null;
          host.redraw();
        },
      };
      if (keys[e.key]) {
        e.preventDefault();
        keys[e.key]();
      }
    });
  }
}
