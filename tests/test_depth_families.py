"""Each depth model family, as a tiny random-weight model built offline and saved like the real ones: it loads
from a folder through the config-time resolution, is fed at its family's input size, and its output becomes
the depth the notebook's warp reads by its family's convention (deforum_steps.depth_models)."""
import numpy as np
import pytest
import torch

from deforum_steps import depth as depth_mod
from deforum_steps import depth_models
from deforum_steps.depth import NetworkDepth, load_depth_model, midas_preprocess, to_depth

_VIT = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64)
_NECK = dict(neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16)


def _seeded(build, seed):
    torch.manual_seed(seed)
    return build().eval()


def _hybrid_midas():
    from transformers import DPTConfig, DPTForDepthEstimation
    return DPTForDepthEstimation(DPTConfig(
        is_hybrid=True, **_VIT, image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[16, 32, 32, 32], fusion_hidden_size=16, use_auxiliary_head=False,
        backbone_featmap_shape=[1, 64, 4, 4],
        backbone_config=dict(model_type="bit", global_padding="same", layer_type="bottleneck", depths=[1, 1, 1],
                             hidden_sizes=[16, 32, 64], embedding_size=16, num_groups=4,
                             out_features=["stage1", "stage2", "stage3"], embedding_dynamic_padding=True)))


_BEIT = dict(model_type="beit", **_VIT, image_size=48, patch_size=16, out_indices=[1, 2, 3, 4],
             use_relative_position_bias=True, reshape_hidden_states=False)


def _beit_midas():
    from transformers import DPTConfig, DPTForDepthEstimation
    return DPTForDepthEstimation(DPTConfig(backbone_config=_BEIT, **_NECK, hidden_size=32, initializer_range=0.15,
                                           reassemble_factors=[4, 2, 1, 0.5], use_auxiliary_head=False))


def _depth_anything():
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation
    return DepthAnythingForDepthEstimation(DepthAnythingConfig(
        backbone_config=dict(model_type="dinov2", **_VIT, image_size=56, patch_size=14, out_indices=[1, 2, 3, 4],
                             reshape_hidden_states=False),
        reassemble_hidden_size=32, **_NECK, head_hidden_size=8, patch_size=14))


def _zoedepth():
    from transformers import ZoeDepthConfig, ZoeDepthForDepthEstimation
    return ZoeDepthForDepthEstimation(ZoeDepthConfig(
        backbone_config=_BEIT, **_NECK, hidden_size=32, reassemble_factors=[4, 2, 1, 0.5], bottleneck_features=16,
        num_relative_features=8, bin_embedding_dim=16, num_attractors=[4, 4, 2, 1], num_patch_transformer_layers=1,
        patch_transformer_hidden_size=16, patch_transformer_intermediate_size=32,
        patch_transformer_num_attention_heads=2,
        bin_configurations=[{"n_bins": 8, "min_depth": 0.001, "max_depth": 10.0, "name": "nyu"}]))


class _Recorder(torch.nn.Module):
    """Wraps a network, keeping the input it was given and its raw output."""

    def __init__(self, net):
        super().__init__()
        self.net, self.seen, self.raw = net, None, None

    def forward(self, pixel_values):
        self.seen = pixel_values
        out = self.net(pixel_values=pixel_values)
        self.raw = out.predicted_depth
        return out


# name, builder, the folder's auto name, the input size a 64 x 40 image is fed at
FAMILIES = [
    ("midas-3-hybrid", _hybrid_midas, "midas-3-hybrid", (64, 64)),  # DPTConfig.image_size, square
    ("midas-3.1-beit-large", _beit_midas, "midas-3.1-beit-large", (48, 48)),  # the BEiT backbone's size
    ("depth-anything-v2-small", _depth_anything, "depth-anything-v2-small", (518, 322)),  # aspect kept, x14
    ("zoedepth-nyu-kitti", _zoedepth, "zoedepth-nyu-kitti", (384, 256)),  # aspect kept, x32
]


