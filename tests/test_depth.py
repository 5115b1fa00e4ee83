import gc
import threading
import time

import numpy as np
import pytest
import torch

from deforum_steps import depth as depth_mod
from deforum_steps.config import ConfigError
from deforum_steps.depth import (
    DEPTH_ANYTHING_PREPROCESS,
    FlatDepth,
    NetworkDepth,
    depth_to_png,
    load_depth_model,
    midas_preprocess,
)
from deforum_steps.motion3d import warp_3d


@pytest.fixture(scope="module")
def image(conformance):
    return np.load(conformance / "inputs" / "test_image_64x64.npy")


def test_flat_is_all_ones(image):
    for model in (FlatDepth(), load_depth_model("flat", "", "cpu")):
        d = model.predict(image[:, :48])
        assert d.dtype == np.float32 and d.shape == (64, 48) and np.all(d == 1.0)


def test_tiny_is_deterministic_fast_and_image_dependent(image):
    model = load_depth_model("tiny", "", "cpu")
    model.predict(image)  # warm-up
    start = time.perf_counter()
    d = model.predict(image)
    assert time.perf_counter() - start < 1.0
    assert d.dtype == np.float32 and d.shape == (64, 64) and np.isfinite(d).all()
    assert d.std() > 1e-3
    assert not np.allclose(d, model.predict(image[::-1].copy()))
    # a fresh network (not the cached one) gives the same depth: weights come from a fixed seed
    fresh = NetworkDepth(depth_mod.tiny_network(), midas_preprocess(64), torch.device("cpu"))
    assert np.array_equal(fresh.predict(image), d)


def test_tiny_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    depth_mod.tiny_network()
    assert torch.equal(state, torch.random.get_rng_state())


