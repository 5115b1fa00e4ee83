"""The reference's six gradient-conditioning presets ship as example configs that render with the toy model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from deforum_steps import diffusion
from deforum_steps import gradient_settings as gs
from deforum_steps.config import load_config
from deforum_steps.dependencies import DIFFUSION_SETTINGS, diffusion_settings

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "config" / "presets").glob("*.yaml"))


def test_the_six_presets_ship():
    assert [p.stem for p in PRESETS] == [f"512x512_aesthetic_{i}" for i in range(2)] + [
        f"512x512_colormatch_{i}" for i in range(4)]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_renders_guided(preset, monkeypatch):
    monkeypatch.chdir(ROOT)  # the presets name config/presets/palette.png from the repository root
    raw = yaml.safe_load(preset.read_text())
    cfg = load_config({**raw, "W": 64, "H": 64}, ROOT / "config" / "schema.yaml")  # 64 px, 3 steps: fast
    gs.check(cfg)
    assert sum(cfg[key] != 0 for key in gs.SCALE_KEYS) == 1

    def render(settings):
        return diffusion.generate(None, diffusion_settings(settings, DIFFUSION_SETTINGS), prompt=cfg["prompts"][0],
                                  negative_prompt="", seed=1, steps=3, cfg_scale=cfg["scale"],
                                  sampler=cfg["sampler"])[1]

    guided, plain = render(cfg), render({**cfg, **{key: 0 for key in gs.SCALE_KEYS}})
    assert np.abs(guided.astype(int) - plain).max() > 0
