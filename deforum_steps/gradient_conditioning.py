"""Gradient conditioning (Deforum v0.6's section, gradient-conditioning.md) in our own sampling loop.

On a conditioned step the prediction is decoded to RGB (linear: a per-pixel 4x3 map at latent size; autoencoder:
the VAE), the scaled losses are summed, their gradient g = -d(sum)/d(x0_pred) (or through the UNet, d/dx) is
clamped, and the latent moves by sigma * g. Everything works in k-diffusion (VE) coordinates, x = x0 + sigma * eps:
the sigma-based schedulers' latent is that; the VP ones' (DDIM, PLMS, DPM-Solver) is alpha * x with
alpha = 1 / sqrt(sigma^2 + 1). The scheduler then steps with the eps that the shifted prediction implies, so every
sampler takes its normal step from there. Second evaluations of a 2nd-order step (Heun, DPM2, the PLMS warm-up)
are not conditioned. Departures (decisions.md): the CLIP target is the whole prompt, timing and the schedule clamp
count the steps run, scale 1 and negative scales work, k-means is our seeded numpy k-means++ (n_init 10).
"""
from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import gradient_settings as gs
from .config import ConfigError
from .prompts import split_weighted_subprompts

# Kevin Turner's SD v1 latent -> RGB matrix (rows: latent channels; columns: R, G, B), applied to scaled latents.
LINEAR_SD = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
EPS = 1e-12

# ---- losses on a decoded image x (B, 3, h, w) in [-1, 1] -------------------------------------------------------


def mean_loss(x):
    return x.abs().mean()


def var_loss(x):
    return x.var()


def exposure_loss(x, target: float):
    return (x - target).abs().mean()


def blue_loss(x):
    return (x[:, -1] - 0.9).abs().mean()


def mse_loss(x, target):
    return (x - target).pow(2).mean()


