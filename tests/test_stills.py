"""None mode's pure steps (deforum_steps.stills): the image list in the notebook's order with its seeds and
negative prompts, init folders, what an image job depends on, the grid layout, the images.csv record, a render
with its per-step images and a mask; and the sampler names the config accepts (webui aliases included)."""
import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import SCHEMA

from deforum_steps import diffusion, io, models, samplers, stills
from deforum_steps.config import ConfigError, load_config
from deforum_steps.keyframes import seed_sequence
from deforum_steps.schedules import build_table

W = H = 64
TWO_PROMPTS = {"animation_mode": "None", "W": W, "H": H, "seed": 42, "n_batch": 2,
               "prompts": ["a red apple", "a yellow banana --neg blurry"]}


def cfg_of(**overrides):
    return load_config({**TWO_PROMPTS, **overrides}, SCHEMA)


def write_images(folder, names, seed=0):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        io.write_image(folder / name, rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    return folder


# ---- the image list --------------------------------------------------------------------------------------


def test_plan_is_prompt_then_batch_with_one_seed_per_image():
    images = stills.plan(cfg_of())
    assert [(i["prompt_index"], i["batch_index"]) for i in images] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [i["seed"] for i in images] == [42, 43, 44, 45]  # iter: +1 after every image, across prompts
    assert [i["prompt"] for i in images] == ["a red apple"] * 2 + ["a yellow banana"] * 2
    assert [i["negative_prompt"] for i in images] == ["", "", "blurry", "blurry"]
    assert all(i["init_image"] is None for i in images)


@pytest.mark.parametrize("behavior", ["iter", "fixed", "random", "ladder", "alternate"])
def test_seeds_follow_seed_behavior(behavior):
    images = stills.plan(cfg_of(seed_behavior=behavior, seed_iter_N=2))
    assert [i["seed"] for i in images] == seed_sequence(42, behavior, 4, 2)
    if behavior == "fixed":
        assert {i["seed"] for i in images} == {42}


def test_neg_prompts_join_each_prompts_own_negative():
    images = stills.plan(cfg_of(n_batch=1, neg_prompts="text"))
    assert [i["negative_prompt"] for i in images] == ["text", "blurry, text"]
    images = stills.plan(cfg_of(n_batch=1, prompts=["a", "b", "c"], neg_prompts={0: "light", 2: "dark"}))
    assert [i["negative_prompt"] for i in images] == ["light", "light", "dark"]  # held as for frames


def test_bad_prompts_and_seed_schedule_are_one_line_errors_naming_the_key():
    with pytest.raises(ConfigError, match=r"^prompts: more than one '--neg' in the prompt of frame 1"):
        stills.plan(cfg_of(prompts=["a", "b --neg c --neg d"]))
    with pytest.raises(ConfigError, match=r"^seed_behavior: 'schedule' needs animation frames"):
        stills.plan(cfg_of(seed_behavior="schedule"))


def test_init_folder_gives_one_image_per_init_file_in_name_order(tmp_path):
    folder = write_images(tmp_path / "inits", ["b.png", "a.jpg"])
    (folder / "notes.txt").write_text("not an image")
    images = stills.plan(cfg_of(use_init=True, init_image=str(folder)))
    assert [(i["prompt_index"], i["batch_index"], i["init_image"]) for i in images] == [
        (p, b, str(folder / name)) for p in (0, 1) for b in (0, 1) for name in ("a.jpg", "b.png")]
    assert [i["seed"] for i in images] == list(range(42, 50))
    single = stills.plan(cfg_of(use_init=True, init_image=str(folder / "a.jpg")))
    assert [i["init_image"] for i in single] == [str(folder / "a.jpg")] * 4


# ---- what a job depends on -------------------------------------------------------------------------------


def test_job_params_hold_only_what_changes_the_image():
    cfg = cfg_of()
    params = [stills.job_params(i, cfg) for i in stills.plan(cfg)]
    edited = cfg_of(prompts=["a red apple", "a green pear"], n_batch=3, make_grid=True, fps=30, max_frames=5)
    after = [stills.job_params(i, edited) for i in stills.plan(edited)]
    assert after[:2] == params[:2]  # the first prompt's images: same params, not rerun
    assert after[3]["prompt"] == "a green pear" and after[3]["seed"] == 45
    assert "strength" not in params[0]["settings"]  # without an init, strength changes nothing
    assert stills.job_params(stills.plan(cfg)[0], cfg_of(sampler="Euler a")) == params[0]  # alias = same sampler


def test_job_params_with_init_and_mask(tmp_path):
    folder = write_images(tmp_path / "inits", ["a.png"])
    cfg = cfg_of(use_init=True, init_image=str(folder / "a.png"), strength=0.5, use_mask=True,
                 mask_file=str(folder / "a.png"), invert_mask=True)
    settings = stills.job_params(stills.plan(cfg)[0], cfg)["settings"]
    assert settings["strength"] == 0.5 and settings["invert_mask"] is True and settings["overlay_mask"] is True


def test_steps_run_per_image():
    assert stills.steps_run(cfg_of(steps=10, strength=0.65)) == 10  # from noise: every step
    with_init = {"use_init": True}
    assert stills.steps_run({**cfg_of(steps=10, strength=0.65), **with_init}) == 3  # int((1 - 0.65) * 10)
    assert stills.steps_run({**cfg_of(steps=10, strength=1.0), **with_init}) == 0


def test_prompt_images_groups_image_numbers_by_prompt(tmp_path):
    folder = write_images(tmp_path / "inits", ["a.png", "b.png"])
    images = stills.plan(cfg_of(use_init=True, init_image=str(folder), n_batch=1))
    assert stills.prompt_images(images) == {0: [0, 1], 1: [2, 3]}


# ---- grid and record --------------------------------------------------------------------------------------


def tiles(n, h=4, w=6):
    return [np.full((h, w, 3), 10 * (k + 1), np.uint8) for k in range(n)]


def test_grid_is_torchvision_layout_with_2px_black_padding():
    images = tiles(4)
    grid = stills.make_grid(images, rows=2)
    assert grid.shape == (2 * (4 + 2) + 2, 2 * (6 + 2) + 2, 3)
    for k, image in enumerate(images):
        top, left = 2 + (k // 2) * 6, 2 + (k % 2) * 8
        np.testing.assert_array_equal(grid[top:top + 4, left:left + 6], image)
    padding = np.ones(grid.shape[:2], bool)
    padding[2:6, 2:8] = padding[2:6, 10:16] = padding[8:12, 2:8] = padding[8:12, 10:16] = False
    assert (grid[padding] == 0).all()


def test_grid_has_at_most_grid_rows_rows():
    assert stills.make_grid(tiles(5), rows=2).shape[:2] == (2 * 6 + 2, 3 * 8 + 2)  # 3 to a row, last slot black
    assert (stills.make_grid(tiles(5), rows=2)[8:12, 18:24] == 0).all()
    assert stills.make_grid(tiles(2), rows=3).shape[:2] == (2 * 6 + 2, 8 + 2)  # fewer images than rows: a column
    assert stills.make_grid(tiles(3), rows=1).shape[:2] == (6 + 2, 3 * 8 + 2)
    single = tiles(1)[0]
    assert stills.make_grid([single], rows=2) is single  # one image: as it is, no padding


def test_write_table(tmp_path):
    images = stills.plan(cfg_of())
    stills.write_table(images, tmp_path / "images.csv")
    table = pd.read_csv(tmp_path / "images.csv", keep_default_na=False)
    assert list(table["image"]) == ["00000.png", "00001.png", "00002.png", "00003.png"]
    assert list(table["seed"]) == [42, 43, 44, 45]
    assert list(table["negative_prompt"]) == ["", "", "blurry", "blurry"]
    assert list(table.columns) == ["image", "prompt_index", "batch_index", "init_image", "seed", "prompt",
                                   "negative_prompt"]


# ---- rendering ------------------------------------------------------------------------------------------


def render(tmp_path, params, *, name="image", init=(), mask=(), n_steps=0):
    """stills.render_image as rule still calls it: the image and its per-step images written under tmp_path."""
    image = tmp_path / f"{name}.png"
    steps = [tmp_path / "steps" / f"{name}_{s:03d}.png" for s in range(n_steps)]
    stills.render_image(init=[str(p) for p in init], mask=[str(p) for p in mask], image=str(image),
                        steps=[str(p) for p in steps], **params, threads=1)
    return io.read_image(image), [io.read_image(p) for p in steps]


def test_render_writes_one_image_per_step_run_and_ends_on_the_image(tmp_path):
    cfg = cfg_of(steps=3, sampler="DPM++ 2M Karras", model="builtin:tiny", map_location="cpu",
                 save_sample_per_step=True)
    params = stills.job_params(stills.plan(cfg)[0], cfg)
    image, steps = render(tmp_path, params, n_steps=stills.steps_run(cfg))
    assert len(steps) == 3 == stills.steps_run(cfg)
    np.testing.assert_array_equal(steps[-1], image)  # the last step decoded is the image
    assert not np.array_equal(steps[0], image)
    again, _ = render(tmp_path, params, name="again")
    np.testing.assert_array_equal(again, image)  # deterministic, step images or not
    assert not (tmp_path / "steps" / "again_000.png").exists()
    assert image.shape == (H, W, 3) and image.dtype == np.uint8 and image.std() > 0


def test_render_with_init_and_mask_keeps_the_white_area_exactly(tmp_path):
    init_path = write_images(tmp_path, ["init.png"]) / "init.png"
    init = io.read_image(init_path)
    mask = np.zeros((H, W, 3), np.uint8)
    mask[:, : W // 2] = 255  # white keeps the init
    io.write_image(tmp_path / "mask.png", mask)
    cfg = cfg_of(steps=6, strength=0.3, use_init=True, init_image=str(init_path), use_mask=True,
                 mask_file=str(tmp_path / "mask.png"), map_location="cpu")
    params = stills.job_params(stills.plan(cfg)[0], cfg)
    image, steps = render(tmp_path, params, init=[init_path], mask=[tmp_path / "mask.png"],
                          n_steps=stills.steps_run(cfg))
    assert len(steps) == stills.steps_run(cfg) == 4  # int(0.7 * 6)
    np.testing.assert_array_equal(image[:, : W // 2], init[:, : W // 2])
    assert not np.array_equal(image[:, W // 2:], init[:, W // 2:])
    # invert_mask: the other half is kept
    inverted = stills.job_params(stills.plan(cfg)[0], {**cfg, "invert_mask": True})
    image, _ = render(tmp_path, inverted, name="inverted", init=[init_path], mask=[tmp_path / "mask.png"])
    np.testing.assert_array_equal(image[:, W // 2:], init[:, W // 2:])
    assert not np.array_equal(image[:, : W // 2], init[:, : W // 2])


def test_write_grid_of_image_files(tmp_path):
    paths = []
    for k, tile in enumerate(tiles(3, h=8, w=8)):
        paths.append(str(tmp_path / f"{k:05d}.png"))
        io.write_image(paths[-1], tile)
    stills.write_grid(images=paths, grid=str(tmp_path / "grid.png"), grid_rows=2)
    np.testing.assert_array_equal(io.read_image(tmp_path / "grid.png"),
                                  stills.make_grid([io.read_image(p) for p in paths], 2))


# ---- sampler names -----------------------------------------------------------------------------------------


def schema_sampler_names():
    spec = yaml.safe_load(SCHEMA.read_text())["properties"]["sampler"]
    return spec["enum"], spec["x-aliases"]


def test_webui_sampler_names_are_accepted_in_any_case():
    assert cfg_of(sampler="Euler a")["sampler"] == "euler_ancestral"
    assert cfg_of(sampler="dpm++ 2m")["sampler"] == "dpmpp_2m"
    assert cfg_of(sampler="LMS")["sampler"] == "klms"
    assert cfg_of(sampler="Heun")["sampler"] == "heun"
    assert cfg_of(sampler="dpm++ 2m karras")["sampler"] == "DPM++ 2M Karras"


def test_unknown_sampler_is_a_one_line_error_naming_sampler():
    with pytest.raises(ConfigError) as error:
        cfg_of(sampler="Eular a")
    assert str(error.value).startswith("sampler: 'Eular a' is not one of 'klms', ") and "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=r"^sampler: 'DDIM Karras' is not one of "):
        cfg_of(sampler="DDIM Karras")  # DDIM has no Karras schedule


def test_schema_sampler_names_are_exactly_those_the_engine_runs():
    """Every name the schema accepts resolves to what it says and builds a scheduler; every Deforum and webui
    name resolve_sampler knows, with " Karras" where the scheduler has Karras sigmas, is accepted."""
    enum, aliases = schema_sampler_names()
    for alias, name in aliases.items():
        assert samplers.resolve_sampler(alias) == samplers.resolve_sampler(name) == (name, False)
    pipe = models.build_tiny()
    for name in enum:
        diffusion.make_scheduler(pipe, name, 4)
    accepted = {n.lower() for n in [*enum, *aliases]}
    for name in [*samplers.SAMPLERS, *samplers.WEBUI_SAMPLERS]:
        assert name in accepted
    for name in samplers.WEBUI_SAMPLERS:
        karras = f"{name} karras"
        if karras in accepted:
            continue
        with pytest.raises(ConfigError, match="^use_karras_sigmas: "):  # left out: no Karras schedule
            diffusion.make_scheduler(pipe, karras, 4)


def test_sampler_schedule_names_are_checked_when_scheduled():
    cfg = cfg_of(animation_mode="2D", max_frames=12, enable_schedule_samplers=True,
                 sampler_schedule="0:('Euler a'), 4:('dpmpp_2m'), 8:('DPM++ 2M Karras')")
    assert list(build_table(cfg)["sampler_schedule"][[0, 4, 8]]) == ["Euler a", "dpmpp_2m", "DPM++ 2M Karras"]
    bad = cfg_of(animation_mode="2D", max_frames=12, enable_schedule_samplers=True,
                 sampler_schedule="0:('euler'), 10:('k_magic')")
    with pytest.raises(ConfigError, match=r"^sampler_schedule: unknown sampler 'k_magic' at frame 10 in "):
        build_table(bad)
    build_table({**bad, "enable_schedule_samplers": False})  # not scheduled: not checked
