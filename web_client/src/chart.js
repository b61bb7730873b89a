// Rehab charts in the browser (uPlot, bundled from npm: no CDN). angleChart: one set's joint
// angle over time, each counted rep shaded from its start to its end and numbered at its peak,
// the band between the rest and target angles shaded. progressChart: ROM, score and
// adherence per week. Both return the uPlot instance (its canvas is what gets drawn).
import uPlot from "uplot";

const INK = "#264653";
const SAND = "rgba(233, 196, 106, 0.35)";

function bandsHook(setReport) {
  return (u) => {
    const { ctx } = u;
    const { left, top, width, height } = u.bbox;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    const rest = setReport.rest_deg;
    const target = setReport.target_deg;
    if (rest != null && target != null) {
      const y0 = u.valToPos(Math.max(rest, target), "y", true);
      const y1 = u.valToPos(Math.min(rest, target), "y", true);
      ctx.fillStyle = "rgba(42, 157, 143, 0.14)";
      ctx.fillRect(left, y0, width, y1 - y0);
    }
    ctx.fillStyle = SAND;
    for (const rep of setReport.reps_detail || []) {
      const x0 = u.valToPos(rep.start_s, "x", true);
      const x1 = u.valToPos(rep.end_s, "x", true);
      ctx.fillRect(x0, top, Math.max(1, x1 - x0), height);
    }
    ctx.restore();
  };
}

function labelsHook(setReport) {
  return (u) => {
    const { ctx } = u;
    ctx.save();
    ctx.fillStyle = INK;
    ctx.font = `bold ${Math.round(12 * devicePixelRatio)}px sans-serif`;
    ctx.textAlign = "center";
    for (const rep of setReport.reps_detail || []) {
      const x = u.valToPos(rep.peak_s, "x", true);
      const y = u.valToPos(rep.peak_deg, "y", true);
      ctx.fillText(String(rep.index), x, y - 6 * devicePixelRatio);
    }
    ctx.restore();
  };
}

/** One set's angle over time in `el`; `labels` = {time, angle} axis titles (localised). */
export function angleChart(el, setReport, labels = {}, size = { width: 560, height: 220 }) {
  const trace = setReport.angle_trace || { t: [], deg: [] };
  const degs = trace.deg.concat([setReport.rest_deg, setReport.target_deg].filter((v) => v != null));
  const lo = Math.min(...degs) - 10;
  const hi = Math.max(...degs) + 10;
  const opts = {
    ...size,
    legend: { show: false },
    cursor: { show: false },
    scales: { x: { time: false }, y: { range: [lo, hi] } },
    axes: [
      { label: labels.time || "s", stroke: INK },
      { label: labels.angle || "°", stroke: INK },
    ],
    series: [{}, { stroke: INK, width: 2 }],
    hooks: { drawClear: [bandsHook(setReport)], draw: [labelsHook(setReport)] },
  };
  el.dataset.reps = String((setReport.reps_detail || []).length);
  el.dataset.points = String(trace.t.length);
  return new uPlot(opts, [trace.t, trace.deg], el);
}

/** Progress per week: rows of {week, rom_deg, score, adherence (0..1)}. */
export function progressChart(el, weeks, labels = {}, size = { width: 560, height: 220 }) {
  const x = weeks.map((_, i) => i);
  const opts = {
    ...size,
    legend: { show: true },
    cursor: { show: false },
    scales: { x: { time: false }, y: { range: [0, 180] }, pct: { range: [0, 110] } },
    axes: [
      { stroke: INK, values: (u, ticks) => ticks.map((i) => (weeks[i] ? String(weeks[i].week) : "")) },
      { stroke: INK },
      { scale: "pct", side: 1, stroke: "#b08900", grid: { show: false } },
    ],
    series: [
      {},
      { label: labels.rom || "ROM", stroke: INK, width: 2, points: { show: true } },
      { label: labels.score || "score", stroke: "#e76f51", width: 2, points: { show: true } },
      { label: labels.adherence || "%", scale: "pct", stroke: "#b08900", fill: SAND, paths: uPlot.paths.bars({ size: [0.5] }) },
    ],
  };
  return new uPlot(opts, [x, weeks.map((w) => w.rom_deg), weeks.map((w) => w.score), weeks.map((w) => 100 * (w.adherence || 0))], el);
}
