"""Video Input (job functions: deforum_steps/video_input.py): the video's frames (every extract_nth_frame-th,
extract_from_frame..extract_to_frame, resized to W x H) → inputframes/, the mask video's likewise →
maskframes/; then each frame an independent img2img of its input frame (its own strength_schedule value,
prompt, seed), masked by its mask frame (use_video_mask) or by mask_file (use_mask). The Snakefile probed the
videos (VIDEO_PLAN) and set max_frames to the extracted count.

Extraction depends on the videos' content and the extraction settings (VIDEO_PLAN's "depends"); the videos
are inputs marked ancient, so touching one re-extracts nothing, and with overwrite_extracted_frames a video
file written again (re-exported, copied over) is extracted again even with identical content. Either way a
re-extraction redoes every frame."""

from deforum_steps import video_input

VIDEO_FRAMES = range(config["max_frames"])
if VIDEO_PLAN["mask"]:
    VIDEO_MASK = f"{OUT}/maskframes/{{i}}.png"
else:
    VIDEO_MASK = config["mask_file"] if config["use_mask"] else None
VIDEO_FRAME_SETTINGS = {
    **diffusion_settings(config, DIFFUSION_SETTINGS),
    **(pick(config, MASK_SETTINGS) if VIDEO_MASK else {}),
}


rule extract_video_frames:
    input:
        video=ancient(VIDEO_PLAN["video"]["path"]),
    output:
        frames=[f"{OUT}/inputframes/{i:05d}.png" for i in VIDEO_FRAMES],
    log:
        f"{OUT}/logs/extract_video_frames.log",
    params:
        extraction=VIDEO_PLAN["video"]["extraction"],
        depends=VIDEO_PLAN["video"]["depends"],
    run:
        video_input.extract(**input, **output, log=log[0], **params.extraction)


if VIDEO_PLAN["mask"]:

    rule extract_mask_frames:
        input:
            video=ancient(VIDEO_PLAN["mask"]["path"]),
        output:
            frames=[f"{OUT}/maskframes/{i:05d}.png" for i in VIDEO_FRAMES],
        log:
            f"{OUT}/logs/extract_mask_frames.log",
        params:
            extraction=VIDEO_PLAN["mask"]["extraction"],
            depends=VIDEO_PLAN["mask"]["depends"],
        run:
            video_input.extract(**input, **output, log=log[0], **params.extraction)


rule video_input_frame:
    input:
        init=f"{OUT}/inputframes/{{i}}.png",
        mask=[VIDEO_MASK] if VIDEO_MASK else [],
    output:
        image=f"{FRAMES}/{{i}}.png",
    wildcard_constraints:
        i=r"\d{5}",
    threads: 1  # frames are independent: --cores N renders N at once
    resources:
        **FRAME_RESOURCES,
    params:
        frame=known_signature(
            lambda wc: {"row": pick(frame_params(wc.i), DIFFUSION_COLUMNS), "settings": VIDEO_FRAME_SETTINGS}
        ),
    run:
        video_input.render_frame(**input, **output, **params.frame, threads=threads)


FINAL_FRAMES = [frame_path(i) for i in VIDEO_FRAMES]
