"""animation_mode None: still images (job functions: deforum_steps/stills.py). One job per image,
images/%05d.png, whose params are its own prompts, seed and the settings that change it, so an edited prompt
reruns only its images; with save_sample_per_step the job also writes its decoded intermediate steps,
images/steps/%05d_%03d.png (declared outputs and targets: a deleted one reruns its image). With make_grid, one
grid per prompt, images/grid_%05d.png; images/images.csv records every image's prompt, seed and init image."""

from deforum_steps import stills

IMAGES = f"{OUT}/images"
STEP_FILES = stills.steps_run(config) if config["save_sample_per_step"] else 0
GRIDS = stills.prompt_images(STILLS) if config["make_grid"] else {}
RENDERED_PROMPTS = [(f"image {k}", s["prompt"], s["negative_prompt"]) for k, s in enumerate(STILLS)]


rule still:
    input:
        init=known_signature(lambda wc: [STILLS[int(wc.k)]["init_image"]] if STILLS[int(wc.k)]["init_image"] else []),
        mask=known_signature(lambda wc: mask_input() if STILLS[int(wc.k)]["init_image"] else []),
    output:
        image=f"{IMAGES}/{{k}}.png",
        steps=[f"{IMAGES}/steps/{{k}}_{s:03d}.png" for s in range(STEP_FILES)],
    wildcard_constraints:
        k=r"\d{5}",
    threads: 1  # images are independent: --cores N renders N at once
    resources:
        **FRAME_RESOURCES,
    params:
        still=known_signature(lambda wc: stills.job_params(STILLS[int(wc.k)], config)),
    run:
        stills.render_image(**input, **output, **params.still, threads=threads)


rule grid:
    input:
        images=lambda wc: [f"{IMAGES}/{k:05d}.png" for k in GRIDS[int(wc.p)]],
    output:
        grid=f"{IMAGES}/grid_{{p}}.png",
    wildcard_constraints:
        p=r"\d{5}",
    params:
        grid_rows=config["grid_rows"],
    run:
        stills.write_grid(**input, **output, **params)


rule still_table:
    output:
        table=f"{IMAGES}/images.csv",
    params:
        images=STILLS,
    run:
        stills.write_table(params.images, output.table)


# The step images are targets too: Snakemake reruns a job for a missing output only when that one is wanted.
TARGETS.extend(
    [
        *(f"{IMAGES}/{k:05d}.png" for k in range(len(STILLS))),
        *(f"{IMAGES}/grid_{p:05d}.png" for p in GRIDS),
        f"{IMAGES}/images.csv",
        *(f"{IMAGES}/steps/{k:05d}_{s:03d}.png" for k in range(len(STILLS)) for s in range(STEP_FILES)),
    ]
)
