"""`snakemake --report`: the render's pages (deforum_steps/report.py, rules/report.smk) and the report itself,
opened in headless Chromium: every image and the video must load. The screenshot of the report showing the
contact sheet is kept in test-artifacts/ (DEFORUM_TEST_ARTIFACTS to put it elsewhere)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, last_line, run_snakemake
from render_fixture import OUT, N, small_render

from deforum_steps import io, report

ARTIFACTS = Path(os.environ.get("DEFORUM_TEST_ARTIFACTS", REPO / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_sample_spreads_evenly_with_both_ends():
    assert report.sample(5, 24) == [0, 1, 2, 3, 4]
    picked = report.sample(2000, 24)
    assert len(picked) == 24 and picked[0] == 0 and picked[-1] == 1999
    assert max(np.diff(picked)) - min(np.diff(picked)) <= 1


def test_contact_sheet_tiles_labelled_frames(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    paths = []
    for k, colour in enumerate(colours):
        paths.append(tmp_path / f"{k}.png")
        io.write_image(paths[-1], np.full((32, 64, 3), colour, np.uint8))  # 2:1, scaled to 160 x 80
    report.write_sheet(paths, [0, 10, 20], tmp_path / "sheet.png")
    sheet = io.read_image(tmp_path / "sheet.png")
    assert sheet.shape == (80 + 18, 3 * 160, 3)
    for k, colour in enumerate(colours):
        assert tuple(sheet[40, k * 160 + 80]) == colour
        label = sheet[80:, k * 160:(k + 1) * 160]
        assert (label < 128).any() and (label == 255).mean() > 0.8  # dark text on white


def test_depth_maps_are_shown_near_dark(tmp_path):
    depth = np.tile(np.linspace(1.0, 5.0, 64, dtype=np.float32), (32, 1))  # near on the left
    np.save(tmp_path / "00003.npy", depth)
    report.write_sheet([tmp_path / "00003.npy"], [3], tmp_path / "depth.png")
    row = io.read_image(tmp_path / "depth.png")[40, :, 0].astype(int)
    assert row[2] < 20 and row[-3] > 235 and (np.diff(row) >= -1).all()


def test_video_page_plays_the_mp4_and_falls_back_to_the_gif(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"mp4 bytes")
    (tmp_path / "p.gif").write_bytes(b"GIF89a")
    page = report.video_html(tmp_path / "v.mp4", tmp_path / "p.gif", "the render")
    assert '<video id="video" controls autoplay loop muted' in page
    assert 'src="data:video/mp4;base64,bXA0IGJ5dGVz"' in page and 'src="data:image/gif;base64,R0lGODlh"' in page
    assert 'addEventListener("error"' in page


def test_a_report_without_its_pages_says_how_to_make_them(tmp_path):
    assert report.requested(["snakemake", "--report", "r.html"]) and report.requested(["--report=r.zip"])
    assert not report.requested(["snakemake", "--report-after-run"])
    assert report.missing_pages([tmp_path / "none.png"], ["--report", "r.html", "--report-after-run"]) is None
    assert "--report-after-run" in report.missing_pages([tmp_path / "none.png"], ["--report", "r.html"])


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    workdir, _ = small_render(tmp_path_factory)
    proc = run_snakemake(workdir, "--report", "report.html")  # the pages are not made yet: one line, no report
    assert proc.returncode == 1 and last_line(proc).startswith("error: the report pages are not made yet")
    run_snakemake(workdir, "--report-after-run", "--report", "report.html", check=True)
    return workdir / "report.html"


def test_the_report_holds_the_render(report_html):
    text = report_html.read_text()
    results = json.loads(re.search(r"var results = (\{.*?\});\n", text).group(1))
    names = {Path(path).name: entry for path, entry in results.items()}
    assert {"contact_sheet.png", "video.html", "schedules.png", "schedules.csv", "schedules.html",
            "settings.html", "settings.yaml"} <= set(names)
    assert "up to 24 frames of the render" in names["contact_sheet.png"]["caption"]  # report/contact_sheet.rst
    assert "12 fps" in names["video.html"]["caption"]  # captions are templates of the config
    categories = json.loads(re.search(r"var categories = (\{.*?\});\n", text).group(1))
    assert {"Frames", "Video", "Schedules", "Settings"} <= set(categories)
    out = report_html.parent / OUT / "report"
    assert io.read_image(out / "contact_sheet.png").shape == (160 + 18, N * 160, 3)  # 64 px frames at 160 px


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (.ci/run installs Debian's chromium)")
def test_the_report_opens_in_a_browser_with_images_and_video(report_html, tmp_path):
    """The report's own page, with tests/report_browser.js appended: it loads every image and the video of the
    video page, writes the outcome into the title and shows the contact sheet for the screenshot."""
    page = tmp_path / "report.html"
    page.write_text(report_html.read_text() + "<script>" + (REPO / "tests" / "report_browser.js").read_text()
                    + "</script>")
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--autoplay-policy=no-user-gesture-required", "--virtual-time-budget=20000"]
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    title = re.search(r"<title>CHECKED (.*?)</title>", dom)
    assert title, dom[-2000:]
    loaded = json.loads(title.group(1).replace("&quot;", '"'))
    images = {Path(path).name: size for path, size in loaded["images"].items()}
    assert images == {"contact_sheet.png": [N * 160, 160 + 18], "schedules.png": images["schedules.png"]}
    assert images["schedules.png"] != "error"
    (video,) = loaded["videos"].values()
    assert video[:2] == [64, 64] and video[2] == pytest.approx(N / 12, abs=0.1)  # 6 frames at 12 fps

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report-screenshot.png"
    subprocess.run([*browser, "--window-size=1280,800", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120, check=True)
    screen = io.read_image(shot)
    assert screen.shape == (800, 1280, 3)
    # the contact sheet is on screen: the frames' colours, not only the report's white and grey
    assert len(np.unique(screen[:, 300:].reshape(-1, 3), axis=0)) > 1000
