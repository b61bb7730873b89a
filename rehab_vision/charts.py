"""Charts for the consult record, as PNG: the joint angle over time with the counted reps
marked and the target range shaded, and progress over weeks (ROM, score, adherence).

Drawn with matplotlib (Agg, no display); Chinese labels use a CJK font found on the machine at
run time (Noto Sans/Serif CJK, WenQuanYi), never downloaded. Without such a font the labels
fall back to English only, so a chart is never drawn with missing-glyph boxes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Serif CJK SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Noto Sans CJK JP",
    "Droid Sans Fallback",
)


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The family name of an installed font with Chinese glyphs, or None."""
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    for family in CJK_FAMILIES:
        if family in names:
            return family
    for path in font_manager.findSystemFonts():  # fonts matplotlib has not listed yet
        low = path.lower()
        if "cjk" in low or "wqy" in low or "wenquanyi" in low:
            font_manager.fontManager.addfont(path)
            return font_manager.FontProperties(fname=path).get_name()
    return None


def _figure(width: float = 8.0, height: float = 3.6) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    font = cjk_font()
    fig = Figure(figsize=(width, height), dpi=100)
    if font:
        fig.set_layout_engine("tight")
    return fig, font


def _label(en: str, zh: str, font: str | None) -> str:
    return f"{zh} {en}" if font else en


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def angle_chart_png(
    set_report: dict[str, Any],
    title_en: str,
    title_zh: str,
    joint_en: str = "joint angle",
    joint_zh: str = "关节角度",
) -> bytes:
    """One set: smoothed joint angle (deg) over time (s), each counted rep shaded from start
    to end with its number at the peak, the band between the rest and target angles shaded."""
    fig, font = _figure()
    ax = fig.add_subplot()
    if font:
        for item in (ax.title, ax.xaxis.label, ax.yaxis.label):
            item.set_fontfamily(font)
    trace = set_report.get("angle_trace") or {"t": [], "deg": []}
    rest, target = set_report.get("rest_deg"), set_report.get("target_deg")
    if rest is not None and target is not None:
        ax.axhspan(
            min(rest, target),
            max(rest, target),
            color="#2a9d8f",
            alpha=0.12,
            label=_label("target range", "目标范围", font),
        )
        ax.axhline(target, color="#2a9d8f", lw=1, ls="--")
    for rep in set_report.get("reps_detail", []):
        ax.axvspan(rep["start_s"], rep["end_s"], color="#e9c46a", alpha=0.35, lw=0)
        ax.annotate(
            str(rep["index"]),
            (rep["peak_s"], rep["peak_deg"]),
            ha="center",
            va="bottom",
            fontsize=9,
            fontweight="bold",
        )
    ax.plot(
        trace["t"], trace["deg"], color="#264653", lw=1.5, label=_label(joint_en, joint_zh, font)
    )
    reps = len(set_report.get("reps_detail", []))
    ax.set_title(
        _label(
            f"{title_en}, set {set_report.get('set', 1)}: {reps} reps",
            f"{title_zh} 第{set_report.get('set', 1)}组 {reps}次",
            font,
        )
    )
    ax.set_xlabel(_label("time (s)", "时间(秒)", font))
    ax.set_ylabel(_label(f"{joint_en} (deg)", f"{joint_zh}(度)", font))
    ax.grid(alpha=0.3)
    legend = ax.legend(loc="lower right", fontsize=8)
    if font:
        for text in legend.get_texts():
            text.set_fontfamily(font)
    return _png(fig)


def progress_chart_png(
    weeks: Sequence[dict[str, Any]], title_en: str = "Progress", title_zh: str = "康复进展"
) -> bytes:
    """Per week (``week`` label, ``rom_deg``, ``score``, ``adherence`` 0-1): ROM and score as
    lines, adherence as bars on a second axis."""
    fig, font = _figure(8.0, 3.8)
    ax = fig.add_subplot()
    labels = [str(w["week"]) for w in weeks]
    x = list(range(len(weeks)))
    ax2 = ax.twinx()
    ax2.bar(
        x,
        [100 * (w.get("adherence") or 0) for w in weeks],
        color="#e9c46a",
        alpha=0.5,
        label=_label("adherence %", "完成率 %", font),
    )
    ax2.set_ylim(0, 110)
    ax.plot(
        x,
        [w.get("rom_deg") for w in weeks],
        "o-",
        color="#264653",
        label=_label("ROM (deg)", "活动度(度)", font),
    )
    ax.plot(
        x,
        [w.get("score") for w in weeks],
        "s-",
        color="#e76f51",
        label=_label("score", "评分", font),
    )
    ax.set_xticks(x, labels)
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_title(_label(title_en, title_zh, font))
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()
    handles2 = ax2.get_legend_handles_labels()
    legend = ax.legend(
        handles[0] + handles2[0], handles[1] + handles2[1], loc="upper left", fontsize=8
    )
    if font:
        for item in [ax.title, *legend.get_texts()]:
            item.set_fontfamily(font)
    return _png(fig)
