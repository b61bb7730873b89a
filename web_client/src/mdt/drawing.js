// Drawing the annotation entries on the viewer's canvas (image pixels), and the value shown
// while a measurement is being drawn (annotation/model.py writes the real one once synced).

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

/** One mark: its shape in `colour`, and its label (text, measurement) white on a dark outline. */
export function drawMark(ctx, tool, points, colour, lw, label, scale) {
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
