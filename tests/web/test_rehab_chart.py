"""The rehab charts render in Chromium: web_client/src/chart.js (uPlot from node_modules,
bundled here with the project's esbuild into one inline script: no CDN, no network)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from rehab_vision.session import analyze_sequence
from rehab_vision.specs import get_spec
from tests.rehab.conftest import entry, poses

WEB = Path(__file__).resolve().parents[2] / "web_client"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def chart_bundle(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("chart") / "chart.js"
    esbuild = WEB / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        pytest.skip("web_client/node_modules missing: npm install in web_client")
    subprocess.run(
        [
            str(esbuild),
            "src/chart.js",
            "--bundle",
            "--format=iife",
            "--global-name=Charts",
            f"--outfile={out}",
            "--log-level=warning",
        ],
        cwd=WEB,
        check=True,
        timeout=60,
    )
    return out.read_text()


# Colour classes of the chart canvas: the trace, the rep spans and the target band.
PIXELS_JS = """
(sel) => {
  const c = document.querySelector(sel + ' canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let ink = 0, sand = 0, teal = 0;
  for (let i = 0; i < d.length; i += 4) {
    const [r, g, b, a] = [d[i], d[i + 1], d[i + 2], d[i + 3]];
    if (a === 0) continue;
    if (r < 80 && g < 110 && b < 120) ink++;
    else if (r > 200 && g > 170 && b < 200 && r > b + 30) sand++;
    else if (g > r + 15 && b > r + 5) teal++;
  }
  return {ink, sand, teal, w: c.width, h: c.height,
          reps: Number(document.querySelector(sel).dataset.reps)};
}
"""


def _set_report() -> dict[str, Any]:
    clip = entry("postop_squat")
    s = analyze_sequence(poses(clip), get_spec("squat")).summary()
    return {
        "set": 1,
        "reps": s["reps"],
        "reps_detail": s["reps_detail"],
        "angle_trace": s["angle_trace"],
        "rest_deg": s["rest_deg"],
        "target_deg": s["target_deg"],
    }


async def test_angle_and_progress_charts_render(
    new_page: Any, chart_bundle: str, requests_seen: Any
) -> None:
    page = await new_page(lang="zh-CN")
    await page.set_content("<html><body><div id=a></div><div id=p></div></body></html>")
    await page.add_script_tag(content=chart_bundle)
    rep = _set_report()
    await page.evaluate(
        """(rep) => { Charts.angleChart(document.getElementById('a'), rep,
                         {time: '时间 (秒)', angle: '角度 (°)'}); }""",
        rep,
    )
    weeks = [
        {
            "week": f"第{i}周",
            "rom_deg": 80 + 6 * i,
            "score": 70 + 4 * i,
            "adherence": 0.5 + 0.08 * i,
        }
        for i in range(1, 7)
    ]
    await page.evaluate(
        """(w) => { Charts.progressChart(document.getElementById('p'), w,
                       {rom: '活动度', score: '评分', adherence: '完成率'}); }""",
        weeks,
    )
    a = await page.evaluate(PIXELS_JS, "#a")
    assert a["reps"] == 4
    assert a["ink"] > 300, a  # the angle trace (and axes)
    assert a["sand"] > 2000, a  # four rep spans shaded
    assert a["teal"] > 2000, a  # the target band
    p = await page.evaluate(PIXELS_JS, "#p")
    assert p["ink"] > 100 and p["sand"] > 500, p  # ROM line, adherence bars
    legend = await page.inner_text("#p")
    assert "活动度" in legend and "完成率" in legend
    assert page.js_errors == []  # type: ignore[attr-defined]
    assert requests_seen.outside() == []
    json.dumps(rep)  # the report as the server sends it is plain JSON