def test_network_loaded_once_per_process_and_shared_by_threads(image, monkeypatch):
    monkeypatch.setattr(depth_mod, "_networks", {})
    results = []
    threads = [threading.Thread(target=lambda: results.append(load_depth_model("tiny", "", "cpu")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(m.net) for m in results}) == 1
    assert load_depth_model("tiny", "", "cpu").net is results[0].net
    assert not any(o is results[0].net for o in gc.get_objects())  # kept for good: out of garbage collections


class _Constant(torch.nn.Module):
    """Stands in for a network: predicts the same raw MiDaS value everywhere, records the input it got."""

    def __init__(self, value):
        super().__init__()
        self.value, self.seen = value, None

    def forward(self, pixel_values):
        self.seen = pixel_values
        n, _, h, w = pixel_values.shape
        return type("Out", (), {"predicted_depth": torch.full((n, h // 2, w // 2), self.value)})


def test_conversion_and_midas_weight(image):
    """Deforum conversion (50 - d) / 19 at full resolution; midas_weight blends with a flat plane at 1."""
    net = _Constant(12.0)
    d = NetworkDepth(net, midas_preprocess(32), torch.device("cpu")).predict(image[:, :40])
    assert d.shape == (64, 40) and np.allclose(d, 2.0)
    assert tuple(net.seen.shape) == (1, 3, 32, 32)
    NetworkDepth(net, midas_preprocess(32), torch.device("cpu")).predict(np.full((8, 8, 3), 51, np.uint8))
    assert torch.allclose(net.seen, torch.tensor(-0.6))  # RGB / 255, mean 0.5, std 0.5
    for weight, expected in ((0.3, 0.3 * 2 + 0.7), (0.0, 1.0), (-1.0, 0.0)):
        d = NetworkDepth(_Constant(12.0), midas_preprocess(32), torch.device("cpu"), weight).predict(image)
        assert np.allclose(d, expected)


def test_network_input_sizes():
    assert midas_preprocess(384).net_size(512, 768) == (384, 384)
    # Depth-Anything keeps the aspect ratio, scaling as little as possible, sides multiples of 14
    assert DEPTH_ANYTHING_PREPROCESS.net_size(512, 768) == (518, 784)
    assert DEPTH_ANYTHING_PREPROCESS.net_size(768, 512) == (784, 518)
    assert DEPTH_ANYTHING_PREPROCESS.net_size(64, 96) == (350, 518)
    h, w = DEPTH_ANYTHING_PREPROCESS.net_size(1080, 1920)
    assert h % 14 == 0 and w % 14 == 0 and abs(w / h - 1920 / 1080) < 0.02


def _tiny_hybrid_midas():
    from transformers import DPTConfig, DPTForDepthEstimation
    config = DPTConfig(
        is_hybrid=True, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
        image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[16, 32, 32, 32],
        fusion_hidden_size=16, use_auxiliary_head=False, backbone_featmap_shape=[1, 64, 4, 4],
        backbone_config=dict(model_type="bit", global_padding="same", layer_type="bottleneck", depths=[1, 1, 1],
                             hidden_sizes=[16, 32, 64], embedding_size=16, num_groups=4,
                             out_features=["stage1", "stage2", "stage3"], embedding_dynamic_padding=True))
    torch.manual_seed(1)
    return DPTForDepthEstimation(config).eval()


def _tiny_depth_anything():
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation
    config = DepthAnythingConfig(
        backbone_config=dict(model_type="dinov2", hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                             intermediate_size=64, image_size=56, patch_size=14, out_indices=[1, 2, 3, 4],
                             reshape_hidden_states=False),
        reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
        patch_size=14)
    torch.manual_seed(2)
    return DepthAnythingForDepthEstimation(config).eval()


def test_hybrid_midas_folder_loads_through_the_real_path(tmp_path, image):
    """A DPT-hybrid (BiT backbone, no timm) saved with save_pretrained loads with local_files_only."""
    net = _tiny_hybrid_midas()
    net.save_pretrained(tmp_path / "midas")
    model = load_depth_model("midas-3-hybrid", tmp_path / "midas", "cpu", midas_weight=1.0)
    expected = NetworkDepth(net, midas_preprocess(64), torch.device("cpu")).predict(image[:, :40])
    assert np.array_equal(model.predict(image[:, :40]), expected)
    assert load_depth_model("midas-3-hybrid", str(tmp_path / "midas"), "cpu").net is model.net


def test_missing_or_wrong_weights_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"^depth_model_path: no MiDaS v3 DPT-Hybrid at .*nowhere \(no readable "
                                          r"config.json\); fetch Intel/dpt-hybrid-midas \(hf download "
                                          r"Intel/dpt-hybrid-midas --local-dir .*nowhere\) or use "
                                          r"depth_algorithm: auto$"):
        load_depth_model("midas-3-hybrid", tmp_path / "nowhere", "cpu")
    _tiny_depth_anything().save_pretrained(tmp_path / "da")
    with pytest.raises(ConfigError, match="holds a 'depth_anything' model, not MiDaS v3 DPT-Large"):
        load_depth_model("midas-3-large", tmp_path / "da", "cpu")
    (tmp_path / "da" / "model.safetensors").unlink()  # config without weights
    with pytest.raises(ConfigError, match="has the config of Depth-Anything v2 Small but no weights"):
        load_depth_model("depth-anything-v2-small", tmp_path / "da", "cpu")
    with pytest.raises(ConfigError, match="^depth_algorithm: unknown 'adabins'"):
        load_depth_model("adabins", "", "cpu")


def test_depth_to_png():
    depth = np.array([[1.0, 2.0], [3.0, 5.0]], np.float32)
    png = depth_to_png(depth)
    assert png.dtype == np.uint8 and png.shape == (2, 2, 3)
    assert np.array_equal(png[..., 0], [[0, 63], [127, 255]])  # near dark, truncated
    assert np.array_equal(png[..., 0], png[..., 2])
    assert not depth_to_png(np.full((3, 3), 2.0, np.float32)).any()


def test_tiny_depth_drives_warp_3d(image):
    d = load_depth_model("tiny", "", "cpu").predict(image)
    out = warp_3d(image, d, translation_x=3, translation_y=0, translation_z=10, rotation_3d_x=0,
                  rotation_3d_y=1, rotation_3d_z=0, fov=40, near=200, far=10000)
    assert out.shape == image.shape and not np.array_equal(out, image)


def _motion(depth, translation_x=0.0, translation_z=0.0, fov=40.0, near=200.0, far=10000.0):
    """How far (px) the 3D warp moves what is at pixel (32, 56) of a 64 x 64 image, read from a warped ramp."""
    ramp = np.repeat(np.linspace(0, 255, 64, dtype=np.float32)[None, :, None], 3, 2).repeat(64, 0)
    out = warp_3d(ramp, depth, translation_x=translation_x, translation_y=0, translation_z=translation_z,
                  rotation_3d_x=0, rotation_3d_y=0, rotation_3d_z=0, fov=fov, near=near, far=far,
                  sampling_mode="bilinear")
    return abs(float(out[32, 56, 0] - ramp[32, 56, 0])) * 63 / 255


def test_near_far_change_nothing_and_nearer_depth_or_narrower_fov_moves_more():
    """As in the notebook: near/far only shape the projected z; the screen motion divides by depth (forward and
    sideways) and, sideways, by tan(fov / 2): a nearer scene or a narrower fov gives more parallax."""
    depth = np.full((64, 64), 2.0, np.float32)
    for move in (dict(translation_z=20), dict(translation_x=10)):
        base = _motion(depth, **move)
        assert base > 0.5
        assert _motion(depth, near=5, far=50, **move) == base
        assert _motion(depth * 0.5, **move) > 1.5 * base
    assert _motion(depth, translation_x=10, fov=20) > 1.5 * _motion(depth, translation_x=10, fov=40)


def test_embedded_model_puts_near_things_near():
    """The committed embedded model, on generated scenes no training scene had (another seed) and on the default
    render's scene as toy_world draws it: shapes nearer than what is behind them, depth ranked like the truth."""
    from deforum_steps import depth_world, toy_world

    model = load_depth_model("embedded", "", "cpu", midas_weight=1.0)
    scenes = depth_world.scenes(seed=777, n=24, side=128)
    toys, rooms = [s for s in scenes if s.kind == "toy"], [s for s in scenes if s.kind == "room"]
    assert len(toys) >= 5 and len(rooms) >= 10
    for scene in toys:
        d, shape = model.predict(scene.image), scene.depth < scene.depth.max()
        assert np.median(d[shape]) < np.median(d[~shape])
        assert depth_world.pairs_ordered(d, scene.depth) > 0.9
    # random weights score about 0 here; bench/bench_depth.py measures the embedded model on 200 scenes
    assert np.mean([depth_world.rank_correlation(model.predict(s.image), s.depth) for s in rooms]) > 0.5
    square = toy_world.Scene("square", "red", "blue", False, 0.45, 0.55, 0.25)
    d = load_depth_model("embedded", "", "cpu", midas_weight=0.3).predict(toy_world.draw(square, 128))
    mask = toy_world.color_mask(toy_world.draw(square, 128), "red")
    assert np.median(d[mask]) + 0.05 < np.median(d[~mask]) and np.all((d > 0.3) & (d < 3))


def test_the_training_script_writes_a_model_the_embedded_loader_reads(tmp_path):
    """scripts/train_depth_model.py, a few steps: fp16 weights with their checksum, the settings and held-out scores
    recorded, and the folder loads as the embedded model (the committed one was made the same way, for 30 minutes)."""
    import hashlib
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "depth"
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_depth_model.py"
    proc = subprocess.run([sys.executable, str(script), "--steps", "3", "--scenes", "40", "--out", str(out)],
                          capture_output=True, text=True, check=True)
    assert "trained in" in proc.stdout and "held-out scenes" in proc.stdout
    weights = (out / "model.safetensors").read_bytes()
    assert (out / "SHA256SUMS").read_text() == f"{hashlib.sha256(weights).hexdigest()}  model.safetensors\n"
    record = json.loads((out / "training.json").read_text())
    assert record["steps"] == 3 and record["scenes"] == 40 and record["seed"] == 0
    assert set(record["held_out"]) == {"rooms, rank correlation", "toy frames, pairs ordered"}
    net, preprocess = depth_mod.embedded_network(out)
    with torch.inference_mode():
        assert net(torch.zeros(1, 3, 128, 128)).predicted_depth.shape == (1, 128, 128)
    assert (preprocess.size, net.fold) == (record["side"], record["fold"]) == (128, 2)


def test_the_ranking_loss_asks_for_the_order_of_small_steps():
    """The training's ranking loss on a wall tilted by 1 % in depth (a step the L1 terms hardly see): a flat
    answer costs log 2 a pair, the tilt reversed more, the tilt right (at a visible scale) little."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "train_depth_model.py"
    spec = importlib.util.spec_from_file_location("train_depth_model", path)
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)

    tilted_wall = torch.linspace(0, 0.01, 64)[None, None].expand(2, 64, 64)  # log depth: a 1% step across
    flat, right, wrong = torch.zeros_like(tilted_wall), tilted_wall * 30, -tilted_wall * 30

    def loss(pred):
        return float(train.ranking_loss(pred, tilted_wall, np.random.default_rng(0)))

    assert loss(right) < 0.5 < loss(flat) < loss(wrong)
    assert abs(loss(flat) - np.log(2)) < 1e-6  # no order given: log 2 per pair


def test_every_generated_room_has_depth_to_rank():
    """depth_world's rooms stand on a ground plane in view (its bottom rows nearer than the wall), so none is one
    depth all over, which no model could rank (Spearman is 0 on a constant truth)."""
    from deforum_steps import depth_world

    rooms = [s for s in depth_world.scenes(seed=5, n=80, side=64) if s.kind == "room"]
    assert len(rooms) >= 40
    for scene in rooms:
        bottom, top = np.median(scene.depth[-4:]), np.median(scene.depth[:4])
        assert bottom < 0.95 * top
        assert np.unique(scene.depth, return_counts=True)[1].max() < 0.9 * scene.depth.size
