"""Video Input: the video's frames (every extract_nth_frame-th, extract_from_frame..extract_to_frame, resized to
W x H) → inputframes/, the mask video's likewise → maskframes/; then each frame an independent img2img of its
input frame (its own strength_schedule value, prompt, seed), masked by its mask frame (use_video_mask) or by
mask_file (use_mask). The Snakefile probed the videos (VIDEO_PLAN) and set max_frames to the extracted count.

Extraction depends on the videos' content and the extraction settings only (VIDEO_PLAN's params; the videos
are not inputs), so touching or moving a video re-extracts nothing; with overwrite_extracted_frames a video
file written again (re-exported, copied over) is extracted again even with identical content. Either way a
re-extraction redoes every frame."""
from deforum_steps import masks
from deforum_steps.frames import frame_settings
from deforum_steps.video_input import FRAME_SETTINGS as VIDEO_FRAME_SETTINGS, diffusion_row, extract


if config["animation_mode"] == "Video Input":

    VIDEO_FRAMES = range(config["max_frames"])
    VIDEO_MASK = (f"{OUT}/maskframes/{{i}}.png" if VIDEO_PLAN["mask"] else
                  config["mask_file"] if config["use_mask"] else None)
    VIDEO_FRAME_PARAMS = {**frame_settings(config, VIDEO_FRAME_SETTINGS),
                          **(frame_settings(config, masks.MASK_SETTINGS) if VIDEO_MASK else {})}

    rule extract_video_frames:
        output:
            [f"{OUT}/inputframes/{i:05d}.png" for i in VIDEO_FRAMES],
        params:
            extraction=VIDEO_PLAN["video"]["params"],
        run:
            extract(VIDEO_PLAN["video"], f"{OUT}/inputframes", config)

    if VIDEO_PLAN["mask"]:

        rule extract_mask_frames:
            output:
                [f"{OUT}/maskframes/{i:05d}.png" for i in VIDEO_FRAMES],
            params:
                extraction=VIDEO_PLAN["mask"]["params"],
            run:
                extract(VIDEO_PLAN["mask"], f"{OUT}/maskframes", config)

    rule video_input_frame:
        input:
            init=f"{OUT}/inputframes/{{i}}.png",
            mask=[VIDEO_MASK] if VIDEO_MASK else [],
        output:
            image=f"{OUT}/frames/{{i}}.png",
        wildcard_constraints:
            i=r"\d{5}",
        threads: 1  # frames are independent: --cores N renders N at once
        params:
            frame=lambda wc: {"row": diffusion_row(frame_params(wc.i)), "settings": VIDEO_FRAME_PARAMS},
        run:
            from deforum_steps import io

            settings = params.frame["settings"]
            init = io.read_image(input.init, size=(settings["W"], settings["H"]))
            mask_file = input.mask[0] if input.mask else None
            io.write_image(output.image, masks.masked_img2img(init, mask_file, params.frame["row"], settings, config))


    FINAL_FRAMES["Video Input"] = [f"{OUT}/frames/{i:05d}.png" for i in VIDEO_FRAMES]
    MODE_TARGETS["Video Input"].extend(video_targets(final_frames()))
