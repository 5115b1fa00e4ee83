"""animation_mode None (still images) through the workflow, run as a user runs it: a 64x64 render of 2 prompts x
n_batch 2 with the builtin tiny model checked against the package functions, then edited in dry runs to count
what would rerun; a deleted image made again bit-identical; seed_behavior fixed with a folder of init images;
the sampler names the config accepts and refuses."""
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import SCHEMA, SMALL_CONFIG, last_line, output, planned_jobs, run_snakemake, write_config

from deforum_steps import io, stills
from deforum_steps.config import load_config

OUT = "output/test"
STILLS = {"animation_mode": "None", "steps": 3, "sampler": "Euler a", "n_batch": 2, "make_grid": True,
          "save_sample_per_step": True, "prompts": ["a red apple", "a yellow banana --neg blurry"]}
IMAGES = [f"{k:05d}.png" for k in range(4)]


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("none")
    write_config(workdir, **STILLS)
    run_snakemake(workdir, check=True)
    return workdir


def read(workdir, name):
    return io.read_image(workdir / OUT / "images" / name)


def render_alone(folder, image, cfg):
    """`image` (an entry of stills.plan) rendered by the job function alone, outside the workflow."""
    path = folder / "alone.png"
    stills.render_image(init=[], mask=[], image=str(path), steps=[], **stills.job_params(image, cfg), threads=1)
    return io.read_image(path)


def test_render_writes_every_image_from_its_prompt_and_seed(render, tmp_path):
    """4 images, each the render of its own prompts and seed (iter: 42..45, so the two images of a prompt
    differ); one grid per prompt; the per-step images, the last of them the image; the images.csv record."""
    images = render / OUT / "images"
    assert sorted(p.name for p in images.glob("*.png")) == [*IMAGES, "grid_00000.png", "grid_00001.png"]
    cfg = load_config({**SMALL_CONFIG, **STILLS}, SCHEMA)
    plan = stills.plan(cfg)
    for name, image in zip(IMAGES, plan):
        np.testing.assert_array_equal(read(render, name), render_alone(tmp_path, image, cfg))
    assert not np.array_equal(read(render, IMAGES[0]), read(render, IMAGES[1]))
    for p, pair in enumerate((IMAGES[:2], IMAGES[2:])):
        grid = read(render, f"grid_{p:05d}.png")
        np.testing.assert_array_equal(grid, stills.make_grid([read(render, name) for name in pair], rows=2))
        assert grid.shape == (2 * (64 + 2) + 2, 64 + 2 + 2, 3)

    assert sorted(p.name for p in (images / "steps").iterdir()) == [
        f"{k:05d}_{s:03d}.png" for k in range(4) for s in range(3)]
    for k, name in enumerate(IMAGES):
        np.testing.assert_array_equal(read(render, f"steps/{k:05d}_002.png"), read(render, name))

    table = pd.read_csv(images / "images.csv", keep_default_na=False)
    assert list(table["seed"]) == [42, 43, 44, 45]
    assert list(table["prompt"]) == ["a red apple"] * 2 + ["a yellow banana"] * 2
    assert list(table["negative_prompt"]) == ["", "", "blurry", "blurry"]


def test_settings_yaml_reproduces_the_render(render):
    """settings.yaml holds the resolved config (the webui sampler name stored as Deforum's) and, passed back
    with --configfile, finds everything up to date."""
    settings = yaml.safe_load((render / OUT / "settings.yaml").read_text())
    assert (settings["animation_mode"], settings["sampler"], settings["seed"]) == ("None", "euler_ancestral", 42)
    assert settings["prompts"] == STILLS["prompts"]
    shutil.copy(render / OUT / "settings.yaml", render / "settings.yaml")
    assert planned_jobs(run_snakemake(render, "-n", configfile="settings.yaml", check=True)) == {}


def test_edited_prompt_reruns_only_its_images(render):
    write_config(render, "edited.yaml", **{**STILLS, "prompts": ["a red apple", "a green pear"]})
    assert planned_jobs(run_snakemake(render, "-n", configfile="edited.yaml", check=True)) == {
        "still": 2, "grid": 1, "still_table": 1, "schedules": 1, "all": 1}


