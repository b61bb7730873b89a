// The annotation entries of the open document (a Y.Map of Y.Maps, annotation/model.py): adding
// one, undoing one's own latest, reading them in order, and the list shown under the viewer.
import * as Y from "yjs";
import { clear, h, tx } from "../dom.js";

function uuid() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Add a mark by `me` (the joined self) on the frame shown; points in image pixels. */
export function addMark(cur, me, tool, points, text = "") {
  const id = uuid();
  const now = Date.now() / 1000;
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
}

/** Delete the latest mark whose author is `identity`. */
export function undoLatest(cur, identity) {
  let latest = null;
  cur.amap.forEach((entry, key) => {
    const v = entry instanceof Y.Map ? entry.toJSON() : entry;
    if (v && v.author === identity && (!latest || (v.created || 0) >= latest.created)) latest = { key, created: v.created || 0 };
  });
  if (latest) cur.amap.delete(latest.key);
}

/** Every well-formed mark, oldest first. */
export function readMarks(cur) {
  const out = [];
  if (!cur) return out;
  cur.amap.forEach((entry, key) => {
    const v = entry instanceof Y.Map ? entry.toJSON() : entry;
    if (v && v.id === key && Array.isArray(v.points)) out.push(v);
  });
  out.sort((a, b) => (a.created || 0) - (b.created || 0));
  return out;
}

/** The marks list (#mark-list): author, tool, text, the server's measurement, the frame. */
export function renderMarkList(listEl, cur, marks) {
  const list = clear(listEl);
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
}
