"""Write a pipeline as a single-file checkpoint in the original (CompVis / Stability, "LDM") layout: the key names
of the `.ckpt` / `.safetensors` files users download, for any UNet/VAE/CLIP size. Tests and benchmarks use it to
make real checkpoint files from small random models; a user can use it to turn a diffusers folder into one file.

The names are the inverse of what diffusers' single-file loader reads (diffusers.loaders.single_file_utils):
`model.diffusion_model.` (UNet), `first_stage_model.` (VAE), `cond_stage_model.transformer.` (SD 1.x CLIP),
`cond_stage_model.model.` (SD 2.x OpenCLIP), `conditioner.embedders.0/1.` (SDXL's two text encoders).
"""
from __future__ import annotations

from pathlib import Path

import torch

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
          "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
            "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                  "self_attn.out_proj": "attn.out_proj"}


def unet_keys(unet) -> dict[str, str]:
    """{diffusers UNet prefix: LDM prefix} for this UNet's blocks (input_blocks / middle_block / output_blocks)."""
    n = unet.config.layers_per_block
    n = n if isinstance(n, int) else n[0]
    prefixes = dict(UNET_TOP)
    resnets = {}
    for i, block in enumerate(unet.down_blocks):
        for j in range(len(block.resnets)):
            resnets[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{1 + i * (n + 1) + j}.0"
            if getattr(block, "attentions", None):
                prefixes[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{1 + i * (n + 1) + j}.1"
        if block.downsamplers:
            prefixes[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{(i + 1) * (n + 1)}.0.op"
    resnets["mid_block.resnets.0"] = "middle_block.0"
    if getattr(unet.mid_block, "attentions", None):
        prefixes["mid_block.attentions.0"] = "middle_block.1"
        resnets["mid_block.resnets.1"] = "middle_block.2"
    for i, block in enumerate(unet.up_blocks):
        attention = bool(getattr(block, "attentions", None))
        for j in range(len(block.resnets)):
            resnets[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{i * (n + 1) + j}.0"
            if attention:
                prefixes[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{i * (n + 1) + j}.1"
        if block.upsamplers:
            last = i * (n + 1) + len(block.resnets) - 1
            prefixes[f"up_blocks.{i}.upsamplers.0"] = f"output_blocks.{last}.{2 if attention else 1}"
    for hf, ldm in resnets.items():
        prefixes.update({f"{hf}.{a}": f"{ldm}.{b}" for a, b in RESNET.items()})
    return prefixes


def vae_keys(vae) -> dict[str, str]:
    """{diffusers VAE prefix: LDM prefix}: LDM numbers the decoder's up blocks from the bottom."""
    n_up = len(vae.decoder.up_blocks)
    prefixes = {"encoder.conv_norm_out": "encoder.norm_out", "decoder.conv_norm_out": "decoder.norm_out"}
    resnets = {}
    for side in ("encoder", "decoder"):
        for j in range(2):
            resnets[f"{side}.mid_block.resnets.{j}"] = f"{side}.mid.block_{j + 1}"
        prefixes.update({f"{side}.mid_block.attentions.0.{a}": f"{side}.mid.attn_1.{b}"
                         for a, b in VAE_ATTENTION.items()})
    for i, block in enumerate(vae.encoder.down_blocks):
        for j in range(len(block.resnets)):
            resnets[f"encoder.down_blocks.{i}.resnets.{j}"] = f"encoder.down.{i}.block.{j}"
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0"] = f"encoder.down.{i}.downsample"
    for i, block in enumerate(vae.decoder.up_blocks):
        for j in range(len(block.resnets)):
            resnets[f"decoder.up_blocks.{i}.resnets.{j}"] = f"decoder.up.{n_up - 1 - i}.block.{j}"
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0"] = f"decoder.up.{n_up - 1 - i}.upsample"
    for hf, ldm in resnets.items():
        prefixes[hf] = ldm
        prefixes[f"{hf}.conv_shortcut"] = f"{ldm}.nin_shortcut"
    return prefixes


def _renamed(state: dict, prefixes: dict[str, str]) -> dict[str, torch.Tensor]:
    """`state` with each key's longest matching prefix in `prefixes` replaced (keys without one kept)."""
    longest_first = sorted(prefixes, key=len, reverse=True)
    out = {}
    for key, value in state.items():
        old = next((p for p in longest_first if key.startswith(p + ".")), "")
        out[prefixes[old] + key[len(old):] if old else key] = value
    return out


def unet_state_dict(unet) -> dict[str, torch.Tensor]:
    return {"model.diffusion_model." + k: v for k, v in _renamed(unet.state_dict(), unet_keys(unet)).items()}


def vae_state_dict(vae) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in _renamed(vae.state_dict(), vae_keys(vae)).items():
        if ".mid.attn_1." in key and key.endswith(".weight") and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)  # LDM's attention projections are 1x1 convolutions
        out["first_stage_model." + key] = value
    return out


def clip_state_dict(text_encoder, prefix: str) -> dict[str, torch.Tensor]:
    """An HF CLIPTextModel in the layout of SD 1.x's `cond_stage_model.transformer.` (OpenAI CLIP in HF names)."""
    return {prefix + "text_model." + k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}


def openclip_state_dict(text_encoder, prefix: str) -> dict[str, torch.Tensor]:
    """An HF CLIPTextModel(WithProjection) in OpenCLIP's layout (SD 2.x, SDXL's second encoder): fused q/k/v."""
    sd = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}
    out = {prefix + "token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
           prefix + "positional_embedding": sd.pop("embeddings.position_embedding.weight"),
           prefix + "ln_final.weight": sd.pop("final_layer_norm.weight"),
           prefix + "ln_final.bias": sd.pop("final_layer_norm.bias")}
    hidden = out[prefix + "token_embedding.weight"].shape[1]
    projection = sd.pop("text_projection.weight", None)
    out[prefix + "text_projection"] = (projection.T if projection is not None else torch.eye(hidden)).contiguous()
    for i in range(text_encoder.config.num_hidden_layers):
        layer = f"encoder.layers.{i}."
        block = f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[block + f"attn.in_proj_{kind}"] = torch.cat(
                [sd.pop(f"{layer}self_attn.{p}_proj.{kind}") for p in "qkv"])
            for hf, ldm in OPENCLIP_LAYER.items():
                out[block + f"{ldm}.{kind}"] = sd.pop(f"{layer}{hf}.{kind}")
    if sd:
        raise ValueError(f"text encoder weights left without an OpenCLIP name: {sorted(sd)[:3]}")
    return out


def ldm_state_dict(pipe) -> dict[str, torch.Tensor]:
    """The whole pipeline (models.Pipeline) in LDM layout: SD 1.x, SD 2.x (an OpenCLIP-sized text encoder, told
    by its gelu activation) or SDXL (two text encoders)."""
    sd = {**unet_state_dict(pipe.unet), **vae_state_dict(pipe.vae)}
    if pipe.text_encoder_2 is not None:
        sd.update(clip_state_dict(pipe.text_encoder, "conditioner.embedders.0.transformer."))
        sd.update(openclip_state_dict(pipe.text_encoder_2, "conditioner.embedders.1.model."))
    elif pipe.text_encoder.config.hidden_act == "gelu":
        sd.update(openclip_state_dict(pipe.text_encoder, "cond_stage_model.model."))
    else:
        sd.update(clip_state_dict(pipe.text_encoder, "cond_stage_model.transformer."))
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def save_checkpoint(pipe, path: str | Path, extra: dict | None = None) -> Path:
    """Write `pipe` as `path`: `.safetensors`, or `.ckpt` as torch.save({"state_dict": ..., **extra}) like the
    original releases (e.g. extra={"global_step": 875000})."""
    path = Path(path)
    sd = ldm_state_dict(pipe)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, path)
    else:
        torch.save({"state_dict": sd, **(extra or {})}, path)
    return path