def test_larger_n_batch_keeps_the_first_prompts_images(render):
    """n_batch 2 -> 3 (seeds 42.. in image order): 00000-00001 keep their prompt and seed; 00002 becomes the first
    prompt's third image; the second prompt's move to 00003-00005 with seeds 45-47, so 00003 (banana, 45) is
    the old 00003 and is kept too: 3 images to make."""
    write_config(render, "more.yaml", **{**STILLS, "n_batch": 3})
    assert planned_jobs(run_snakemake(render, "-n", configfile="more.yaml", check=True)) == {
        "still": 3, "grid": 2, "still_table": 1, "schedules": 1, "all": 1}


def test_deleted_image_and_step_are_made_again_identical(render, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(render, workdir)
    before = read(workdir, IMAGES[1])
    (workdir / OUT / "images" / IMAGES[1]).unlink()
    assert planned_jobs(run_snakemake(workdir, "-n", check=True)) == {"still": 1, "grid": 1, "all": 1}
    run_snakemake(workdir, check=True)
    np.testing.assert_array_equal(read(workdir, IMAGES[1]), before)
    (workdir / OUT / "images" / "steps" / "00003_001.png").unlink()  # a missing step image reruns its image
    assert planned_jobs(run_snakemake(workdir, "-n", check=True)) == {"still": 1, "grid": 1, "all": 1}


def test_fixed_seeds_and_a_folder_of_init_images(tmp_path):
    """Two equal prompts x a folder of 2 init images, seed_behavior fixed: images 00000-00003 are (prompt,
    init) = (0, a), (0, b), (1, a), (1, b); equal prompt, init and seed give equal images. Rewriting init b
    reruns the two images made from it."""
    inits = tmp_path / "inits"
    inits.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        io.write_image(inits / name, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    write_config(tmp_path, **{**STILLS, "prompts": ["a red apple", "a red apple"], "n_batch": 1,
                              "seed_behavior": "fixed", "make_grid": False, "save_sample_per_step": False,
                              "steps": 4, "use_init": True, "init_image": str(inits), "strength": 0.5})
    run_snakemake(tmp_path, check=True)
    out = tmp_path / OUT / "images"
    assert sorted(p.name for p in out.iterdir()) == [*IMAGES, "images.csv"]
    np.testing.assert_array_equal(read(tmp_path, IMAGES[0]), read(tmp_path, IMAGES[2]))
    np.testing.assert_array_equal(read(tmp_path, IMAGES[1]), read(tmp_path, IMAGES[3]))
    assert not np.array_equal(read(tmp_path, IMAGES[0]), read(tmp_path, IMAGES[1]))
    assert list(pd.read_csv(out / "images.csv")["init_image"]) == [str(inits / n) for n in ("a.png", "b.png")] * 2

    io.write_image(inits / "b.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert planned_jobs(run_snakemake(tmp_path, "-n", check=True)) == {"still": 2, "all": 1}


def test_bad_settings_stop_the_workflow_with_one_line(tmp_path):
    """A webui sampler name is accepted (the render above uses 'Euler a'); an unknown one, as `sampler` or in a
    sampler_schedule, and seed_behavior schedule in None mode stop the workflow with one line naming the key,
    before anything is written."""
    write_config(tmp_path, **{**STILLS, "sampler": "Eular a"})
    proc = run_snakemake(tmp_path, "-n")
    assert proc.returncode != 0
    assert last_line(proc).startswith("config error: sampler: 'Eular a' is not one of 'klms', ")
    assert "Traceback" not in output(proc)
    write_config(tmp_path, "scheduled.yaml", enable_schedule_samplers=True,
                 sampler_schedule="0:('Euler a'), 3:('DPM++ 9M')")
    proc = run_snakemake(tmp_path, "-n", configfile="scheduled.yaml")
    assert proc.returncode != 0
    assert last_line(proc) == ("config error: sampler_schedule: unknown sampler 'DPM++ 9M' at frame 3 in "
                               "\"0:('Euler a'), 3:('DPM++ 9M')\"")
    write_config(tmp_path, "schedule.yaml", **{**STILLS, "seed_behavior": "schedule"})
    proc = run_snakemake(tmp_path, "-n", configfile="schedule.yaml")
    assert proc.returncode != 0
    assert last_line(proc).startswith("config error: seed_behavior: 'schedule' needs animation frames; ")
    assert not (tmp_path / "output").exists()
