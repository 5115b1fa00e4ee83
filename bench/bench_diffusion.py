"""Seconds per image: deforum_steps.diffusion (denoise + decode_latent) versus a bare diffusers loop doing the same
work (same UNet, VAE, text encoder, scheduler, steps, CFG and seed) in one process, on the full SD 1.5
architecture with random weights. Both produce the same image; the ratio is our overhead.

    .venv/bin/python bench/bench_diffusion.py [--size 256] [--steps 4] [--repeats 3] [--threads N]
"""
from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch
from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
from side_by_side import alternating_times, print_times
from transformers import CLIPTextConfig, CLIPTextModel

from deforum_steps.diffusion import decode_latent, denoise
from deforum_steps.models import SD_SCHEDULER_CONFIG, Pipeline, build_tiny_tokenizer

PROMPT = "a beautiful forest by Asher Brown Durand, trending on Artstation"
NEGATIVE = ""  # diffusers' default unconditional prompt


def build_sd15() -> Pipeline:
    """SD 1.5 UNet / VAE / CLIP ViT-L text encoder configs, random weights (the tokenizer only supplies ids)."""
    torch.manual_seed(0)
    tokenizer = build_tiny_tokenizer()
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # defaults: 320/640/1280/1280, 2 layers
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    modules = [m.eval().requires_grad_(False) for m in (unet, vae, text_encoder)]
    return Pipeline(*modules, tokenizer, dict(SD_SCHEDULER_CONFIG), torch.device("cpu"), torch.float32)


def ours(pipe: Pipeline, size: int, steps: int, cfg_scale: float, seed: int) -> np.ndarray:
    latent = denoise(
        pipe, None, prompt=PROMPT, negative_prompt=NEGATIVE, steps=steps, cfg_scale=cfg_scale,
        sampler="euler_ancestral", seed=seed, width=size, height=size,
    )
    return decode_latent(pipe, latent)


@torch.inference_mode()
def bare_diffusers(pipe: Pipeline, size: int, steps: int, cfg_scale: float, seed: int) -> np.ndarray:
    """The txt2img loop of diffusers' StableDiffusionPipeline, written out."""
    tokenizer = pipe.tokenizer
    ids = tokenizer(
        [NEGATIVE, PROMPT], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids
    embeddings = pipe.text_encoder(ids)[0]
    scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler_config)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn((1, 4, size // 8, size // 8), generator=generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        noise_uncond, noise_text = pipe.unet(model_input, t, encoder_hidden_states=embeddings).sample.chunk(2)
        noise = noise_uncond + cfg_scale * (noise_text - noise_uncond)
        latents = scheduler.step(noise, t, latents, generator=generator).prev_sample
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return ((image[0].permute(1, 2, 0) + 1) / 2).clamp(0, 1).mul(255).to(torch.uint8).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cfg-scale", type=float, default=7.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    pipe = build_sd15()
    print(f"SD 1.5 architecture, random weights, built in {time.perf_counter() - start:.1f} s; "
          f"{args.size}x{args.size}, {args.steps} steps, CFG {args.cfg_scale}, {torch.get_num_threads()} threads")
    runners = {"deforum_steps": ours, "bare diffusers": bare_diffusers}
    images = {name: run(pipe, args.size, args.steps, args.cfg_scale, 0) for name, run in runners.items()}  # warm-up
    same = np.array_equal(*images.values())
    # wall and process CPU time: on shared cores CPU time is the steadier measure of the work done
    times = alternating_times({name: partial(run, pipe, args.size, args.steps, args.cfg_scale, 0)
                               for name, run in runners.items()}, args.repeats)
    print_times(times, "s/image", "deforum_steps", "bare diffusers", "ours/bare")
    print(f"identical images: {same}")


if __name__ == "__main__":
    main()
