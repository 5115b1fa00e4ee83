"""Interpolation (job functions: deforum_steps/interpolation.py): every frame its own txt2img job from the
slerp of its two key prompts' conditionings. The Snakefile set max_frames to the planned count and
seed_behavior to fixed."""

from deforum_steps import interpolation

INTERPOLATION_PLAN = interpolation.plan(config)
KEY_PROMPTS = interpolation.key_prompts(config)
RENDERED_PROMPTS = [(f"key frame {k}", p, n) for k, p, n in KEY_PROMPTS]


rule interpolation_frame:
    output:
        image=f"{FRAMES}/{{i}}.png",
    wildcard_constraints:
        i=r"\d{5}",
    threads: 1  # frames are independent: --cores N renders N at once
    resources:
        **FRAME_RESOURCES,
    params:
        frame=known_signature(
            lambda wc: interpolation.job_params(INTERPOLATION_PLAN[int(wc.i)], KEY_PROMPTS, frame_params(wc.i), config)
        ),
    run:
        interpolation.render_frame(**output, **params.frame, threads=threads)


FINAL_FRAMES = [frame_path(i) for i in range(len(INTERPOLATION_PLAN))]
