"""Model load time per format, and seconds per img2img frame on a model loaded from a single file, versus diffusers'
own StableDiffusionImg2ImgPipeline doing the same work.

The model is SD 1.5's architecture (the shipped model_configs/sd1) with random weights, written once as a diffusers
folder, an original-layout .safetensors and a .ckpt under --workdir (about 4.3 GB each; reused by later runs).
Loads go through models.load_pipeline, as a job's would. A frame is Deforum's img2img step: encode the previous
frame, diffuse at `--strength` with CFG, decode; ours is deforum_steps.diffusion (encode_image, denoise,
decode_latent), the reference is StableDiffusionImg2ImgPipeline made of the same modules, so the weights, the
scheduler (Euler), the number of UNet calls (counted and printed) and the threads are the same.

    nice -n 19 .venv/bin/python bench/bench_models.py [--small] [--size 256] [--steps 6] [--strength 0.5]
        [--frames 2] [--repeats 2] [--threads 1] [--workdir DIR] [--first-load]

--small uses builtin:tiny's architecture (seconds, a few MB) for a quick look. --first-load times, instead, a
render's first load of each model file and of builtin:toy, diffusers' import included, each in a new process: as
a job loads it (models.get_pipeline: full garbage collections held, the model then frozen, process.loading_model)
beside the same load at Python's pace of collections (models.load_pipeline alone), in turn, --repeats times.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from side_by_side import alternating_times, print_times

from deforum_steps import ldm_checkpoint, models
from deforum_steps.dependencies import MODEL_SETTINGS
from deforum_steps.diffusion import decode_latent, denoise, encode_image
from deforum_steps.model_files import CONFIGS_DIR

PROMPT = "a beautiful forest by Asher Brown Durand, trending on Artstation"
NEGATIVE = "blurry"
CFG_SCALE = 7.0
FULL_GIB = 14  # free memory the full-size run needs: a 4.3 GB model built, saved and loaded twice over


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def build(small: bool) -> models.Pipeline:
    if small:
        return models.build_tiny()
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = CONFIGS_DIR / "sd1"
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
    return models._assemble(unet, vae, encoder, models.clip_tokenizer(), models.SD_SCHEDULER_CONFIG,
                            torch.device("cpu"), torch.float32)


def model_files(workdir: Path, small: bool) -> dict[str, Path]:
    """{format: path} of the model, written on first use."""
    files = {"diffusers folder": workdir / "folder", ".ckpt": workdir / "model.ckpt",
             ".safetensors": workdir / "model.safetensors"}  # the last one loaded is the one timed per frame
    if all(p.exists() for p in files.values()):
        return files
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pipe = build(small)
    print(f"built the random model in {time.perf_counter() - start:.1f} s; writing it to {workdir}")
    models.save_pipeline(pipe, files["diffusers folder"])
    ldm_checkpoint.save_checkpoint(pipe, files[".safetensors"])
    ldm_checkpoint.save_checkpoint(pipe, files[".ckpt"])
    return files


def load(path: Path, model_config: str) -> models.Pipeline:
    settings = dict.fromkeys(MODEL_SETTINGS, False) | {"model": str(path), "model_config": model_config,
                                                        "map_location": "cpu", "dtype": "fp32"}
    return models.load_pipeline(settings)


# A new process's first load of a model (argv: model, model_config, how), its seconds printed.
FIRST_LOAD = """
import sys, time
import torch
from deforum_steps import models
from deforum_steps.dependencies import MODEL_SETTINGS
model, model_config, how = sys.argv[1:]
settings = dict.fromkeys(MODEL_SETTINGS, False) | {"model": model, "model_config": model_config,
                                                    "map_location": "cpu", "dtype": "fp32"}
start = time.perf_counter()
(models.get_pipeline if how == "held" else models.load_pipeline)(settings)
print(time.perf_counter() - start)
"""


def first_loads(files: dict[str, Path], model_config: str, repeats: int) -> None:
    """Each model's first load in a new process, as a render's job makes it and at Python's pace, in turn."""
    print("a new process's first load, diffusers' import included, s: as a job (full collections held, then frozen) "
          "| at Python's pace")
    for name, model in {**{k: str(v) for k, v in files.items()}, "builtin:toy": "builtin:toy"}.items():
        times = {"held": [], "pace": []}
        for r in range(repeats):
            for how in ("held", "pace") if r % 2 == 0 else ("pace", "held"):
                out = subprocess.run([sys.executable, "-c", FIRST_LOAD, model, model_config if model != "builtin:toy"
                                      else "", how], capture_output=True, text=True, check=True).stdout
                times[how].append(float(out.split()[-1]))
        held, pace = (statistics.median(times[k]) for k in ("held", "pace"))
        print(f"load {name:>16}: {held:6.2f} | {pace:6.2f}  held / pace {held / pace:.2f}  "
              f"({', '.join(f'{a:.2f}|{b:.2f}' for a, b in zip(times['held'], times['pace']))})")


