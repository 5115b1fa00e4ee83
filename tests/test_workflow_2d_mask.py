"""use_init + use_mask in 2D: the mask's white half keeps the init (then the warped init), the black half is
diffused, and an edited mask file reruns the masked frames."""
import numpy as np
from helpers import planned_jobs, run_snakemake, write_config

from deforum_steps import io


def _inputs(tmp_path):
    init = np.zeros((64, 64, 3), np.uint8)
    init[..., 0] = 200
    init[16:48, 16:48] = (30, 200, 30)
    mask = np.zeros((64, 64, 3), np.uint8)
    mask[:, :32] = 255
    io.write_image(tmp_path / "init.png", init)
    io.write_image(tmp_path / "mask.png", mask)
    return init


def test_masked_2d_render_keeps_the_white_half(tmp_path):
    init = _inputs(tmp_path)
    write_config(tmp_path, W=64, H=64, max_frames=3, steps=4, use_init=True, init_image=str(tmp_path / "init.png"),
                 use_mask=True, mask_file=str(tmp_path / "mask.png"), skip_video=True)
    run_snakemake(tmp_path, check=True)
    first = io.read_image(tmp_path / "output" / "test" / "frames" / "00000.png").astype(int)
    assert np.abs(first[:, :32] - init[:, :32]).max() <= 1  # kept: overlay pastes the init back exactly
    assert np.abs(first[:, 32:] - init[:, 32:]).mean() > 20  # diffused

    mask = io.read_image(tmp_path / "mask.png")
    mask[:8] = 0
    io.write_image(tmp_path / "mask.png", mask)  # an edited mask reruns every masked diffusion
    plan = planned_jobs(run_snakemake(tmp_path, "-n"))
    assert plan.get("first_frame") == 1 and plan.get("frame") == 2
