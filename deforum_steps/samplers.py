"""Sampler names and step counts, without torch: the workflow checks them while it plans, and
diffusion.make_scheduler turns a name into a diffusers scheduler."""
from __future__ import annotations

from deforum_steps.config import ConfigError

# Deforum name -> (diffusers scheduler class name, config overrides)
SAMPLERS = {
    "klms": ("LMSDiscreteScheduler", {}),
    "dpm2": ("KDPM2DiscreteScheduler", {}),
    "dpm2_ancestral": ("KDPM2AncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "plms": ("PNDMScheduler", {"skip_prk_steps": True}),
    "ddim": ("DDIMScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
}
# AUTOMATIC1111 webui names (a " Karras" suffix turns on Karras sigmas).
WEBUI_SAMPLERS = {
    "lms": "klms",
    "dpm2": "dpm2",
    "dpm2 a": "dpm2_ancestral",
    "heun": "heun",
    "euler": "euler",
    "euler a": "euler_ancestral",
    "plms": "plms",
    "ddim": "ddim",
    "dpm++ 2m": "dpmpp_2m",
}


def resolve_sampler(name: str) -> tuple[str, bool]:
    """(Deforum sampler name, Karras sigmas forced by a webui "… Karras" name) for a Deforum or webui name."""
    key = " ".join(str(name).lower().split())
    karras = key.endswith(" karras")
    key = key.removesuffix(" karras")
    if key in SAMPLERS and not karras:
        return key, False
    if key in WEBUI_SAMPLERS:
        return WEBUI_SAMPLERS[key], karras
    known = ", ".join(list(SAMPLERS) + ["or a webui name such as 'Euler a', 'DPM++ 2M Karras'"])
    raise ConfigError(f"sampler: unknown sampler {name!r} (one of {known})")


def denoise_steps(strength: float, steps: int, has_init: bool = True) -> int:
    """Deforum's t_enc: the denoising steps an img2img init of this strength runs, int((1 - strength) * steps),
    strength clamped to [0, 1] as in the reference; all `steps` without an init (txt2img)."""
    if not has_init:
        return int(steps)
    strength = min(max(float(strength), 0.0), 1.0)
    return int((1.0 - strength) * int(steps))
