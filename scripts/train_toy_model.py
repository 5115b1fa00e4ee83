"""Train the builtin:toy model: a tiny Stable-Diffusion-architecture model (AutoencoderKL 8x down to 4
latent channels, text-conditioned UNet2DConditionModel, small CLIPTextModel + offline CLIPTokenizer) on
the generated world of deforum_steps.toy_world, saved as a standard fp16 diffusers folder.

Stage 1 trains the VAE on generated scenes (64 px scenes and 64 px crops of 128 px ones). Stage 2 freezes
it, caches the latents of a fixed set of 128 px scenes and trains UNet + text encoder jointly with the SD
epsilon-prediction DDPM loss, dropping 10% of captions for classifier-free guidance. On one machine the
same --seed and --threads give the same weights (a --minutes cap makes them depend on CPU speed). About 31
minutes with the defaults on 2 CPU cores; it prints how long it took.

    .venv/bin/python scripts/train_toy_model.py --seed 0 --out models/toy
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from deforum_steps import models, toy_world

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
# The UNet learns at the default render size, 128 px (16x16 latents): at 64 px a shape spans only 2-6
# latent pixels, too few for the VAE to keep its outline.
SIDE = 128


# ---------------------------------------------------------------- tokenizer


def learn_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """Byte-pair merges that turn every world word into one token (CLIP style: '</w>' ends a word)."""
    split = {w: [*w[:-1], w[-1] + "</w>"] for w in words}
    merges = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for symbols in split.values():
            for pair in zip(symbols, symbols[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda p: (-counts[p], p))  # most frequent, ties by text: deterministic
        merges.append(best)
        for w, symbols in split.items():
            merged, i = [], 0
            while i < len(symbols):
                if tuple(symbols[i:i + 2]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            split[w] = merged


def build_tokenizer(folder: Path) -> CLIPTokenizer:
    """Write vocab.json + merges.txt (bytes, bytes + '</w>', the world's merges, specials) and load them."""
    alphabet = list(models.bytes_to_unicode().values())
    merges = learn_merges(toy_world.WORDS)
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [BOS, EOS]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = dict(tokenizer_class="CLIPTokenizer", model_max_length=77, bos_token=BOS, eos_token=EOS,
                  pad_token=EOS, unk_token=EOS)
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    for word in toy_world.WORDS:
        ids = tokenizer(word).input_ids
        assert len(ids) == 3, f"{word!r} is not one token: {tokenizer.convert_ids_to_tokens(ids)}"
    return tokenizer


# ---------------------------------------------------------------- models


def make_vae() -> AutoencoderKL:
    # No mid-block attention: a purely convolutional VAE behaves the same at 64 px and 128 px.
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 64, 128), layers_per_block=1, latent_channels=4, norm_num_groups=8,
        sample_size=SIDE, mid_block_add_attention=False,
    )


def make_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def make_unet() -> UNet2DConditionModel:
    # Attention only at 8x8 and 4x4: at 16x16 it doubled the cost of a training step (measured), and one flat
    # shape needs no long-range detail at full latent resolution.
    return UNet2DConditionModel(
        sample_size=SIDE // 8, block_out_channels=(64, 96, 128), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32,
    )


# ---------------------------------------------------------------- training helpers


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """RGB uint8 images -> float NCHW in [-1, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


class Progress:
    """Training progress in [0, 1]: the larger of the step fraction and the wall-clock fraction, so a
    --minutes cap still anneals the learning rate to the end instead of cutting it mid-schedule."""

    def __init__(self, steps: int, seconds: float | None):
        self.steps, self.seconds, self.start = steps, seconds, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, step: int) -> float:
        return max(step / self.steps, self.elapsed() / self.seconds if self.seconds else 0.0)


def set_lr(optimizer: torch.optim.Optimizer, peak: float, step: int, progress: float, warmup: int = 100) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    lr = peak * min(1.0, (step + 1) / warmup) * (0.55 + 0.45 * math.cos(math.pi * min(progress, 1.0)))
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def vae_batch(rng: np.random.Generator, batch: int) -> torch.Tensor:
    """Half whole 64 px scenes, half 64 px crops of 128 px scenes (the look of edges at 128 px)."""
    images = [toy_world.draw(toy_world.sample_scene(rng), 64) for _ in range(batch // 2)]
    for _ in range(batch - batch // 2):
        x, y = rng.integers(0, 65, 2)
        images.append(toy_world.draw(toy_world.sample_scene(rng), 128)[y:y + 64, x:x + 64])
    return to_tensor(images)


def edge_l1(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between neighbour-pixel differences: it weighs the outlines that tell the shapes apart, which plain
    pixel losses (dominated by flat areas) learn last."""
    return sum(F.l1_loss(recon.diff(dim=d), target.diff(dim=d)) for d in (2, 3))


