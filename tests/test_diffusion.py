import json
import time

import numpy as np
import pytest
import torch

from deforum_steps import diffusion as D
from deforum_steps import models, prompts, samplers
from deforum_steps.config import ConfigError
from deforum_steps.dependencies import MODEL_SETTINGS, pick

SIZE = 64  # latent 8x8: every test here is cheap


@pytest.fixture(scope="module")
def pipe():
    return models.build_tiny()


@pytest.fixture(scope="module")
def init(pipe, conformance):
    return D.encode_image(pipe, np.load(conformance / "inputs" / "test_image_64x64.npy"))


def run(pipe, init=None, **overrides):
    kwargs = dict(
        prompt="a beautiful forest", negative_prompt="", steps=6, strength=0.5, cfg_scale=7.0,
        sampler="euler_ancestral", seed=42, width=SIZE, height=SIZE,
    )
    return D.denoise(pipe, init, **{**kwargs, **overrides})


def count_steps(pipe, init, **overrides):
    seen = []
    run(pipe, init, callback=lambda i, total, x: seen.append((i, total)), **overrides)
    assert [i for i, _ in seen] == list(range(len(seen)))
    assert all(total == len(seen) for _, total in seen)
    return len(seen)


# ---- conversions (conformance) -----------------------------------------------------------------------


def test_conversions_match_reference(conformance):
    folder = conformance / "conversions"
    image = np.load(conformance / "inputs" / "test_image_64x64.npy")
    tensor = torch.from_numpy(np.load(folder / "tensor_in_float32_1x3x64x64.npy"))
    sample = D.sample_from_cv2(image)
    assert sample.dtype == torch.float16
    np.testing.assert_array_equal(sample.numpy(), np.load(folder / "sample_from_cv2_float16_1x3x64x64.npy"))
    np.testing.assert_array_equal(D.sample_to_cv2(tensor), np.load(folder / "sample_to_cv2_uint8.npy"))
    np.testing.assert_array_equal(D.sample_to_cv2(tensor, np.float32), np.load(folder / "sample_to_cv2_float32.npy"))
    np.testing.assert_array_equal(D.sample_to_cv2(sample), np.load(folder / "roundtrip_uint8.npy"))


# ---- determinism and strength -----------------------------------------------------------------------


@pytest.mark.parametrize("strength", [0.0, 0.5])
def test_bit_identical_reruns(pipe, init, strength):
    a, b = run(pipe, init, strength=strength), run(pipe, init, strength=strength)
    assert a.dtype == torch.float32 and a.shape == (1, 4, 8, 8) and torch.equal(a, b)
    assert not torch.equal(a, run(pipe, init, strength=strength, seed=43))


def test_strength_one_returns_init(pipe, init):
    assert count_steps(pipe, init, strength=1.0) == 0
    assert torch.equal(run(pipe, init, strength=1.0), init)


def test_strength_zero_ignores_init(pipe, init):
    assert torch.equal(run(pipe, init, strength=0.0), run(pipe, None))
    assert torch.equal(run(pipe, init, strength=0.0), run(pipe, -init, strength=0.0))


@pytest.mark.parametrize("sampler", ["euler_ancestral", "heun", "dpm2", "plms", "ddim", "dpmpp_2m"])
@pytest.mark.parametrize("strength,steps", [(0.65, 20), (0.3, 10), (0.85, 25), (0.8, 20), (0.0, 4)])
def test_runs_int_one_minus_strength_times_steps(pipe, init, sampler, strength, steps):
    expected = int((1 - strength) * steps)
    assert samplers.denoise_steps(strength, steps, True) == expected
    assert count_steps(pipe, init, sampler=sampler, strength=strength, steps=steps) == expected


def test_without_init_all_steps_run(pipe):
    assert samplers.denoise_steps(0.65, 5, False) == 5
    assert count_steps(pipe, None, strength=0.65, steps=5) == 5


def test_steps_match_reference_table(conformance):
    for row in json.loads((conformance / "seeds_steps.json").read_text())["strength_to_steps"]:
        assert samplers.denoise_steps(row["strength"], row["steps"], True) == row["notebook_t_enc"], row


def test_plms_img2img_keeps_its_warm_up_shape(pipe):
    scheduler = D.make_scheduler(pipe, "plms", 5)
    full = scheduler.timesteps.tolist()  # [t0, t1, t1, t2, t3, t4]
    assert D.tail_timesteps(scheduler, 5, 5).tolist() == full
    assert D.tail_timesteps(scheduler, 5, 3).tolist() == [full[3], full[4], full[4], full[5]]
    assert D.tail_timesteps(scheduler, 5, 1).tolist() == [full[5]]


