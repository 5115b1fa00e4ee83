"""animation_mode None: still images (deforum_steps.stills). One job per image, images/%05d.png, whose params
are its own prompts, seed and the settings that change it, so an edited prompt reruns only its images; with
save_sample_per_step the job also writes its decoded intermediate steps, images/steps/%05d_%03d.png (declared
outputs and targets: a deleted one reruns its image). With make_grid, one grid per prompt, images/grid_%05d.png;
images/images.csv records every image's prompt, seed and init image."""
import sys

from deforum_steps import stills
from deforum_steps.config import ConfigError


if config["animation_mode"] == "None":

    try:
        STILLS = stills.plan(config)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    IMAGES = f"{OUT}/images"
    STEP_FILES = stills.steps_run(config) if config["save_sample_per_step"] else 0
    GRIDS = stills.prompt_images(STILLS) if config["make_grid"] else {}

    def image_path(k):
        return f"{IMAGES}/{int(k):05d}.png"

    def grid_path(p):
        return f"{IMAGES}/grid_{int(p):05d}.png"

    def still_inputs(wildcards):
        init = STILLS[int(wildcards.k)]["init_image"]
        return {"init": [init] if init else [], "mask": [config["mask_file"]] if init and config["use_mask"] else []}

    rule still:
        input:
            unpack(still_inputs),
        output:
            image=IMAGES + "/{k}.png",
            steps=[f"{IMAGES}/steps/{{k}}_{s:03d}.png" for s in range(STEP_FILES)],
        wildcard_constraints:
            k=r"\d{5}",
        params:
            still=lambda wc: stills.job_params(STILLS[int(wc.k)], config),
        run:
            from deforum_steps import io, masks

            p = params.still
            size = (p["settings"]["W"], p["settings"]["H"])
            init = io.read_image(input.init[0], size=size) if input.init else None
            mask = masks.load_mask(input.mask[0], size, **masks.mask_args(p["settings"])) if input.mask else None
            on_step = (lambda i, image: io.write_image(output.steps[i], image)) if output.steps else None
            io.write_image(output.image, stills.render(p, config, init, mask, on_step))

    rule grid:
        input:
            lambda wc: [image_path(k) for k in GRIDS[int(wc.p)]],
        output:
            IMAGES + "/grid_{p}.png",
        wildcard_constraints:
            p=r"\d{5}",
        params:
            rows=config["grid_rows"],
        run:
            from deforum_steps import io

            io.write_image(output[0], stills.make_grid([io.read_image(path) for path in input], params.rows))

    rule still_table:
        output:
            f"{IMAGES}/images.csv",
        params:
            images=STILLS,
        run:
            stills.write_table(params.images, output[0])

    # The step images are targets too: Snakemake reruns a job for a missing output only when that one is wanted.
    MODE_TARGETS["None"].extend([*map(image_path, range(len(STILLS))), *map(grid_path, GRIDS), f"{IMAGES}/images.csv",
                                 *(f"{IMAGES}/steps/{k:05d}_{s:03d}.png" for k in range(len(STILLS))
                                   for s in range(STEP_FILES))])