def kmeans_palette(pixels: np.ndarray, n_colors: int, seed: int = 0, n_init: int = 10, iterations: int = 100):
    """(centres (n, 3), counts (n,)) of k-means++ on (N, 3) pixels: the best of n_init seeded runs (inertia)."""
    pixels = np.asarray(pixels, np.float64)
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(n_init):
        centres = pixels[[rng.integers(len(pixels))]]
        while len(centres) < n_colors:  # k-means++: the next centre drawn by squared distance
            d2 = ((pixels[:, None] - centres[None]) ** 2).sum(-1).min(1)
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(pixels), 1 / len(pixels))
            centres = np.vstack([centres, pixels[rng.choice(len(pixels), p=p)]])
        for _ in range(iterations):
            labels = ((pixels[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
            moved = np.array([pixels[labels == j].mean(0) if (labels == j).any() else centres[j]
                              for j in range(n_colors)])
            if np.allclose(moved, centres):
                break
            centres = moved
        labels = ((pixels[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        inertia = ((pixels - centres[labels]) ** 2).sum()
        if best is None or inertia < best[0]:
            best = (inertia, centres, np.bincount(labels, minlength=n_colors))
    return best[1], best[2]


def palette_targets(centres: np.ndarray, counts: np.ndarray, n_pixels: int) -> np.ndarray:
    """(n, N): for each palette colour, the sorted distances to it over the palette-quantised target image."""
    scaled = np.floor(counts * n_pixels / counts.sum()).astype(int)
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    targets = np.zeros((len(centres), n_pixels))
    for i in range(len(centres)):
        values = np.repeat(distances[i], scaled)
        targets[i, : len(values)] = values
    return np.sort(targets, axis=1)


def colormatch_loss(x, centres, targets, sat_weight: float | None):
    """Squared 1-D Wasserstein distance between x's and the target's distributions of distance to each colour."""
    if sat_weight is not None:
        grey = (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None].expand_as(x)
        x = (sat_weight * x + (1 - sat_weight) * grey).clamp(-1, 1)
    flat = x.flatten(2).transpose(1, 2)  # (B, N, 3)
    d = ((flat[:, None] - centres[None, :, None]) ** 2).sum(-1).add(EPS).sqrt()  # (B, n, N)
    return (d.sort(-1).values - targets[None]).pow(2).mean()


def spherical_distance(a, b):
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    return (a - b).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


# ---- clamping the summed gradient ------------------------------------------------------------------------------


def clamp_gradient(g, rule: str, threshold: float, schedule_value: float | None = None):
    """The four rules of the reference's threshold_by; NaN -> 0 first, infinities -> the largest finite value."""
    g = torch.nan_to_num(g, nan=0.0)
    if rule == "dynamic":  # percentile (in percent) of |g| per sample, one scale s >= 1 for the batch
        s = max(1.0, float(torch.quantile(g.abs().flatten(1).double(), threshold / 100, dim=1).max()))
        return g.clamp(-s, s) / s
    if rule == "static":
        return g.clamp(-threshold, threshold)
    if rule == "mean":  # per-sample RMS cap
        rms = g.pow(2).flatten(1).mean(1).sqrt().view(-1, *[1] * (g.dim() - 1))
        return torch.where(rms > threshold, g * threshold / rms.clamp_min(EPS), g)
    if rule == "schedule":  # one RMS over the batch, capped at the step's scheduled value
        rms = g.pow(2).mean().sqrt()
        return g * torch.minimum(rms, torch.tensor(schedule_value, dtype=g.dtype)) / rms.clamp_min(EPS)
    raise ConfigError(f"grad_threshold_type: {rule!r} is not dynamic, static, mean or schedule")


# ---- CLIP and the aesthetic head (local folders only) ----------------------------------------------------------


def _features(out):
    """transformers 4 returns the projected features; 5 a BaseModelOutputWithPooling holding them."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@dataclass
class Clip:
    model: object  # transformers CLIPModel, eval, frozen
    tokenizer: object
    size: int
    mean: torch.Tensor
    std: torch.Tensor

    def text(self, texts: list[str]):
        ids = self.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt").input_ids
        return _features(self.model.get_text_features(input_ids=ids.to(self.model.device)))

    def image(self, pixels01):
        return _features(self.model.get_image_features(pixel_values=(pixels01 - self.mean) / self.std))


@functools.lru_cache(maxsize=2)
def load_clip(folder: str, device: str) -> Clip:
    from transformers import CLIPModel, CLIPTokenizer

    with torch.inference_mode(False):  # parameters autograd can differentiate through
        model = CLIPModel.from_pretrained(folder, local_files_only=True).to(device).eval().requires_grad_(False)
    processor = Path(folder) / "preprocessor_config.json"
    pre = json.loads(processor.read_text()) if processor.is_file() else {}
    view = (1, 3, 1, 1)
    tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    return Clip(model, tokenizer, model.config.vision_config.image_size,
                torch.tensor(pre.get("image_mean", OPENAI_MEAN), device=device).view(view),
                torch.tensor(pre.get("image_std", OPENAI_STD), device=device).view(view))


def load_aesthetic_head(path: Path, device) -> tuple[torch.Tensor, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    return state["linear.weight"].float().to(device), state["linear.bias"].float().to(device)


def builtin_measures(prompt: str) -> tuple[Callable[[np.ndarray], float], Callable[[np.ndarray], float]]:
    """(similarity, aesthetic) of an RGB image in [-1, 1] (H, W, 3) under the builtin tiny CLIP and its aesthetic head:
    the cosine similarity to `prompt` and the rating; what the tests and bench/bench_gradient.py measure guidance by."""
    clip = load_clip(str(gs.BUILTIN_CLIP), "cpu")
    weight, bias = load_aesthetic_head(gs.BUILTIN_CLIP / gs.AESTHETIC_HEAD, "cpu")

    @torch.no_grad()
    def similarity(x: np.ndarray) -> float:
        pixels = torch.tensor(x).permute(2, 0, 1)[None].float()
        return float(F.cosine_similarity(clip.image((pixels + 1) / 2), clip.text([prompt])))

    @torch.no_grad()
    def aesthetic(x: np.ndarray) -> float:
        pixels = F.interpolate(torch.tensor(x).permute(2, 0, 1)[None].float(), size=clip.size)
        e = _features(clip.model.get_image_features(pixel_values=pixels))
        return float(F.normalize(e, dim=-1) * e.shape[-1] ** 0.5 @ weight.T + bias)

    return similarity, aesthetic


def clip_targets(prompt: str) -> list[tuple[str, float]]:
    """The whole prompt's "text:weight" sub-prompts (positive ones), weights normalised by |sum| as the reference."""
    parts = split_weighted_subprompts(prompt, normalize=False).positive or [(prompt, 1.0)]
    total = sum(w for _, w in parts)
    return [(text.strip(), w / abs(total)) for text, w in parts]


def cutouts(x01, cutn: int, cut_pow: float, size: int, generator: torch.Generator):
    """`cutn` random square crops, each adaptive-average-pooled to size x size (the reference's MakeCutouts)."""
    h, w = x01.shape[-2:]
    biggest, smallest = min(h, w), min(h, w, size)
    crops = []
    for _ in range(cutn):
        side = int(torch.rand((), generator=generator) ** cut_pow * (biggest - smallest) + smallest)
        ox = int(torch.randint(0, w - side + 1, (), generator=generator))
        oy = int(torch.randint(0, h - side + 1, (), generator=generator))
        crops.append(F.adaptive_avg_pool2d(x01[..., oy : oy + side, ox : ox + side], size))
    return torch.cat(crops)


# ---- the guide: built once per image, applied on its conditioned steps -----------------------------------------

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (model input, embeddings) -> raw UNet output


class Guide:
    """One image's losses (scaled, in the reference's order), decode, timing and clamp; step_input conditions a step."""

    def __init__(self, pipe, settings: Mapping, *, prompt: str, seed: int, width: int, height: int, steps_run: int):
        self.s = settings
        self.pipe = pipe
        self.steps_run = steps_run
        self.steps = gs.inject_steps(settings["grad_inject_timing"], steps_run)
        if self.steps == set():
            print(f"gradient conditioning warning: grad_inject_timing {settings['grad_inject_timing']} selects none "
                  f"of the {steps_run} steps this image runs", file=sys.stderr)
        self.v_prediction = pipe.scheduler_config.get("prediction_type") == "v_prediction"
        self.generator = torch.Generator("cpu").manual_seed(int(seed))
        self.linear = self._linear_decode() if settings["decode_method"] == "linear" else None
        self.losses: list[tuple[float, Callable]] = []
        scale = {key: float(settings[key]) for key in gs.SCALE_KEYS}
        if scale["clip_scale"] or scale["aesthetics_scale"]:
            folder = gs.clip_folder(settings)
            self.clip = load_clip(str(folder), str(pipe.device))
        if scale["clip_scale"]:
            targets = clip_targets(settings.get("clip_prompt") or prompt)
            with torch.no_grad():
                embeds = self.clip.text([t for t, _ in targets]).float()
            weights = torch.tensor([w for _, w in targets], device=pipe.device)
            self.losses.append((scale["clip_scale"], functools.partial(self._clip_loss, embeds, weights)))
        losses = {"blue_scale": blue_loss, "mean_scale": mean_loss, "var_scale": var_loss,
                  "exposure_scale": functools.partial(exposure_loss, target=float(settings["exposure_target"]))}
        for key, fn in losses.items():
            if scale[key]:
                self.losses.append((scale[key], fn))
        if scale["init_mse_scale"]:
            target = self._target_pixels(settings["init_mse_image"], width, height)
            self.losses.append((scale["init_mse_scale"], functools.partial(mse_loss, target=target)))
        if scale["colormatch_scale"]:
            self.losses.append((scale["colormatch_scale"], self._colormatch(width, height)))
        if scale["aesthetics_scale"]:
            weight, bias = load_aesthetic_head(gs.aesthetic_head(settings, folder), pipe.device)
            self.losses.append((scale["aesthetics_scale"], functools.partial(self._aesthetics_loss, weight, bias)))

    # -- decode and targets --

    def _linear_decode(self):
        from .model_files import model_location

        location = model_location(self.s["model"]) if "model" in self.s else None
        source = gs.linear_decode_source(location if location is not None and location.is_dir() else None,
                                         dict(self.pipe.vae.config))
        if source == "sd":
            return torch.tensor(LINEAR_SD, device=self.pipe.device), torch.zeros(3, device=self.pipe.device)
        data = json.loads(Path(source).read_text())
        return (torch.tensor(data["matrix"], dtype=torch.float32, device=self.pipe.device),
                torch.tensor(data.get("bias", [0.0] * 3), dtype=torch.float32, device=self.pipe.device))

    def decode(self, z):
        """Scaled latent (B, 4, h, w) -> RGB (B, 3, h, w) (linear) or (B, 3, 8h, 8w) (autoencoder), about [-1, 1]."""
        if self.linear is not None:
            matrix, bias = self.linear
            return torch.einsum("blhw,lc->bchw", z, matrix) + bias.view(1, 3, 1, 1)
        vae = self.pipe.vae
        return vae.decode((z / vae.config.scaling_factor).to(vae.dtype)).sample.float()

    def _target_pixels(self, path: str, width: int, height: int):
        """An image as the losses see it: [-1, 1] at W x H (autoencoder) or encoded and linear-decoded."""
        from . import io

        rgb = io.read_image(path, (width, height))
        pixels = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().to(self.pipe.device) / 127.5 - 1
        if self.linear is None:
            return pixels
        with torch.no_grad():  # the posterior mean, not a sample: the same palette and target every run
            vae = self.pipe.vae
            latent = vae.encode(pixels.to(vae.dtype)).latent_dist.mean.float() * vae.config.scaling_factor
            return self.decode(latent)

    def _colormatch(self, width: int, height: int):
        s = self.s
        if self.linear is None:  # the raw image, at most 256 x 256 for k-means (the palette of a photo is the same)
            from . import io

            rgb = io.read_image(s["colormatch_image"]).astype(np.float64) / 127.5 - 1
            step = max(1, math.ceil(math.sqrt(rgb.shape[0] * rgb.shape[1] / 65536)))
            pixels = rgb[::step, ::step].reshape(-1, 3)
            n_pixels = width * height
        else:
            decoded = self._target_pixels(s["colormatch_image"], width, height)
            pixels = decoded[0].flatten(1).T.cpu().double().numpy()
            n_pixels = decoded.shape[-1] * decoded.shape[-2]
        centres, counts = kmeans_palette(pixels, int(s["colormatch_n_colors"]), seed=0)
        targets = torch.tensor(palette_targets(centres, counts, n_pixels), dtype=torch.float32, device=self.pipe.device)
        centres = torch.tensor(centres, dtype=torch.float32, device=self.pipe.device)
        sat = s["ignore_sat_weight"]
        return functools.partial(colormatch_loss, centres=centres, targets=targets,
                                 sat_weight=None if sat is None else float(sat))

    def _clip_loss(self, text_embeds, weights, x):
        crops = cutouts((x + 1) / 2, int(self.s["cutn"]), float(self.s["cut_pow"]), self.clip.size, self.generator)
        image = self.clip.image(crops).float().view(int(self.s["cutn"]), x.shape[0], -1)
        d = spherical_distance(image[:, :, None], text_embeds[None, None])  # (cutn, B, targets)
        return (d * weights).sum(-1).mean(0).sum()

    def _aesthetics_loss(self, weight, bias, x):
        pixels = F.interpolate(x, size=self.clip.size)  # nearest, [-1, 1], unnormalised: as the reference
        image = _features(self.clip.model.get_image_features(pixel_values=pixels)).float()
        unit = F.normalize(image, dim=-1) * image.shape[-1] ** 0.5
        return 10 - (unit @ weight.T + bias)[0, 0]

    # -- the step --

    def selected(self, k: int) -> bool:
        return bool(self.losses) and (self.steps is None or k in self.steps)

    def total_loss(self, prediction):
        """The sum of scale * loss over the enabled losses, on the decoded x0 prediction."""
        image = self.decode(prediction)
        return sum(scale * fn(image) for scale, fn in self.losses)

    def clamp(self, g, k: int):
        s = self.s
        value = gs.schedule_clamp(k, self.steps_run, s["clamp_start"], s["clamp_stop"])
        return clamp_gradient(g, s["grad_threshold_type"], float(s["clamp_grad_threshold"]), value)

    def step_input(self, scheduler, x, t, embeddings, cfg_scale: float, k: int, model: Model):
        """(model output, latent) for scheduler.step at conditioned step k (1-based among the steps run)."""
        sigma, alpha = evaluation_sigma(scheduler, t, x.device)
        c_in = 1 / math.sqrt(sigma**2 + 1)
        with torch.inference_mode(False), torch.no_grad():
            x_ve = x.clone() / alpha
            embeddings = embeddings.clone()
            uncond, cond = embeddings.chunk(2)

            def eps(x_ve, emb):  # per-branch eps at the VE latent x_ve
                x_in = x_ve * c_in
                out = model(torch.cat([x_in] * len(emb)), emb)
                return sigma * c_in * torch.cat([x_in] * len(emb)) + c_in * out if self.v_prediction else out

            def cfg(e):
                e_u, e_c = e.chunk(2)
                return e_u + cfg_scale * (e_c - e_u)

            def denoised(x_ve, branch):  # x0 prediction of "both" (the CFG mix), "uncond" or "cond"
                if branch == "both":
                    return x_ve - sigma * cfg(eps(x_ve, embeddings))
                return x_ve - sigma * eps(x_ve, uncond if branch == "uncond" else cond)

            def guided(x_ve, branch):  # (shifted prediction, shifted latent)
                wrt_x0 = self.s["gradient_wrt"] == "x0_pred"
                leaf = (denoised(x_ve, branch) if wrt_x0 else x_ve).detach().requires_grad_()
                with torch.enable_grad():  # x0_pred: the decode only; x: through the UNet too
                    (grad,) = torch.autograd.grad(self.total_loss(leaf if wrt_x0 else denoised(leaf, branch)), leaf)
                step = sigma * self.clamp(-grad, k)
                return (leaf.detach() + step if wrt_x0 else denoised(x_ve + step, branch)), x_ve + step

            if self.s["cond_uncond_sync"]:
                d, x_ve = guided(x_ve, "both")
            else:
                add_to = self.s["gradient_add_to"]
                if add_to == "cond":
                    d_u = denoised(x_ve, "uncond")
                    d_c, x_ve = guided(x_ve, "cond")
                else:
                    d_u, x_ve = guided(x_ve, "uncond")
                    d_c, x_ve = guided(x_ve, "cond") if add_to == "both" else (denoised(x_ve, "cond"), x_ve)
                d = d_u + cfg_scale * (d_c - d_u)
            out = (x_ve - d) / sigma  # the eps that the shifted prediction implies at the shifted latent
            if self.v_prediction:
                out = (out - sigma * c_in * x_ve * c_in) / c_in
            return out, x_ve * alpha


def evaluation_sigma(scheduler, t, device) -> tuple[float, float]:
    """(sigma, alpha) of this evaluation: the latent is alpha * (x0 + sigma * eps); alpha is 1 for the sigma-based
    schedulers, whose scale_model_input divides by sqrt(sigma^2 + 1) (second and midpoint evaluations included)."""
    c = float(scheduler.scale_model_input(torch.ones(1, device=device), t).flatten()[0])
    if c < 1:
        return math.sqrt(1 / c**2 - 1), 1.0
    sigmas = getattr(scheduler, "sigmas", None)  # DPM-Solver keeps VE sigmas of its (maybe Karras) schedule
    if sigmas is not None:
        sigma = float(sigmas[int((scheduler.timesteps == t).nonzero()[0, 0])])
    else:  # DDIM, PLMS
        abar = float(scheduler.alphas_cumprod[int(t)])
        sigma = math.sqrt((1 - abar) / abar)
    return sigma, 1 / math.sqrt(sigma**2 + 1)


def guide(pipe, settings: Mapping | None, **kwargs) -> Guide | None:
    """The image's Guide, or None when every scale is 0 (then sampling is exactly as without conditioning)."""
    if not settings or not gs.enabled(settings):
        return None
    with torch.inference_mode(False):
        return Guide(pipe, settings, **kwargs)
