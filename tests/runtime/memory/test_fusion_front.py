"""The fused front: colour fusion reaches deeper where the front slopes, and only there.

A square splat holds one depth, so on a surface seen at a grazing angle the splat of a nearer sample
lies in front of the sample centred on the next pixel; a fixed tolerance would fuse only the nearer
one and smear each row of the surface onto the next. These tests hold the three implementations of
`splat.fusion_thresholds` equal and check what the rule is for: a slope renders each sample where it
is, a flat face in front of a wall, a thin pole and a depth step take nothing from behind.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plugin_bridge.camera import Intrinsics
from runtime.memory import splat, splat_fast
from runtime.memory.reference import _fused_front, reference_splat
from runtime.memory.splat import FUSION_CAP, fusion_thresholds, splat_points, splat_points_torch

INTR = Intrinsics(fx=14.0, fy=13.0, cx=7.5, cy=5.5, width=16, height=12)
RULE = {"near": 0.05, "max_radius_px": 4, "depth_tolerance": 0.02}
TOL = np.float32(1.0 + RULE["depth_tolerance"])


def test_the_kernels_share_the_rule_constants():
    for name in ("FUSION_STEP_PX", "FUSION_REACH", "FUSION_CAP"):
        assert getattr(splat_fast, name) == getattr(splat, name), name


@pytest.mark.parametrize("seed", range(6))
def test_thresholds_agree_bit_for_bit(seed):
    """torch, numba and the reference on front depths with gaps, ties, steps, slopes both ways."""
    g = np.random.default_rng(seed)
    h, w = 11, 14
    zmin = (g.random((h, w)) * 4.0 + 0.1).astype(np.float32)
    if seed % 2:  # coarse grid: equal neighbours, exact zero differences
        zmin = (np.round(zmin * 2.0) / 2.0 + 0.5).astype(np.float32)
    if seed % 3 == 0:  # a smooth slope with noise, so that one-way runs are common
        zmin = (np.linspace(1.0, 6.0, h)[:, None] + 0.01 * g.random((h, w))).astype(np.float32)
    zmin[g.random((h, w)) < 0.15] = np.inf  # pixels no fragment reaches
    twin = fusion_thresholds(torch.from_numpy(zmin), float(TOL)).numpy()
    zbits = np.full(h * w + 3, 0x7F800000, np.int32)
    zbits[: h * w] = zmin.reshape(-1).view(np.int32)
    fast = np.empty(h * w + 3, np.float32)
    splat_fast.fusion_front(zbits, TOL, w, h, fast)
    fast = fast[: h * w].reshape(h, w)
    ref = np.full((h, w), np.inf, np.float32)
    for y in range(h):
        for x in range(w):
            if np.isfinite(zmin[y, x]):
                ref[y, x] = _fused_front(zmin, y, x, TOL)
    assert np.array_equal(twin.view(np.int32), ref.view(np.int32))
    assert np.array_equal(fast.view(np.int32), ref.view(np.int32))
    finite = np.isfinite(zmin)
    assert np.all(twin[finite] >= zmin[finite] * TOL)  # never narrower than the winners' front
    assert np.all(twin[finite] <= zmin[finite] * np.float32(FUSION_CAP))


def _render(xyz, radius, rgb, bias=None):
    """The three implementations on one scene: equal bits, and the numba kernel's result."""
    xyz, radius = torch.tensor(xyz, dtype=torch.float32), torch.tensor(radius, dtype=torch.float32)
    rgb = torch.tensor(rgb, dtype=torch.uint8)
    rule = {**RULE, "depth_bias": None if bias is None else torch.tensor(bias, dtype=torch.float32)}
    fast = splat_points(xyz, radius, INTR, **rule, rgb=rgb)
    twin = splat_points_torch(xyz, radius, INTR, **rule, rgb=rgb)
    slow = reference_splat(xyz, radius, INTR, **rule, rgb=rgb)
    assert torch.equal(fast.index, slow.index) and torch.equal(twin.index, slow.index)
    assert torch.equal(fast.rgb, slow.rgb) and torch.equal(twin.rgb, slow.rgb)
    return fast


def _point(u, v, z):
    return ((u - INTR.cx) / INTR.fx * z, (v - INTR.cy) / INTR.fy * z, z)


