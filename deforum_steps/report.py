"""Stage `report_pages` (rules/report.smk): the pages of the render that `snakemake --report` shows, beside the
schedules plot, the CSV and the settings (rules/schedules.smk): a contact sheet of frames, the depth maps (3D),
the input and mask frames (Video Input), the video playing inline, the settings and schedules as tables.

Snakemake's HTML report shows PNG images inline and HTML pages in a frame; everything else is a download link.
So the video is an HTML page holding the mp4 in a <video> element, with an animated GIF of the render beside it
for browsers that cannot play the mp4's codec (the page switches to it when the video fails).
"""
from __future__ import annotations

import base64
import html
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from . import io

if TYPE_CHECKING:  # jobs import pandas, planning (which imports this module) does not
    import pandas as pd

SHEET_IMAGES = 24  # frames on a contact sheet
SHEET_COLUMNS = 6
SHEET_CELL = 160  # px, the width of one frame on the sheet
GIF_FRAMES = 96  # frames of the animated preview beside the video
_LABEL_HEIGHT = 18


def requested(argv: Sequence[str]) -> bool:
    """Whether a Snakemake command line asks for a report (--report, --report FILE, --report=FILE)."""
    return any(arg == "--report" or arg.startswith("--report=") for arg in argv)


def missing_pages(pages: Iterable[str | os.PathLike], argv: Sequence[str]) -> str | None:
    """What to do when the report would miss pages: `--report` alone only collects files, it makes none."""
    if "--report-after-run" in argv or all(map(os.path.exists, pages)):
        return None
    return ("the report pages are not made yet: `snakemake --report-after-run --report report.html` makes them "
            "(and renders what is missing), then writes the report")


def sample(count: int, at_most: int) -> list[int]:
    """At most `at_most` indices spread evenly over 0..count-1, the first and the last included."""
    if count <= at_most:
        return list(range(count))
    return sorted({round(i * (count - 1) / (at_most - 1)) for i in range(at_most)})


def contact_sheet(images: Sequence[np.ndarray], labels: Sequence[str], columns: int = SHEET_COLUMNS,
                  cell: int = SHEET_CELL) -> np.ndarray:
    """The images (RGB uint8, any sizes) scaled to `cell` px wide in a grid of `columns`, each labelled below."""
    height = max(round(cell * img.shape[0] / img.shape[1]) for img in images)
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    sheet = np.full((rows * (height + _LABEL_HEIGHT), columns * cell, 3), 255, np.uint8)
    for k, (img, label) in enumerate(zip(images, labels)):
        y, x = divmod(k, columns)
        y *= height + _LABEL_HEIGHT
        x *= cell
        tile = cv2.resize(img, (cell, round(cell * img.shape[0] / img.shape[1])), interpolation=cv2.INTER_AREA)
        sheet[y:y + tile.shape[0], x:x + cell] = tile
        cv2.putText(sheet, label, (x + 4, y + height + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return sheet


def write_sheet(paths: Sequence[str | os.PathLike], numbers: Sequence[int], out: str | os.PathLike,
                prefix: str = "frame") -> None:
    """A contact sheet of image files (PNG) or depth maps (.npy, shown near = dark), labelled "prefix N"."""
    io.write_image(out, contact_sheet([_viewable(p) for p in paths], [f"{prefix} {n}" for n in numbers]))


def _viewable(path: str | os.PathLike) -> np.ndarray:
    if Path(path).suffix == ".npy":
        depth = np.load(path).astype(np.float64)
        grey = ((depth - depth.min()) / max(1e-8, float(np.ptp(depth))) * 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return io.read_image(path)


def video_html(video: str | os.PathLike, gif: str | os.PathLike, title: str) -> str:
    """An HTML page playing the mp4 inline (looping, muted), switching to the animated GIF when the browser
    cannot decode it."""
    def data_uri(path, mime):
        return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"

    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body {{ margin: 0; font-family: sans-serif; }} video, img {{ max-width: 100%; image-rendering: pixelated; }}
</style></head><body>
<video id="video" controls autoplay loop muted playsinline width="512" src="{data_uri(video, 'video/mp4')}"></video>
<img id="preview" hidden alt="animated preview of {html.escape(title)}" width="512"
 src="{data_uri(gif, 'image/gif')}">
<script>
const video = document.getElementById("video");
video.addEventListener("error", () => {{ video.hidden = true; document.getElementById("preview").hidden = false; }});
</script>
</body></html>
"""


def table_html(table: pd.DataFrame, title: str) -> str:
    """A table as a small standalone HTML page."""
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body {{ font-family: sans-serif; font-size: 12px; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; }}</style></head><body>
<h3>{html.escape(title)}</h3>
{table.to_html(index=False, border=0)}
</body></html>
"""


def write_pages(*, frames: Sequence[str], gif_frames: Sequence[str], video: Sequence[str], depth: Sequence[str],
                inputframes: Sequence[str], maskframes: Sequence[str], schedules: str, contact_sheet: str,
                schedules_table: str, settings_table: str, video_page: str | None = None,
                depth_sheet: str | None = None, input_sheet: str | None = None, mask_sheet: str | None = None,
                settings: Mapping, numbers: Mapping[str, Sequence[int]], frame_count: int, fps: float) -> None:
    """Rule report_pages:
    1. the contact sheet of the sampled frames (and of the depth maps, input frames, mask frames);
    2. the video page: the mp4 and an animated GIF of `gif_frames`;
    3. the schedules and the resolved settings as HTML tables."""
    write_sheet(frames, numbers["frames"], contact_sheet)
    for paths, key, out in ((depth, "depth", depth_sheet), (inputframes, "inputframes", input_sheet),
                            (maskframes, "maskframes", mask_sheet)):
        if out:
            write_sheet(paths, numbers[key], out)
    if video_page:
        from .video import assemble_gif

        with tempfile.TemporaryDirectory() as tmp:
            gif = Path(tmp) / "preview.gif"
            # the sampled frames play in the time the whole video takes
            assemble_gif(gif_frames, gif, fps=fps * len(gif_frames) / max(1, frame_count))
            io.write_text(video_page, video_html(video[0], gif, "the render"))
    import pandas as pd  # here, not at the top: planning imports this module

    io.write_text(schedules_table, table_html(pd.read_csv(schedules, keep_default_na=False), "schedules per frame"))
    rows = pd.DataFrame({"key": list(settings), "value": [repr(v) for v in settings.values()]})
    io.write_text(settings_table, table_html(rows, "resolved settings (settings.yaml)"))