def train_vae(vae: AutoencoderKL, args, seconds: float | None) -> None:
    rng = np.random.default_rng([args.seed, 1])
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    progress, running = Progress(args.vae_steps, seconds), []
    step = 0
    while progress(step) < 1:
        lr = set_lr(optimizer, args.vae_lr, step, progress(step))
        x = vae_batch(rng, args.vae_batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # ~1.6x faster convolutions on AVX512-BF16 CPUs
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.sample()).sample.float()
        kl = posterior.kl().float().mean()
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + edge_l1(recon, x) + args.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running.append(loss.item())
        step += 1
        if step % 100 == 0:
            print(f"vae step {step} loss {np.mean(running):.4f} lr {lr:.2e} {progress.elapsed():.0f}s", flush=True)
            running = []


@torch.no_grad()
def encode_scenes(vae: AutoencoderKL, images: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of each image: latents are re-sampled from them every time they are used."""
    means, stds = [], []
    for i in range(0, len(images), 64):
        dist = vae.encode(to_tensor(images[i:i + 64])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


class LatentSet:
    """A fixed set of scenes of one size: cached posteriors and tokenized captions (full, short, empty)."""

    CAPTION_FORMS = (0.7, 0.2, 0.1)  # probabilities of 'a red circle on a blue background', 'a red circle', ''

    def __init__(self, vae: AutoencoderKL, tokenizer: CLIPTokenizer, seed: int, n: int, side: int):
        scenes = toy_world.scenes(seed, n)
        self.mean, self.std = encode_scenes(vae, [toy_world.draw(s, side) for s in scenes])
        captions = [text for s in scenes for text in (s.caption(), s.caption(short=True), "")]
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        self.ids = ids.view(n, 3, -1)

    def batch(self, rng: np.random.Generator, size: int, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.from_numpy(rng.integers(0, len(self.ids), size))
        form = torch.from_numpy(rng.choice(3, size, p=self.CAPTION_FORMS))
        mean, std = self.mean[index], self.std[index]
        return (mean + std * torch.randn_like(std)) * scaling, self.ids[index, form]


def min_snr_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """Min-SNR-gamma loss weights for epsilon prediction: faster convergence on a short budget."""
    snr = alphas_cumprod[t] / (1 - alphas_cumprod[t])
    return snr.clamp(max=gamma) / snr


def train_diffusion(unet, text_encoder, scenes: LatentSet, scaling: float, args,
                    seconds: float | None) -> None:
    """UNet + text encoder jointly on cached latents; the weights left in the models are the EMA."""
    rng = np.random.default_rng([args.seed, 2])
    params = [*unet.parameters(), *text_encoder.parameters()]
    ema = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=1e-2)
    betas = torch.linspace(SD_BETAS["beta_start"] ** 0.5, SD_BETAS["beta_end"] ** 0.5, 1000) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    progress, running = Progress(args.unet_steps, seconds), []
    step = 0
    while progress(step) < 1:
        lr = set_lr(optimizer, args.unet_lr, step, progress(step))
        latents, ids = scenes.batch(rng, args.unet_batch, scaling)
        t = torch.from_numpy(rng.integers(0, 1000, len(ids)))
        # Offset noise: SD's schedule leaves ~7% of the signal at t=999, so without it the model learns to
        # read the image's mean color from the noise and cannot move off the noise's mean (no black).
        noise = torch.randn_like(latents) + args.offset_noise * torch.randn(len(latents), 4, 1, 1)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        pred = unet(noisy, t, text_encoder(ids)[0]).sample
        loss = (min_snr_weights(alphas_cumprod, t) * (pred - noise).pow(2).mean((1, 2, 3))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - min(args.ema, (1 + step) / (10 + step)))
        running.append(loss.item())
        if step % 100 == 0:
            print(f"unet step {step} loss {np.mean(running):.4f} lr {lr:.2e} {progress.elapsed():.0f}s", flush=True)
            running = []
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)


# ---------------------------------------------------------------- saving


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save(out: Path, vae, text_encoder, unet, tokenizer_dir: Path, meta: dict) -> None:
    """Write the fp16 diffusers folder beside `out`, then swap it in, so `out` is never half written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    stage.chmod(0o755)  # mkdtemp makes it private; the model folder is for everyone
    # trailing: the first of few sampling steps starts at t=999, pure noise, as the model was trained.
    scheduler = EulerDiscreteScheduler(**SD_BETAS, prediction_type="epsilon", timestep_spacing="trailing",
                                       steps_offset=1)
    # UNet and VAE in fp16 (diffusers upcasts them to fp32 by default); the 0.3 MB text encoder stays fp32
    # because transformers loads the saved dtype, and an fp16 encoder feeding an fp32 UNet fails on CPU.
    pipe = StableDiffusionPipeline(
        vae=vae.to(torch.float16), text_encoder=text_encoder, unet=unet.to(torch.float16), scheduler=scheduler,
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(stage, safe_serialization=True)
    for name in ("vocab.json", "merges.txt"):  # the BPE source files, beside the tokenizer.json built from them
        shutil.copy(tokenizer_dir / name, stage / "tokenizer" / name)
    weights = sorted(stage.rglob("*.safetensors"))
    (stage / "SHA256SUMS").write_text("".join(f"{sha256(p)}  {p.relative_to(stage).as_posix()}\n" for p in weights))
    (stage / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    stage.replace(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("models/toy"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=None,
                        help="wall-clock cap for both stages (VAE gets 20%%); the result then depends on CPU speed")
    # Two threads: 1.6x faster than one on an idle 2-core machine; use 1 if other work shares the CPU.
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vae-steps", type=int, default=2000)
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--kl-weight", type=float, default=1e-6)
    parser.add_argument("--unet-steps", type=int, default=2700)
    parser.add_argument("--unet-batch", type=int, default=32)
    parser.add_argument("--unet-lr", type=float, default=1e-3)
    parser.add_argument("--ema", type=float, default=0.995)
    parser.add_argument("--offset-noise", type=float, default=0.1)
    parser.add_argument("--scenes", type=int, default=6000, help="128 px scenes whose latents stage 2 learns")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    budget = args.minutes * 60 if args.minutes else None
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(Path(tmp) / "tokenizer")
        vae, text_encoder, unet = make_vae(), make_text_encoder(tokenizer), make_unet()

        train_vae(vae, args, budget and 0.2 * budget)
        vae_seconds = time.perf_counter() - start
        vae.eval().requires_grad_(False)

        scenes = LatentSet(vae, tokenizer, args.seed + 100, args.scenes, SIDE)
        scaling = 1.0 / float(scenes.mean.std())
        vae.register_to_config(scaling_factor=scaling)
        print(f"vae {vae_seconds:.0f}s, latents cached, scaling_factor {scaling:.4f}", flush=True)

        remaining = budget and budget - (time.perf_counter() - start)
        train_diffusion(unet, text_encoder, scenes, scaling, args, remaining)
        seconds = time.perf_counter() - start
        settings = {k: v for k, v in vars(args).items() if k != "out"}  # where it was written is not how
        meta = dict(settings, vae_seconds=round(vae_seconds), total_seconds=round(seconds), torch=torch.__version__)
        save(args.out, vae, text_encoder, unet, Path(tmp) / "tokenizer", meta)
    print(f"trained in {seconds / 60:.1f} min ({vae_seconds / 60:.1f} min VAE); saved {args.out}", flush=True)


if __name__ == "__main__":
    main()
