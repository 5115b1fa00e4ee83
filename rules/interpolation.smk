"""Interpolation: every frame its own txt2img job from the slerp of its two key prompts' conditionings
(deforum_steps.interpolation). The Snakefile set max_frames to the planned count and seed_behavior to fixed."""
from deforum_steps import interpolation


if config["animation_mode"] == "Interpolation":

    INTERPOLATION_PLAN = interpolation.plan(config)
    KEY_PROMPTS = interpolation.key_prompts(config)

    rule interpolation_frame:
        output:
            image=f"{OUT}/frames/{{i}}.png",
        wildcard_constraints:
            i=r"\d{5}",
        threads: 1
        params:
            frame=lambda wc: interpolation.job_params(INTERPOLATION_PLAN[int(wc.i)], KEY_PROMPTS,
                                                      frame_params(wc.i), config),
        run:
            from deforum_steps import io

            io.write_image(output.image, interpolation.render_frame(params.frame, config))


    FINAL_FRAMES["Interpolation"] = [f"{OUT}/frames/{i:05d}.png" for i in range(len(INTERPOLATION_PLAN))]
    MODE_TARGETS["Interpolation"].extend(video_targets(final_frames()))
