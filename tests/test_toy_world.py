"""The toy world the demo model is trained on: seeded scenes whose captions name what is drawn."""
import numpy as np
import pytest

from deforum_steps import toy_world


def test_toy_world_is_deterministic():
    assert toy_world.scenes(3, 20) == toy_world.scenes(3, 20) != toy_world.scenes(4, 20)
    scene = toy_world.scenes(3, 1)[0]
    assert np.array_equal(toy_world.draw(scene, 64), toy_world.draw(scene, 64))


def test_captions_name_what_is_drawn():
    for scene in toy_world.scenes(0, 60):
        image = toy_world.draw(scene, 64)
        background = (scene.background, "black") if scene.gradient else (scene.background,)
        assert toy_world.dominant_color(image, exclude=background) == scene.color, scene
        assert scene.caption() == f"a {scene.color} {scene.shape} on a {scene.background} " + (
            "gradient" if scene.gradient else "background")
        top_row = image[0].astype(float)  # the top row is pure background unless the shape reaches it
        if scene.cy + toy_world.bounds(scene.shape, scene.size, scene.angle)[0][1] > 2 / 64:
            assert np.abs(top_row - toy_world.BACKGROUND_COLORS[scene.background]).max() < 3


@pytest.mark.parametrize("side", [64, 128])
def test_shape_measures_order_the_drawn_shapes(side):
    rng = np.random.default_rng(1)
    for _ in range(5):
        circ, fill = {}, {}
        for shape in toy_world.SHAPES:
            scene = toy_world.sample_scene(rng, shape=shape)
            mask = toy_world.color_mask(toy_world.draw(scene, side), scene.color)
            circ[shape], fill[shape] = toy_world.circularity(mask), toy_world.extent(mask)
        assert circ["circle"] > 0.84 > circ["square"] > circ["triangle"] > circ["star"], circ
        assert fill["square"] > 0.89 > fill["circle"] > fill["triangle"] > fill["star"], fill


@pytest.mark.parametrize("shape", ["square", "triangle", "star"])
def test_turn_and_scale_measures_how_a_drawn_shape_moved(shape):
    before = toy_world.Scene(shape, "red", "blue", False, 0.45, 0.5, 0.2, angle=10)
    after = toy_world.Scene(shape, "red", "blue", False, 0.55, 0.45, 0.2 * 1.1, angle=16.5)
    masks = [toy_world.color_mask(toy_world.draw(s, 128), "red") for s in (before, after)]
    turn, scale = toy_world.turn_and_scale(*masks)
    assert turn == pytest.approx(6.5, abs=0.5) and scale == pytest.approx(1.1, abs=0.02)
    assert toy_world.turn_and_scale(masks[1], masks[0])[0] == pytest.approx(-6.5, abs=0.5)
    assert toy_world.turn_and_scale(masks[0], np.zeros_like(masks[0])) == (0.0, 1.0)
