// Skeleton overlay for rehab mode: the server's 2D pose of the frame it processed (`landmarks` of
// `rehab:update`: 33 MediaPipe points, flat x, y, visibility, normalised to that frame) drawn on a
// canvas laid exactly over a <video>. The canvas copies the video's box and CSS transform (so a
// mirrored self view mirrors the skeleton too) and maps the points through the video's
// object-fit (contain letterboxes, cover crops; centred object-position). No pose model runs in
// the browser.
import { h } from "./dom.js";
import { isElderly } from "./voice.js";

// MediaPipe Pose (BlazePose) connections, as mediapipe.solutions.pose.POSE_CONNECTIONS.
export const POSE_CONNECTIONS = [
  [0, 1], [0, 4], [1, 2], [2, 3], [3, 7], [4, 5], [5, 6], [6, 8], [9, 10], [11, 12], [11, 13],
  [11, 23], [12, 14], [12, 24], [13, 15], [14, 16], [15, 17], [15, 19], [15, 21], [16, 18],
  [16, 20], [16, 22], [17, 19], [18, 20], [23, 24], [23, 25], [24, 26], [25, 27], [26, 28],
  [27, 29], [27, 31], [28, 30], [28, 32], [29, 31], [30, 32],
];
const N_POINTS = 33;
export const MIN_VISIBILITY = 0.5;
// High contrast on light and dark pictures: a black casing under yellow bones, cyan joints
// (distinct from any skeleton already in the picture).
const CASING = "rgba(0, 0, 0, 0.9)";
const BONE = "#ffd60a";
const JOINT = "#00e5ff";

/** Where the video's picture lies inside its element box (CSS px), for its object-fit. */
export function contentRect(boxW, boxH, srcW, srcH, fit) {
  if (!srcW || !srcH) return { x: 0, y: 0, w: boxW, h: boxH };
  let sx = boxW / srcW;
  let sy = boxH / srcH;
  if (fit === "contain") sx = sy = Math.min(sx, sy);
  else if (fit === "cover") sx = sy = Math.max(sx, sy);
  else if (fit === "none") sx = sy = 1;
  else if (fit === "scale-down") sx = sy = Math.min(1, sx, sy);
  const w = srcW * sx;
  const hh = srcH * sy;
  return { x: (boxW - w) / 2, y: (boxH - hh) / 2, w, h: hh };
}

export class SkeletonOverlay {
  constructor(video, { id } = {}) {
    this.video = video;
    this.pose = null; // { points: [x, y, v] * 33, w, h } or null
    this.canvas = h("canvas", { class: "skeleton", "aria-hidden": "true", "data-points": "0" });
    if (id) this.canvas.id = id;
    video.after(this.canvas);
    this.redraw = () => this.draw();
    this.observer = typeof ResizeObserver === "function" ? new ResizeObserver(this.redraw) : null;
    if (this.observer) this.observer.observe(video);
    video.addEventListener("resize", this.redraw); // intrinsic size known or changed
    window.addEventListener("resize", this.redraw);
  }

  /** Draw the pose of a rehab:update (cleared when it has none). */
  show(update) {
    const pts = update && update.landmarks;
    this.pose = Array.isArray(pts) && pts.length === N_POINTS * 3 ? { points: pts, w: update.frame_w, h: update.frame_h } : null;
    this.draw();
  }

  clear() {
    this.pose = null;
    this.draw();
  }

  detach() {
    if (this.observer) this.observer.disconnect();
    this.video.removeEventListener("resize", this.redraw);
    window.removeEventListener("resize", this.redraw);
    this.canvas.remove();
  }

  draw() {
    const { video, canvas } = this;
    const boxW = video.clientWidth;
    const boxH = video.clientHeight;
    const style = getComputedStyle(video);
    const dpr = window.devicePixelRatio || 1;
    Object.assign(canvas.style, {
      left: `${video.offsetLeft}px`,
      top: `${video.offsetTop}px`,
      width: `${boxW}px`,
      height: `${boxH}px`,
      transform: style.transform === "none" ? "" : style.transform,
      transformOrigin: style.transformOrigin,
      borderRadius: style.borderRadius,
    });
    const cw = Math.round(boxW * dpr);
    const ch = Math.round(boxH * dpr);
    if (canvas.width !== cw || canvas.height !== ch) {
      canvas.width = cw;
      canvas.height = ch;
    }
    const g = canvas.getContext("2d");
    g.setTransform(1, 0, 0, 1, 0, 0);
    g.clearRect(0, 0, canvas.width, canvas.height);
    const pose = this.pose;
    const hidden = !boxW || !boxH || style.visibility === "hidden" || (video.closest && video.closest(".no-video"));
    if (!pose || hidden) {
      canvas.dataset.points = "0";
      return;
    }
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    const r = contentRect(boxW, boxH, video.videoWidth || pose.w, video.videoHeight || pose.h, style.objectFit);
    g.save();
    g.beginPath(); // points just outside the picture (MediaPipe extrapolates) stay off the letterbox
    g.rect(r.x, r.y, r.w, r.h);
    g.clip();
    const p = pose.points;
    const xy = (i) => [r.x + p[3 * i] * r.w, r.y + p[3 * i + 1] * r.h];
    const seen = (i) => p[3 * i + 2] >= MIN_VISIBILITY;
    const bone = Math.max(2.5, Math.min(r.w, r.h) / 110) * (isElderly() ? 1.5 : 1);
    const edge = Math.max(1.5, bone * 0.45);
    const lines = POSE_CONNECTIONS.filter(([a, b]) => seen(a) && seen(b));
    g.lineCap = "round";
    g.lineJoin = "round";
    for (const [width, colour] of [[bone + 2 * edge, CASING], [bone, BONE]]) {
      g.lineWidth = width;
      g.strokeStyle = colour;
      g.beginPath();
      for (const [a, b] of lines) {
        g.moveTo(...xy(a));
        g.lineTo(...xy(b));
      }
      g.stroke();
    }
    let drawn = 0;
    for (let i = 0; i < N_POINTS; i++) {
      if (!seen(i)) continue;
      const [x, y] = xy(i);
      const radius = bone * (i <= 10 ? 0.7 : 1.1); // face points smaller
      g.beginPath();
      g.arc(x, y, radius + edge, 0, 2 * Math.PI);
      g.fillStyle = CASING;
      g.fill();
      g.beginPath();
      g.arc(x, y, radius, 0, 2 * Math.PI);
      g.fillStyle = JOINT;
      g.fill();
      drawn++;
    }
    g.restore();
    canvas.dataset.points = String(drawn);
  }
}
