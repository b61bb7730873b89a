// Pointers on the open document: ours shared through Yjs awareness (image coordinates and
// frame, throttled), the others' drawn on the canvas with their names.
const CURSOR_INTERVAL_MS = 150; // pointer updates, well under the server's rate limit

export class Cursors {
  /** current() is the open document (DocSync.current), or null. */
  constructor(current) {
    this.current = current;
    this.pending = null;
    this.timer = null;
  }

  /** Share this pointer (image coordinates and frame) with the others, throttled. */
  share(point) {
    const cur = this.current();
    if (!cur || !cur.awareness) return;
    this.pending = point;
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      const p = this.pending;
      const now = this.current();
      if (!now || !now.awareness) return;
      now.awareness.setLocalStateField("cursor", p ? { x: Number(p[0].toFixed(1)), y: Number(p[1].toFixed(1)), frame: now.frame } : null);
    }, CURSOR_INTERVAL_MS);
  }

  /** The others' pointers on the frame shown: [{x, y, name, colour}]. */
  remote() {
    const cur = this.current();
    const out = [];
    if (!cur || !cur.awareness) return out;
    cur.awareness.getStates().forEach((state, clientId) => {
      if (clientId === cur.ydoc.clientID || !state || !state.cursor || !state.user) return;
      if (state.cursor.frame !== cur.frame) return;
      out.push({ x: state.cursor.x, y: state.cursor.y, name: state.user.name, colour: state.user.colour });
    });
    return out;
  }
}

export function drawCursor(ctx, c, scale) {
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