@pytest.mark.parametrize("name, build, auto_name, net_size", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_family_loads_from_a_folder_and_converts_by_its_convention(tmp_path, name, build, auto_name, net_size):
    folder = tmp_path / name
    _seeded(build, 3).save_pretrained(folder)
    assert depth_models.folder_model(folder) == auto_name
    assert depth_models.find("auto", str(folder)).name == auto_name
    model = load_depth_model(name, folder, "cpu", midas_weight=1.0)
    model.net = recorder = _Recorder(model.net)
    image = np.random.default_rng(0).integers(0, 256, (64, 40, 3), dtype=np.uint8)
    depth = model.predict(image)
    assert depth.shape == (64, 40) and depth.dtype == np.float32 and np.isfinite(depth).all()
    assert tuple(recorder.seen.shape[2:]) == net_size
    raw = torch.nn.functional.interpolate(recorder.raw[:, None], size=(64, 40), mode="bicubic",
                                          align_corners=False)[0, 0].detach().numpy()
    convention = depth_models.CATALOGUE[name].convention
    expected = {"midas": (50 - raw) / 19, "relative": (50 - raw * 31 / raw.max()) / 19, "metric": raw}[convention]
    assert np.allclose(depth, expected, atol=1e-5)


def test_conventions_on_known_outputs():
    """MiDaS v3: the notebook's (50 - d) / 19; other relative inverse depth: scaled so the nearest point is at 1
    first (their scale is not MiDaS v3's); metric depth: metres as they are."""
    raw = np.array([[0.0, 12.0], [31.0, 50.0]], np.float32)
    assert np.allclose(to_depth(raw, "midas"), [[50 / 19, 2.0], [1.0, 0.0]])
    assert np.allclose(to_depth(raw, "relative"), (50 - raw * 31 / 50) / 19)
    assert np.isclose(to_depth(raw * 100, "relative").min(), 1.0)
    assert np.array_equal(to_depth(raw, "metric"), raw)
    assert [depth_models.CATALOGUE[n].convention for n in ("midas-3-large", "embedded", "depth-anything-large",
                                                           "midas-3.1-beit-large", "zoedepth-nyu")] == \
        ["midas", "midas", "relative", "relative", "metric"]


@pytest.mark.parametrize("convention, raw, near_is_near", [("midas", 30.0, True), ("relative", 3.0, True),
                                                           ("metric", 0.5, True)])
def test_every_convention_keeps_near_near_and_midas_weight_flattens(convention, raw, near_is_near):
    """A network seeing a near left half (large inverse depth, or small metres): the left half's depth is
    smaller; midas_weight 0 flattens it to 1, as the notebook's blend with a flat plane."""

    class Halves(torch.nn.Module):
        def forward(self, pixel_values):
            n, _, h, w = pixel_values.shape
            out = torch.full((n, h, w), 1.0 if convention != "metric" else 3.0)
            out[..., : w // 2] = raw
            return type("Out", (), {"predicted_depth": out})

    depth = NetworkDepth(Halves(), midas_preprocess(32), torch.device("cpu"), 1.0, convention).predict(
        np.zeros((32, 32, 3), np.uint8))
    assert depth[:, :8].mean() < depth[:, -8:].mean()
    flat = NetworkDepth(Halves(), midas_preprocess(32), torch.device("cpu"), 0.0, convention).predict(
        np.zeros((32, 32, 3), np.uint8))
    assert np.allclose(flat, 1.0)


def test_depth_anything_keeps_aspect_at_its_own_size(monkeypatch, tmp_path):
    monkeypatch.setattr(depth_mod, "DEPTH_ANYTHING_PREPROCESS", depth_mod.Preprocess(56, 14, True, (0.5,) * 3,
                                                                                    (0.5,) * 3))
    _seeded(_depth_anything, 2).save_pretrained(tmp_path / "da")
    model = load_depth_model("depth-anything", tmp_path / "da", "cpu")
    model.net = recorder = _Recorder(model.net)
    assert model.predict(np.zeros((64, 40, 3), np.uint8)).shape == (64, 40)
    assert tuple(recorder.seen.shape[2:]) == (56, 28)  # 64 x 40 scaled by 56 / 64, sides multiples of 14