def init_image(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([xx * 255 // size, yy * 255 // size, (xx + yy) * 127 // size], -1).astype(np.uint8)


def ours(pipe, image: np.ndarray, steps: int, strength: float, seed: int) -> np.ndarray:
    latent = denoise(pipe, encode_image(pipe, image), prompt=PROMPT, negative_prompt=NEGATIVE, steps=steps,
                     strength=strength, cfg_scale=CFG_SCALE, sampler="euler", seed=seed, width=image.shape[1],
                     height=image.shape[0])
    return decode_latent(pipe, latent)


def reference_pipeline(pipe):
    from diffusers import EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline

    sd = StableDiffusionImg2ImgPipeline(pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.unet,
                                        EulerDiscreteScheduler.from_config(pipe.scheduler_config), None, None,
                                        requires_safety_checker=False)
    sd.set_progress_bar_config(disable=True)
    return sd


def bare(sd, image: np.ndarray, steps: int, strength: float, seed: int) -> np.ndarray:
    out = sd(PROMPT, image=Image.fromarray(image), strength=strength, num_inference_steps=steps,
             guidance_scale=CFG_SCALE, negative_prompt=NEGATIVE, generator=torch.Generator().manual_seed(seed))
    return np.asarray(out.images[0])


def animate(run, model, image: np.ndarray, frames: int, steps: int, strength: float) -> np.ndarray:
    """`frames` img2img frames, each from the previous one, as a 2D animation without motion."""
    for frame in range(frames):
        image = run(model, image, steps, strength, seed=frame)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="builtin:tiny's architecture instead of SD 1.5's")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the model files are kept (default: the temp dir, per size)")
    parser.add_argument("--first-load", action="store_true",
                        help="time a render's first load of each model instead (see above)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.small and available_gib() < FULL_GIB:
        raise SystemExit(f"{available_gib():.1f} GiB of memory free, the SD 1.5-size run needs {FULL_GIB}: use --small")
    workdir = args.workdir or Path(tempfile.gettempdir()) / f"deforum_bench_models_{'small' if args.small else 'sd15'}"
    files = model_files(workdir, args.small)
    model_config = str(files["diffusers folder"]) if args.small else ""  # the shipped sd1 configs for SD 1.5
    if args.first_load:
        return first_loads(files, model_config, args.repeats)

    print(f"{'builtin:tiny' if args.small else 'SD 1.5'} architecture, random weights; {torch.get_num_threads()} "
          "thread(s)")
    pipe = None
    for name, path in files.items():
        pipe = None  # one model in memory at a time
        gc.collect()
        start = time.perf_counter()
        pipe = load(path, model_config)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
        print(f"load {name:>16}: {time.perf_counter() - start:6.2f} s  ({size / 2**20:,.0f} MB on disk)")

    calls = []
    pipe.unet.register_forward_hook(lambda *_: calls.append(1))
    sd = reference_pipeline(pipe)
    runners = {"deforum_steps": (ours, pipe), "diffusers img2img": (bare, sd)}
    image = init_image(args.size)
    unet_calls, results = {}, {}
    for name, (run, model) in runners.items():  # warm-up, and the UNet calls per frame
        calls.clear()
        results[name] = animate(run, model, image, 1, args.steps, args.strength)
        unet_calls[name] = len(calls)
    print(f"{args.size}x{args.size}, {args.steps} steps at strength {args.strength} (UNet calls per frame, batch of 2 "
          f"for CFG: {unet_calls}), {args.frames} frames per run, {args.repeats} runs each")
    times = alternating_times({name: partial(animate, run, model, image, args.frames, args.steps, args.strength)
                               for name, (run, model) in runners.items()}, args.repeats, per=args.frames)
    print_times(times, "s/frame", "deforum_steps", "diffusers img2img", "ours/diffusers")
    a, b = (r.astype(int) for r in results.values())
    print(f"first frame, ours vs diffusers: mean |difference| {np.abs(a - b).mean():.2f} of 255 "
          "(the same work; the noise and timestep details differ)")


if __name__ == "__main__":
    main()
