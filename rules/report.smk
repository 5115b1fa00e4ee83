"""The render's pages for `snakemake --report` (job function: deforum_steps/report.py): a contact sheet of
frames, the depth maps (3D), the input and mask frames (Video Input), the video page, the schedules and the
resolved settings as tables, captioned by report/*.rst. The Snakefile includes this file only when the command
line asks for a report (`--report`), so a render plans and runs as before; with `--report-after-run` the run
makes the pages (and anything of the render still missing), then writes the report."""

from deforum_steps import report as report_pages

REPORT = f"{OUT}/report"
# The render's images: its frames, or None mode's still images.
REPORT_IMAGES = FINAL_FRAMES if MODE != "None" else [f"{OUT}/images/{k:05d}.png" for k in range(len(STILLS))]
SHEET_FRAMES = report_pages.sample(len(REPORT_IMAGES), report_pages.SHEET_IMAGES)
GIF_FRAMES = report_pages.sample(len(REPORT_IMAGES), report_pages.GIF_FRAMES)
HAS_VIDEO = MODE != "None" and not config["skip_video"]
REPORT_NUMBERS = {"frames": SHEET_FRAMES}
DEPTH_MAPS = animation.depth_maps_written(N_FRAMES, CADENCE) if USE_DEPTH else []
if DEPTH_MAPS:
    REPORT_NUMBERS["depth"] = [DEPTH_MAPS[k] for k in report_pages.sample(len(DEPTH_MAPS), report_pages.SHEET_IMAGES)]
if MODE == "Video Input":
    REPORT_NUMBERS["inputframes"] = SHEET_FRAMES
    if VIDEO_PLAN["mask"]:
        REPORT_NUMBERS["maskframes"] = SHEET_FRAMES
# The pages: output name -> (file in REPORT, caption in report/, category in the report).
REPORT_PAGES = {
    "contact_sheet": ("contact_sheet.png", "contact_sheet.rst", "Frames"),
    "schedules_table": ("schedules.html", "schedules_table.rst", "Schedules"),
    "settings_table": ("settings.html", "settings.rst", "Settings"),
}
if HAS_VIDEO:
    REPORT_PAGES["video_page"] = ("video.html", "video.rst", "Video")
if "depth" in REPORT_NUMBERS:
    REPORT_PAGES["depth_sheet"] = ("depth.png", "depth.rst", "Frames")
if "inputframes" in REPORT_NUMBERS:
    REPORT_PAGES["input_sheet"] = ("inputframes.png", "input_frames.rst", "Video Input")
if "maskframes" in REPORT_NUMBERS:
    REPORT_PAGES["mask_sheet"] = ("maskframes.png", "mask_frames.rst", "Video Input")
REPORT_OUTPUTS = {
    name: report(f"{REPORT}/{file}", caption=f"{workflow.basedir}/report/{caption}", category=category)
    for name, (file, caption, category) in REPORT_PAGES.items()
}


rule report_pages:
    input:
        frames=[REPORT_IMAGES[i] for i in SHEET_FRAMES],
        gif_frames=[REPORT_IMAGES[i] for i in GIF_FRAMES] if HAS_VIDEO else [],
        video=[f"{OUT}/video.mp4"] if HAS_VIDEO else [],
        depth=[depth_path(s) for s in REPORT_NUMBERS.get("depth", [])],
        inputframes=[f"{OUT}/inputframes/{i:05d}.png" for i in REPORT_NUMBERS.get("inputframes", [])],
        maskframes=[f"{OUT}/maskframes/{i:05d}.png" for i in REPORT_NUMBERS.get("maskframes", [])],
        schedules=f"{OUT}/schedules.csv",
    output:
        **REPORT_OUTPUTS,
    params:
        pages={"settings": config, "numbers": REPORT_NUMBERS, "frame_count": len(REPORT_IMAGES), "fps": config["fps"]},
    run:
        report_pages.write_pages(**input, **output, **params.pages)


TARGETS.extend(REPORT_OUTPUTS.values())
if missing := report_pages.missing_pages(REPORT_OUTPUTS.values(), sys.argv):
    sys.exit(f"error: {missing}")