def test_img2img_starts_from_the_noised_init(pipe, init):
    # one Euler step from the init noised to the last sigma lands near the init, not near fresh noise
    out = run(pipe, init, sampler="euler", strength=0.9, steps=10)
    assert (out - init).abs().mean() < 0.5 * (run(pipe, None, sampler="euler", steps=10) - init).abs().mean()


# ---- samplers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", list(samplers.SAMPLERS))
def test_every_sampler_runs(pipe, init, sampler):
    out = run(pipe, init, sampler=sampler, steps=4, ddim_eta=0.5)
    assert out.isfinite().all() and torch.equal(out, run(pipe, init, sampler=sampler, steps=4, ddim_eta=0.5))


@pytest.mark.parametrize("sampler", ["klms", "dpm2", "dpm2_ancestral", "heun", "euler", "euler_ancestral", "dpmpp_2m"])
def test_karras_sigmas(pipe, sampler):
    plain = D.make_scheduler(pipe, sampler, 8).sigmas
    karras = D.make_scheduler(pipe, sampler, 8, use_karras_sigmas=True).sigmas
    assert not torch.allclose(plain, karras)
    assert torch.isfinite(run(pipe, None, sampler=sampler, steps=3, use_karras_sigmas=True)).all()


def test_sampler_names():
    assert samplers.resolve_sampler("euler_ancestral") == ("euler_ancestral", False)
    assert samplers.resolve_sampler("dpm2_Ancestral") == ("dpm2_ancestral", False)  # as the user docs spell it
    webui = {"Euler a": "euler_ancestral", "DPM++ 2M": "dpmpp_2m", "DPM2 a": "dpm2_ancestral", "LMS": "klms",
             "Heun": "heun", "DDIM": "ddim", "PLMS": "plms", "Euler": "euler", "DPM2": "dpm2"}
    for name, ours in webui.items():
        assert samplers.resolve_sampler(name) == (ours, False)
    assert samplers.resolve_sampler("DPM++ 2M Karras") == ("dpmpp_2m", True)
    for bad in ("k_euler_magic", "euler b", "karras"):
        with pytest.raises(ConfigError, match="^sampler: "):
            samplers.resolve_sampler(bad)


def test_karras_refused_where_missing(pipe):
    with pytest.raises(ConfigError, match="^use_karras_sigmas: "):
        D.make_scheduler(pipe, "ddim", 5, use_karras_sigmas=True)


def test_ddim_eta_adds_seeded_noise(pipe, init):
    plain = run(pipe, init, sampler="ddim", ddim_eta=0.0)
    noisy = run(pipe, init, sampler="ddim", ddim_eta=1.0)
    assert not torch.equal(plain, noisy) and torch.equal(noisy, run(pipe, init, sampler="ddim", ddim_eta=1.0))


# ---- prompts ------------------------------------------------------------------------------------------


def test_weighted_subprompts_match_v06(conformance):
    records = json.loads((conformance / "prompts.json").read_text())["notebook_v06_split_weighted_subprompts"]
    checked = 0
    for r in records:
        if "`" in r["text"]:  # backtick weights are frame maths, evaluated with the prompt schedule
            continue
        got = prompts.split_weighted_subprompts(r["text"], normalize=not r["skip_normalize"])
        assert got.positive == [tuple(p) for p in r["positive"]], r
        assert got.negative == [tuple(p) for p in r["negative"]], r
        checked += 1
    assert checked >= 12


def test_zero_weights_and_all_zero(pipe):
    assert prompts.split_weighted_subprompts("a:0 b:1").positive == [("b", 1.0)]
    assert prompts.split_weighted_subprompts("a:0.0").positive == []


def test_weights_shape_the_conditioning(pipe):
    enc = {t: D.encode_text(pipe, [t]) for t in ["a cat", "a dog", "blurry", ""]}
    cond, uncond = D.prompt_conditioning(pipe, "a cat:2 a dog:-1")
    assert torch.allclose(cond, enc["a cat"]) and torch.allclose(uncond, enc["a dog"])
    cond, uncond = D.prompt_conditioning(pipe, "a cat:2 a dog:-1", "blurry", normalize_prompt_weights=False)
    assert torch.allclose(cond, 2 * enc["a cat"]) and torch.allclose(uncond, enc["a dog"] + enc["blurry"])
    cond, uncond = D.prompt_conditioning(pipe, "a cat:0.75 a dog:0.25")
    assert torch.allclose(cond, 0.75 * enc["a cat"] + 0.25 * enc["a dog"]) and torch.allclose(uncond, enc[""])
    cond, _ = D.prompt_conditioning(pipe, "a cat:2 a dog:-1", prompt_weighting=False)
    assert torch.allclose(cond, D.encode_text(pipe, ["a cat:2 a dog:-1"]))


