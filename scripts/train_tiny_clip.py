"""Train the builtin tiny CLIP (vision + text towers, transformers CLIPModel) and its aesthetic head on the toy world
of deforum_steps.toy_world, so that gradient conditioning's CLIP and aesthetics losses can be tested offline.

Images are 64 px toy scenes with their long or short captions. Augmentations mimic what the guidance feeds CLIP:
random resized crops (cutouts), down-then-up sampling to 8 or 16 px (linear-decoded toy latents), blur, noise and
colour jitter (blurry high-sigma x0 predictions). Captions repeat within a batch, so the contrastive loss is a
symmetric cross-entropy against soft targets: uniform over every caption the scene fits (a short caption fits
any background). The aesthetic head is a ridge fit of Linear(d, 1) on sqrt(d)-scaled unit embeddings, taken the
way the aesthetics loss takes them (nearest resize of [-1, 1] pixels), to the synthetic rating
1 + 9 * (fraction of the image the shape covers). Prints seed, time and held-out zero-shot accuracy.

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python scripts/train_tiny_clip.py --seed 0 --out models/tiny_clip
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from deforum_steps import toy_world

TOY_TOKENIZER = Path(__file__).resolve().parents[1] / "models" / "toy" / "tokenizer"
SIDE, MAX_TOKENS = 64, 16
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def render(scenes: list[toy_world.Scene]) -> torch.Tensor:
    """(n, 3, 64, 64) float in [0, 1]."""
    return torch.from_numpy(np.stack([toy_world.draw(s, SIDE) for s in scenes])).permute(0, 3, 1, 2).float() / 255


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = len(images)
    size = int(SIDE * (0.7 + 0.3 * torch.rand((), generator=gen)))  # random resized crop, 70-100 % of the side
    offsets = torch.randint(0, SIDE - size + 1, (n, 2), generator=gen).tolist()
    crops = torch.stack([im[:, y : y + size, x : x + size] for im, (y, x) in zip(images, offsets)])
    out = F.interpolate(crops, size=SIDE, mode="bilinear")
    kind = torch.randint(0, 5, (n,), generator=gen)  # 0, 1: sharp; 2: 16 px; 3: blurred; 4: 8 px
    for low, k in ((16, 2), (8, 4)):  # linear-decoded latents: 16 or 8 px, replicated up
        sel = kind == k
        if sel.any():
            out[sel] = F.interpolate(F.adaptive_avg_pool2d(out[sel], low), size=SIDE, mode="nearest")
    sel = kind == 3
    if sel.any():  # blur (x0 predictions at high sigma)
        out[sel] = F.avg_pool2d(out[sel], 5, 1, 2, count_include_pad=False)
    jitter = 1 + 0.15 * (torch.rand(n, 3, 1, 1, generator=gen) - 0.5)
    noise = 0.05 * torch.rand(n, 1, 1, 1, generator=gen) * torch.randn(out.shape, generator=gen)
    return (out * jitter + noise).clamp(0, 1)


def normalize(images01: torch.Tensor) -> torch.Tensor:
    return (images01 - MEAN) / STD


def fits(scene: toy_world.Scene, caption: str) -> bool:
    return caption in (scene.caption(), scene.caption(short=True))


def build(seed: int) -> CLIPModel:
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=576, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=MAX_TOKENS, bos_token_id=574,
                         eos_token_id=575, pad_token_id=575),
        vision_config=dict(image_size=SIDE, patch_size=8, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4),
        projection_dim=64)
    return CLIPModel(config)


def features(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("models/tiny_clip"))
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--scenes", type=int, default=4000)
    parser.add_argument("--minutes", type=float, default=12.0, help="stop training after this long")
    args = parser.parse_args()
    start = time.time()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    train_scenes = toy_world.scenes(args.seed, args.scenes)
    test_scenes = toy_world.scenes(args.seed + 1000, 500)
    images = render(train_scenes)
    tokenizer = CLIPTokenizer.from_pretrained(TOY_TOKENIZER, model_max_length=MAX_TOKENS)
    captions = sorted({c for s in train_scenes for c in (s.caption(), s.caption(short=True))})
    tokens = tokenizer(captions, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                       return_tensors="pt").input_ids
    caption_index = {c: i for i, c in enumerate(captions)}
    # fit[i, j]: scene i fits caption j
    fit = torch.tensor([[fits(s, c) for c in captions] for s in train_scenes], dtype=torch.bool)
    model = build(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    model.train()
    done = 0
    for step in range(args.steps):
        # cosine decay over whichever runs out first, the steps or the time budget
        progress = max(step / args.steps, (time.time() - start) / (args.minutes * 60))
        if progress >= 1:
            break
        for group in opt.param_groups:
            group["lr"] = 2e-3 * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * progress))
        idx = torch.randint(0, len(train_scenes), (args.batch,), generator=gen)
        short = torch.rand(args.batch, generator=gen) < 0.5
        cap = [caption_index[train_scenes[i].caption(short=bool(s))] for i, s in zip(idx.tolist(), short)]
        img = features(model.get_image_features(pixel_values=normalize(augment(images[idx], gen))))
        txt = features(model.get_text_features(input_ids=tokens[cap]))
        img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T
        target = fit[idx][:, cap].float()
        loss = (torch.sum(-F.log_softmax(logits, 1) * target / target.sum(1, keepdim=True), 1).mean()
                + torch.sum(-F.log_softmax(logits.T, 1) * target.T / target.T.sum(1, keepdim=True), 1).mean()) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += 1
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.3f} {time.time() - start:.0f}s", flush=True)
    model.eval()
    accuracy = evaluate(model, tokenizer, test_scenes)
    head = fit_aesthetic_head(model, train_scenes[:2000], gen)
    save(model, tokenizer, head, args, accuracy, done, time.time() - start)


def text_features(model, tokenizer, texts: list[str]) -> torch.Tensor:
    ids = tokenizer(texts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids
    return F.normalize(features(model.get_text_features(input_ids=ids)), dim=-1)


@torch.no_grad()
def evaluate(model, tokenizer, scenes: list[toy_world.Scene]) -> dict:
    """Held-out zero-shot accuracy: colour among 7 ("a <c> <true shape>"), shape among 4, on clean images and on
    images through 16 px (what a linear-decoded 128 px toy render looks like)."""
    result = {}
    clean = render(scenes)
    low = F.interpolate(F.adaptive_avg_pool2d(clean, 16), size=SIDE, mode="nearest")
    colors, shapes = list(toy_world.SHAPE_COLORS), list(toy_world.SHAPES)
    for name, batch in (("clean", clean), ("16px", low)):
        img = F.normalize(features(model.get_image_features(pixel_values=normalize(batch))), dim=-1)
        color_ok = shape_ok = 0
        for s, e in zip(scenes, img):
            color_ok += colors[int((text_features(model, tokenizer, [f"a {c} {s.shape}" for c in colors]) @ e)
                                   .argmax())] == s.color
            shape_ok += shapes[int((text_features(model, tokenizer, [f"a {s.color} {h}" for h in shapes]) @ e)
                                   .argmax())] == s.shape
        result[f"color_accuracy_{name}"] = color_ok / len(scenes)
        result[f"shape_accuracy_{name}"] = shape_ok / len(scenes)
    return result


@torch.no_grad()
def fit_aesthetic_head(model, scenes: list[toy_world.Scene], gen: torch.Generator) -> dict:
    clean = render(scenes)
    rgb = (clean.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    rating = torch.tensor([1 + 9 * float(toy_world.color_mask(im, s.color).mean()) for im, s in zip(rgb, scenes)])
    batch = torch.cat([clean, augment(clean, gen)])
    # the aesthetics loss feeds CLIP [-1, 1] pixels, nearest-resized, unnormalised (the reference's way)
    emb = features(model.get_image_features(pixel_values=F.interpolate(batch * 2 - 1, size=SIDE, mode="nearest")))
    d = emb.shape[1]
    x = F.normalize(emb, dim=-1).double() * d**0.5
    y = torch.cat([rating, rating]).double()
    xm, ym = x.mean(0), y.mean()
    w = torch.linalg.solve((x - xm).T @ (x - xm) + torch.eye(d, dtype=torch.float64), (x - xm).T @ (y - ym))
    b = ym - xm @ w
    pred = x @ w + b
    r2 = 1 - ((pred - y) ** 2).sum() / ((y - ym) ** 2).sum()
    return {"linear.weight": w.float()[None], "linear.bias": b.float()[None], "r2": float(r2)}


def save(model, tokenizer, head, args, accuracy, steps_run, seconds) -> None:
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": MEAN.flatten().tolist(), "image_std": STD.flatten().tolist(), "size": SIDE}, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in head.items() if k != "r2"}, out / "aesthetic_head.safetensors")
    info = {"seed": args.seed, "steps": steps_run, "batch": args.batch, "scenes": args.scenes,
            "seconds": round(seconds), "aesthetic_head_r2": round(head["r2"], 3),
            **{k: round(v, 3) for k, v in accuracy.items()}, "torch": torch.__version__}
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    sums = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}"
            for p in sorted(out.iterdir()) if p.suffix == ".safetensors"]
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
