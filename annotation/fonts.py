"""A font with Chinese (CJK) coverage for exported images, found at run time.

Order: fontconfig (``fc-match 'sans-serif:lang=zh-cn'``, accepted only when the match really
covers zh-cn), then the files of the Debian packages ``fonts-noto-cjk`` and
``fonts-wqy-microhei``. Pillow's built-in font has no CJK glyphs (Chinese renders as boxes), so
without one of these the export fails with :class:`FontMissing` naming the package.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

from PIL import ImageFont

from .errors import AnnotationError

#: (file, face index) of known CJK fonts, best first (index 2 of Noto Sans CJK is the SC face).
KNOWN_FONTS: tuple[tuple[str, int], ...] = (
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 2),
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Medium.ttc", 2),
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0),
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 0),
)
PACKAGES = "fonts-noto-cjk (or fonts-wqy-microhei)"


class FontMissing(AnnotationError):
    """No font with Chinese coverage is installed."""

    code = "font_missing"
    http_status = 503


def _fontconfig() -> tuple[str, int] | None:
    exe = shutil.which("fc-match")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "-f", "%{file}\t%{index}\t%{lang}", "sans-serif:lang=zh-cn"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    parts = out.split("\t")
    if len(parts) != 3 or "zh-cn" not in parts[2].split("|"):
        return None
    path, index = parts[0], parts[1]
    return (path, int(index or 0)) if Path(path).is_file() else None


@functools.lru_cache(maxsize=1)
def cjk_font_file() -> tuple[str, int]:
    """(path, face index) of a font covering Chinese; :class:`FontMissing` when none is."""
    found = _fontconfig()
    if found is not None:
        return found
    for path, index in KNOWN_FONTS:
        if Path(path).is_file():
            return path, index
    raise FontMissing(f"no font with Chinese coverage found: install the Debian package {PACKAGES}")


@functools.lru_cache(maxsize=16)
def cjk_font(size: int) -> ImageFont.FreeTypeFont:
    """The CJK font at ``size`` pixels."""
    path, index = cjk_font_file()
    return ImageFont.truetype(path, size=size, index=index)