def test_weights_and_negative_prompt_change_the_image(pipe, init):
    base = run(pipe, init, prompt="a cat")
    assert not torch.equal(base, run(pipe, init, prompt="a cat:1 a dog:1"))
    assert not torch.equal(base, run(pipe, init, prompt="a cat", negative_prompt="a dog"))
    weighted = run(pipe, init, prompt="a cat:1 a dog:-1")
    assert torch.equal(weighted, run(pipe, init, prompt="a cat", negative_prompt="a dog"))


def test_log_weighted_subprompts():
    settings = {"prompt_weighting": True, "normalize_prompt_weights": True}
    rendered = [("frame 0", "a cat:2 a dog:-1", "blurry"), ("frame 1", "a cat:2 a dog:-1", "blurry"),
                ("frame 2", "a cat:1 a bird:3", "")]
    lines = prompts.log_lines(rendered, settings)
    # one line per distinct (prompt, negative prompt), naming where it is first used
    assert lines == ["weighted subprompts from frame 0: +1 'a cat'  -1 'a dog'  -1 'blurry'",
                     "weighted subprompts from frame 2: +0.25 'a cat'  +0.75 'a bird'"]
    # the same split as the conditioning encodes: normalisation and prompt_weighting off are honoured
    unnormalized = prompts.log_lines(rendered[:1], {**settings, "normalize_prompt_weights": False})
    assert unnormalized == ["weighted subprompts from frame 0: +2 'a cat'  -1 'a dog'  -1 'blurry'"]
    whole = prompts.log_lines(rendered[:1], {**settings, "prompt_weighting": False})
    assert whole == ["weighted subprompts from frame 0: +1 'a cat:2 a dog:-1'  -1 'blurry'"]


# ---- mask -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["euler_ancestral", "heun", "plms", "ddim"])
def test_mask_keeps_white_and_diffuses_black(pipe, init, sampler):
    ones, zeros = np.ones((8, 8), np.float32), np.zeros((8, 8), np.float32)
    assert torch.equal(run(pipe, init, sampler=sampler, mask=ones), init)
    assert torch.equal(run(pipe, init, sampler=sampler, mask=zeros), run(pipe, init, sampler=sampler))
    half = zeros.copy()
    half[:, :4] = 1
    out = run(pipe, init, sampler=sampler, mask=half)
    assert torch.equal(out[..., :4], init[..., :4]) and not torch.allclose(out[..., 4:], init[..., 4:])


def test_mask_errors(pipe, init):
    with pytest.raises(ConfigError, match="^use_mask: "):
        run(pipe, None, mask=np.ones((8, 8)))
    with pytest.raises(ValueError, match="mask"):
        run(pipe, init, mask=np.ones((16, 16)))


# ---- images and latent files ------------------------------------------------------------------------------


def test_encode_decode(pipe, conformance):
    image = np.load(conformance / "inputs" / "test_image_64x64.npy")
    latent = D.encode_image(pipe, image)
    assert latent.shape == (1, 4, 8, 8) and latent.dtype == torch.float32
    assert torch.equal(latent, D.encode_image(pipe, image))
    rgb = D.decode_latent(pipe, latent)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    with pytest.raises(ValueError, match="multiple"):
        D.encode_image(pipe, image[:60])


def test_callback_latents_decode(pipe, init):
    frames = []
    run(pipe, init, callback=lambda i, total, x: frames.append(D.decode_latent(pipe, x)))
    assert len(frames) == 3 and all(f.shape == (64, 64, 3) for f in frames)


