// Exports of the open document, downloaded with the session's token: the frame as a PNG with
// its marks burnt in, and (DICOM) the marks as a Softcopy Presentation State (gsps.py).
import { h } from "../dom.js";

function documentPath(session, cur) {
  return `/api/rooms/${encodeURIComponent(session.room)}/documents/${cur.info.id}`;
}

/** Fetch `path` with the token and save it as `filename`; a refusal goes to onError. */
async function download(session, path, filename, onError) {
  const res = await fetch(path, { headers: { Authorization: `Bearer ${session.token}` } });
  if (!res.ok) return onError(new Error(res.statusText));
  const url = URL.createObjectURL(await res.blob());
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** The current frame in the current window preset, with the marks (export.png). */
export async function exportPng(session, cur, onError) {
  if (!cur) return;
  const q = new URLSearchParams({ frame: String(cur.frame) });
  if (cur.preset) q.set("preset", cur.preset);
  await download(session, `${documentPath(session, cur)}/export.png?${q}`, `${cur.info.name}-${cur.frame + 1}.png`, onError);
}

/** The marks as a DICOM presentation state, in the current preset (export.gsps.dcm). */
export async function exportGsps(session, cur, onError) {
  if (!cur) return;
  const q = cur.preset ? `?preset=${cur.preset}` : "";
  await download(session, `${documentPath(session, cur)}/export.gsps.dcm${q}`, `${cur.info.id}-gsps.dcm`, onError);
}