def _grazing_rows():
    xyz, radius, rgb = [], [], []
    for v in range(INTR.height):
        z = 2.0 * 1.03 ** (INTR.height - 1 - v)
        for u in range(INTR.width):
            xyz.append(_point(float(u), float(v), z))
            radius.append(1.2 * z / INTR.fx)
            rgb.append((20 * v, 20 * v, 20 * v))
    return xyz, radius, rgb


def test_guesses_keep_to_the_plain_front():
    """The same grazing rows as generated points (a depth bias, as memory gives guesses): they fuse on
    the plain front only, so each row shows the row below's grey as the 2 % front has it."""
    xyz, radius, rgb = _grazing_rows()
    out = _render(xyz, radius, rgb, bias=[0.3] * len(xyz))
    rows = out.rgb[..., 0].numpy()[2:-2, 2:-2] * 255.0
    below = 20.0 * np.arange(3, INTR.height - 1)[:, None]
    assert np.abs(rows - below).max() < 10.0, np.round(rows[:, 0])


def test_a_grazing_surface_renders_each_sample_at_its_own_pixel():
    """One sample per pixel on a surface whose depth grows 3 % a row upwards (a floor seen at a
    grazing angle), splats 1.2 px: the row below always lies in front, beyond the 2 % tolerance of
    the sample centred on the pixel. Each row has its own grey; with the plain tolerance a row would
    show the row below's grey (it is the only front fragment), with the fused front its own."""
    out = _render(*_grazing_rows())
    grey = out.rgb[..., 0].numpy() * 255.0
    rows = grey[2:-2, 2:-2]  # away from the image border, where the slope is measured both ways
    own = 20.0 * np.arange(2, INTR.height - 2)[:, None]
    assert np.abs(rows - own).max() < 10.0, np.round(rows[:, 0])  # the row below is 20 levels off


def test_a_flat_face_in_front_of_a_wall_takes_no_colour_from_it():
    """A face 5 % in front of a wall, both fronto-parallel, and the wall's samples behind the face
    too (as another view saw them): the face's pixels show the face's colour alone."""
    xyz, radius, rgb = [], [], []
    for v in range(INTR.height):
        for u in range(INTR.width):
            xyz.append(_point(float(u), float(v), 4.0))  # the wall, everywhere
            radius.append(1.2 * 4.0 / INTR.fx)
            rgb.append((0, 0, 250))
            if 3 <= u <= 11 and 2 <= v <= 8:
                xyz.append(_point(float(u), float(v), 3.8))
                radius.append(1.2 * 3.8 / INTR.fx)
                rgb.append((250, 0, 0))
    out = _render(xyz, radius, rgb)
    face = out.rgb[2:9, 3:12].numpy() * 255.0
    assert np.all(np.abs(face - np.array([250.0, 0.0, 0.0])) < 0.5)


def test_a_thin_pole_and_a_step_keep_their_edges():
    """A pole one pixel wide 3 % in front of a flat wall, and a step down the image: the pole's
    pixels are its own colour (the front turns there, it does not run one way), and so are both
    sides of the step."""
    xyz, radius, rgb = [], [], []
    for v in range(INTR.height):
        for u in range(INTR.width):
            z = 3.0 if u < 12 else 3.4  # a step between columns 11 and 12
            xyz.append(_point(float(u), float(v), z))
            radius.append(0.9 * z / INTR.fx)
            rgb.append((0, 200, 0) if u < 12 else (0, 0, 200))
        xyz.append(_point(6.0, float(v), 2.91))
        radius.append(0.9 * 2.91 / INTR.fx)
        rgb.append((200, 0, 0))
    out = _render(xyz, radius, rgb)
    colour = out.rgb.numpy() * 255.0
    assert np.all(np.abs(colour[:, 6] - np.array([200.0, 0.0, 0.0])) < 0.5)  # the pole
    assert np.all(np.abs(colour[:, 12:] - np.array([0.0, 0.0, 200.0])) < 0.5)  # behind the step
    assert np.all(np.abs(colour[:, 8:12] - np.array([0.0, 200.0, 0.0])) < 0.5)  # in front of it