def test_latent_file_roundtrip(tmp_path, init):
    path = tmp_path / "latents" / "00003.safetensors"
    D.save_latent(path, init)
    assert torch.equal(D.load_latent(path, (1, 4, 8, 8), torch.float32), init)
    assert [p.name for p in path.parent.iterdir()] == ["00003.safetensors"]  # no temp file left
    with pytest.raises(ValueError, match="shape"):
        D.load_latent(path, expected_shape=(1, 4, 16, 16))
    with pytest.raises(ValueError, match="dtype"):
        D.load_latent(path, expected_dtype=torch.float16)
    (tmp_path / "junk.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="junk.safetensors"):
        D.load_latent(tmp_path / "junk.safetensors")


# ---- what jobs call: settings and schedule rows -------------------------------------------------------


def test_generate_and_img2img_on_the_process_wide_model(monkeypatch, pipe, conformance):
    settings = {"model": "builtin:tiny", "model_config": "", "map_location": "cpu", "dtype": "fp32",
                "vae_tiling": False, "compile_unet": False, "W": SIZE,
                "H": SIZE, "ddim_eta": 0.0, "use_karras_sigmas": False, "prompt_weighting": True,
                "normalize_prompt_weights": True, "overlay_mask": True}
    monkeypatch.setattr(models, "_loaded", (tuple(pick(settings, MODEL_SETTINGS).values()), pipe))
    row = {"prompt": "a cat:1 a dog:-1", "negative_prompt": "blurry", "seed_schedule": 7, "steps_schedule": 4,
           "cfg_scale_schedule": 5.0, "sampler_schedule": "heun", "strength_schedule": 0.9, "zoom": 1.0}
    arguments = D.row_arguments(row)
    assert arguments == {"prompt": "a cat:1 a dog:-1", "negative_prompt": "blurry", "seed": 7, "steps": 4,
                         "cfg_scale": 5.0, "sampler": "heun"}  # strength is the caller's to pick
    same = dict(prompt=row["prompt"], negative_prompt="blurry", seed=7, steps=4, cfg_scale=5.0, sampler="heun")

    latent, image = D.generate(None, settings, **arguments)  # txt2img
    assert torch.equal(latent, run(pipe, None, **same))
    np.testing.assert_array_equal(image, D.decode_latent(pipe, latent))
    np.testing.assert_array_equal(D.decode(latent, settings), image)

    start = np.load(conformance / "inputs" / "test_image_64x64.npy")
    init_latent = D.encode(start, settings)
    assert torch.equal(init_latent, D.encode_image(pipe, start))
    expected = D.decode_latent(pipe, run(pipe, init_latent, strength=0.5, **same))
    np.testing.assert_array_equal(D.img2img(start, row, settings, strength=0.5), expected)
    np.testing.assert_array_equal(D.img2img(start, row, settings, strength=0.5, init_latent=init_latent), expected)
    np.testing.assert_array_equal(D.img2img(start, row, settings, strength=1.0),
                                  D.decode_latent(pipe, init_latent))  # strength 1: the init, through the VAE

    mask = np.zeros((SIZE, SIZE), np.float32)
    mask[:, : SIZE // 2] = 1  # pixels: white keeps the init
    masked = D.img2img(start, row, settings, strength=0.5, mask=mask)
    np.testing.assert_array_equal(masked[:, : SIZE // 2], start[:, : SIZE // 2])  # overlay_mask pastes it back
    assert not np.array_equal(masked[:, SIZE // 2:], start[:, SIZE // 2:])
    latent, _ = D.generate(init_latent, settings, strength=0.5, mask=mask, **arguments)
    assert torch.equal(latent[..., : SIZE // 16], init_latent[..., : SIZE // 16])  # the latent mask too
    plain = D.img2img(start, row, {**settings, "overlay_mask": False}, strength=0.5, mask=mask)
    np.testing.assert_array_equal(plain, D.decode_latent(pipe, latent))  # no overlay: the decoded image


# ---- timing ------------------------------------------------------------------------------------------


def test_tiny_frame_time(pipe, conformance):
    """Measured, not asserted (shared CPUs): one 128x128 img2img frame, default 20 steps at strength 0.65."""
    image = np.load(conformance / "inputs" / "test_image_128x128.npy")
    kwargs = dict(prompt="a beautiful forest", negative_prompt="blurry", steps=20, strength=0.65, cfg_scale=7,
                  sampler="euler_ancestral", seed=1, width=128, height=128)
    D.decode_latent(pipe, D.denoise(pipe, D.encode_image(pipe, image), **kwargs))  # warm-up
    start = time.perf_counter()
    D.decode_latent(pipe, D.denoise(pipe, D.encode_image(pipe, image), **kwargs))
    seconds = time.perf_counter() - start
    print(f"\n128x128 img2img frame (7 steps, CFG): {seconds:.3f} s, {torch.get_num_threads()} thread(s)")
