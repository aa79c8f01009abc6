"""Scene families: deterministic worlds that keep the camera ring clear, rendered by Panda3D with the
sky each family promises (none indoors)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.scenes.families import FAMILIES, family_scene, fractal_noise, tiles_texture
from runtime.scenes.panda_source import PandaSceneSource, SceneConfig
from runtime.scenes.paths import out_and_back


def test_a_family_world_is_a_function_of_family_and_seed():
    for family in FAMILIES:
        a, b, c = family_scene(family, 3), family_scene(family, 3), family_scene(family, 4)
        assert a.shapes == b.shapes and a.sky == b.sky and a.ground == b.ground
        assert all(np.array_equal(a.textures[k], b.textures[k]) for k in a.textures)
        assert a.shapes != c.shapes  # another seed, another world
        for shape in a.shapes:
            if shape.material.texture is not None:
                assert shape.material.texture in a.textures
    with pytest.raises(ValueError, match="unknown scene family 'moon'; valid: tiled_yard"):
        family_scene("moon")


def test_families_differ_in_what_a_tuning_could_get_used_to():
    scenes = {f: family_scene(f, 0) for f in FAMILIES}
    assert scenes["hall"].sky is None and all(scenes[f].sky is not None for f in FAMILIES if f != "hall")
    grounds = {f: (s.ground.texture, s.ground.colour) for f, s in scenes.items()}
    assert len(set(grounds.values())) == len(FAMILIES)  # tiled, noise, flat, planks, sand
    assert scenes["plaza"].ground.texture is None  # one flat colour
    horizons = {s.sky.horizon for s in scenes.values() if s.sky is not None}
    assert len(horizons) == len(FAMILIES) - 1
    kinds = {f: {shape.kind for shape in s.shapes} for f, s in scenes.items()}
    assert "cylinder" in kinds["plaza"] and "sphere" in kinds["meadow"] and "box" in kinds["tiled_yard"]


@pytest.mark.parametrize("family", FAMILIES)
def test_no_shape_stands_where_the_camera_walks(family):
    for seed in range(4):
        scene = family_scene(family, seed)
        for path_seed in range(3):
            eyes = np.array([p[:3, 3] for p in out_and_back(400, seed=path_seed)[:400]])
            for shape in scene.shapes:
                a = math.radians(shape.heading_deg)
                rel = eyes[:, :2] - shape.centre[:2]
                local = rel @ np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
                sx, sy, sz = shape.size
                inside = (np.abs(local[:, 0]) < sx / 2 + 0.2) & (np.abs(local[:, 1]) < sy / 2 + 0.2)
                inside &= (eyes[:, 2] > shape.centre[2] - 0.2) & (eyes[:, 2] < shape.centre[2] + sz + 0.2)
                assert not inside.any(), (family, seed, path_seed, shape)


def test_textures_tile_seamlessly():
    noise = fractal_noise(np.random.default_rng(0), 128)
    step = np.abs(np.diff(noise, axis=1)).mean()
    assert np.abs(noise[:, 0] - noise[:, -1]).mean() < 3 * step  # the wrap is no seam
    tiles = tiles_texture((1, 1, 1), (0, 0, 0), (0.5, 0.5, 0.5), n=4, size=64)
    assert tiles.shape == (64, 64, 3) and tiles.dtype == np.uint8
    assert (tiles[8, 8] == 255).all() and (tiles[8, 24] == 0).all() and (tiles[0, 8] == 128).all()


def test_families_render_with_their_sky_and_deterministically():
    pose = out_and_back(40, seed=0)[20]
    frames = {}
    for family in FAMILIES:
        with PandaSceneSource(SceneConfig(name=family, width=48, height=48)) as source:
            rgb, depth = source.render(pose)
            again, again_depth = source.render(pose)
        assert np.array_equal(rgb, again) and np.array_equal(depth, again_depth)
        sky = np.isinf(depth)
        if family == "hall":
            assert not sky.any() and np.nanmax(depth) < 40.0  # indoors: walls and ceiling close every view
        else:
            assert sky.mean() > 0.05 and (~sky).mean() > 0.3  # sky above, ground below
            sky_spec = family_scene(family).sky
            lo = np.minimum(sky_spec.horizon, sky_spec.zenith) * 255 - 8
            hi = np.maximum(sky_spec.horizon, sky_spec.zenith) * 255 + 8
            assert ((rgb[sky] >= lo) & (rgb[sky] <= hi)).all()  # between the horizon's and the zenith's
        frames[family] = rgb
    means = [frames[f].reshape(-1, 3).mean(0) for f in FAMILIES]
    assert min(np.abs(a - b).max() for i, a in enumerate(means) for b in means[i + 1 :]) > 5
    with PandaSceneSource(SceneConfig(name="meadow", width=48, height=48, seed=1)) as other:
        assert not np.array_equal(other.render(pose)[0], frames["meadow"])
