"""The vectorised splat kernel against its plain reference twin, plus the rule's known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin_bridge.camera import Camera, Intrinsics
from runtime.memory import SpatialMemory
from runtime.memory.geometry import world_to_cam_torch
from runtime.memory.reference import reference_splat
from runtime.memory.splat import splat_points, splat_points_torch

INTR = Intrinsics(fx=14.0, fy=13.0, cx=7.5, cy=5.5, width=16, height=12)
RULE = {"near": 0.05, "max_radius_px": 4, "depth_tolerance": 0.02}


def random_scene(seed: int, n: int, *, snap: bool, max_radius_px: int = 4):
    """Points spread over (and a little beyond) the image, some behind the camera or the near plane.

    With ``snap`` the depths and centres sit on coarse grids, so exact depth and distance ties occur.
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(n, generator=g) * 4.0 - 0.2  # some at or behind the near plane
    uv = torch.rand(n, 2, generator=g) * torch.tensor([22.0, 18.0]) - 3.0
    if snap:
        z = torch.round(z * 4.0) / 4.0
        uv = torch.round(uv * 2.0) / 2.0
    x = (uv[:, 0] - INTR.cx) / INTR.fx * z
    y = (uv[:, 1] - INTR.cy) / INTR.fy * z
    # half-sizes from sub-pixel to well past the clamp, in world units at each depth
    radius_px = torch.rand(n, generator=g) ** 2 * (max_radius_px + 2.0)
    radius = radius_px * z.abs() / INTR.fx
    return torch.stack((x, y, z), dim=1), radius


def assert_same(xyz, radius, intrinsics=INTR, **rule):
    """The kernel (numba where it imports), its torch twin and the reference agree bit for bit: winners,
    depth and the fused colour of random point colours."""
    rule = {**RULE, **rule}
    g = torch.Generator().manual_seed(xyz.shape[0])
    rgb = torch.randint(0, 256, (xyz.shape[0], 3), generator=g, dtype=torch.uint8)
    fast = splat_points(xyz, radius, intrinsics, **rule, rgb=rgb)
    slow = reference_splat(xyz, radius, intrinsics, **rule, rgb=rgb)
    twin = splat_points_torch(xyz, radius, intrinsics, **rule, rgb=rgb)
    assert fast.points_in_view == slow.points_in_view == twin.points_in_view
    assert torch.equal(fast.index, slow.index), (fast.index != slow.index).nonzero()[:5]
    assert torch.equal(twin.index, slow.index)
    torch.testing.assert_close(fast.depth, slow.depth, rtol=0, atol=0)
    assert torch.equal(fast.rgb, slow.rgb) and torch.equal(twin.rgb, slow.rgb), "fused colour"
    plain = splat_points(xyz, radius, intrinsics, **rule)
    assert plain.rgb is None and torch.equal(plain.index, fast.index)  # colours change no winner
    return fast


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("snap", [False, True])
def test_fast_equals_reference_on_random_scenes(seed, snap):
    n = 50 + 20 * seed  # 50..270 points
    xyz, radius = random_scene(seed, n, snap=snap)
    winners = assert_same(xyz, radius)
    assert (winners.index >= 0).any()


@pytest.mark.parametrize("seed", range(6))
def test_fast_equals_reference_with_per_point_depth_bias(seed):
    xyz, radius = random_scene(200 + seed, 200, snap=True)
    bias = (torch.rand(xyz.shape[0], generator=torch.Generator().manual_seed(seed)) < 0.5).float() * 0.3
    assert_same(xyz, radius, depth_bias=bias)


def test_a_biased_point_yields_to_an_unbiased_one_slightly_behind_it():
    # two points on the same pixel ray: the nearer one (10% in front) carries a 0.3 bias
    xyz = torch.tensor([[0.0, 0.0, 1.8], [0.0, 0.0, 2.0]])
    xyz[:, 0] = (8.0 - INTR.cx) / INTR.fx * xyz[:, 2]
    xyz[:, 1] = (6.0 - INTR.cy) / INTR.fy * xyz[:, 2]
    radius = torch.full((2,), 0.001)
    plain = splat_points(xyz, radius, INTR, **RULE)
    biased = splat_points(xyz, radius, INTR, **RULE, depth_bias=torch.tensor([0.3, 0.0]))
    assert plain.index[6, 8] == 0 and biased.index[6, 8] == 1
    assert biased.depth[6, 8] == pytest.approx(2.0)  # the reported depth is the true one


@pytest.mark.parametrize("max_radius_px", [0, 1, 2, 6])
def test_fast_equals_reference_for_other_splat_limits(max_radius_px):
    xyz, radius = random_scene(100 + max_radius_px, 150, snap=True, max_radius_px=max_radius_px)
    assert_same(xyz, radius, max_radius_px=max_radius_px)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 120),
    snap=st.booleans(),
    tolerance=st.sampled_from([0.0001, 0.02, 0.3]),
)
def test_fast_equals_reference_property(seed, n, snap, tolerance):
    xyz, radius = random_scene(seed, n, snap=snap)
    assert_same(xyz, radius, depth_tolerance=tolerance)


def test_stacked_duplicates_tie_to_the_lowest_index():
    xyz = torch.tensor([[0.0, 0.0, 2.0]] * 3)
    winners = assert_same(xyz, torch.full((3,), 0.01))  # centre (7.5, 5.5): four pixels touch it
    covered = (winners.index >= 0).nonzero().tolist()
    assert covered == [[5, 7], [5, 8], [6, 7], [6, 8]]
    assert (winners.index[winners.index >= 0] == 0).all()


def test_the_pixel_holding_the_centre_is_always_covered():
    g = torch.Generator().manual_seed(7)
    uv = torch.rand(200, 2, generator=g) * torch.tensor([15.0, 11.0])
    for u, v in uv.tolist():
        z = 3.0
        xyz = torch.tensor([[(u - INTR.cx) / INTR.fx * z, (v - INTR.cy) / INTR.fy * z, z]])
        winners = splat_points(xyz, torch.zeros(1), INTR, **RULE)  # zero radius: the 0.5 px minimum
        px, py = int(np.floor(u + 0.5)), int(np.floor(v + 0.5))
        assert winners.index[py, px].item() == 0
        assert int((winners.index == 0).sum()) <= 4


def test_a_clearly_nearer_point_wins_even_off_centre():
    # far point exactly on pixel (8, 6); near point 0.4 px off, 10% nearer (beyond the 2% tolerance)
    far = [(8.0 - INTR.cx) / INTR.fx * 4.0, (6.0 - INTR.cy) / INTR.fy * 4.0, 4.0]
    near = [(8.4 - INTR.cx) / INTR.fx * 3.6, (6.0 - INTR.cy) / INTR.fy * 3.6, 3.6]
    winners = assert_same(torch.tensor([far, near]), torch.tensor([0.01, 0.01]))
    assert winners.index[6, 8].item() == 1
    torch.testing.assert_close(winners.depth[6, 8], torch.tensor(3.6))


def test_within_tolerance_the_nearest_centre_wins():
    # both at about 4 m (1% apart, inside the 2% band): the one centred on the pixel wins
    on_pixel = [(8.0 - INTR.cx) / INTR.fx * 4.04, (6.0 - INTR.cy) / INTR.fy * 4.04, 4.04]
    off_pixel = [(8.4 - INTR.cx) / INTR.fx * 4.0, (6.0 - INTR.cy) / INTR.fy * 4.0, 4.0]
    radius = 0.7 * 4.0 / ((INTR.fx + INTR.fy) / 2)  # 0.7 px half-size
    winners = assert_same(torch.tensor([off_pixel, on_pixel]), torch.tensor([radius, radius]))
    assert winners.index[6, 8].item() == 1
    assert winners.index[6, 9].item() == 0  # 0.6 px from the first, 1 px from the second: only the first


def test_splat_size_follows_radius_and_is_clamped():
    z = 2.0
    centre = [(8.0 - INTR.cx) / INTR.fx * z, (6.0 - INTR.cy) / INTR.fy * z, z]
    f_mean = (INTR.fx + INTR.fy) / 2
    for radius_px, side in [(0.3, 1), (1.2, 3), (2.5, 5), (40.0, 9)]:
        winners = assert_same(torch.tensor([centre]), torch.tensor([radius_px * z / f_mean]))
        covered = (winners.index == 0).nonzero()
        assert covered[:, 0].max() - covered[:, 0].min() + 1 == side
        assert covered[:, 1].max() - covered[:, 1].min() + 1 == side


def test_culling_counts_only_points_in_front_and_near_the_image():
    xyz = torch.tensor(
        [
            [0.0, 0.0, 2.0],  # centre of view
            [0.0, 0.0, 0.01],  # nearer than the near plane
            [0.0, 0.0, -2.0],  # behind the camera
            [50.0, 0.0, 2.0],  # far off to the right
            [(-0.4 - INTR.cx) / INTR.fx * 2.0, 0.0, 2.0],  # centre just left of the image, square reaches it
        ]
    )
    winners = assert_same(xyz, torch.full((5,), 0.05))
    assert winners.points_in_view == 2
    assert set(winners.index.unique().tolist()) == {-1, 0, 4}


def test_empty_input_renders_nothing():
    winners = assert_same(torch.zeros(0, 3), torch.zeros(0))
    assert winners.points_in_view == 0
    assert (winners.index == -1).all() and (winners.depth == 0).all()


def test_memory_render_gathers_the_reference_winners_attributes():
    g = np.random.default_rng(3)
    memory = SpatialMemory()
    for frame in range(3):  # overlapping views of random depth maps: occlusions, mixed radii
        pose = np.eye(4)
        pose[:3, 3] = g.uniform(-0.3, 0.3, 3)
        rgb = g.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        depth = g.uniform(1.0, 3.0, (12, 16)).astype(np.float32)
        memory.ingest(Camera(INTR, pose), rgb, depth, provenance=1 + frame % 2, frame_index=frame)
    camera = Camera(INTR, np.eye(4))
    render = memory.render(camera)
    points = memory.points()
    rot, trans = world_to_cam_torch(camera, torch.device("cpu"))
    slow = reference_splat(
        (rot @ points["xyz"].T + trans[:, None]).T,
        points["radius"],
        INTR,
        **RULE,
        depth_bias=(points["provenance"] == 2).float() * memory.config.generated_depth_bias,
    )
    assert torch.equal(render.point_index, slow.index) and render.points_in_view == slow.points_in_view
    has = slow.index >= 0
    assert has.float().mean() > 0.9
    torch.testing.assert_close(render.depth, slow.depth, rtol=0, atol=0)
    fused = reference_splat(
        (rot @ points["xyz"].T + trans[:, None]).T, points["radius"], INTR, **RULE,
        depth_bias=(points["provenance"] == 2).float() * memory.config.generated_depth_bias, rgb=points["rgb"],
    )  # fmt: skip
    assert torch.equal(render.rgb, fused.rgb)  # the front surface's fused colour
    assert torch.equal(render.provenance[has], points["provenance"][slow.index[has]])
    torch.testing.assert_close(render.confidence[has], points["confidence"][slow.index[has]].float())


def test_render_and_ingest_are_deterministic():
    def build() -> tuple[SpatialMemory, Camera]:
        g = np.random.default_rng(11)
        memory = SpatialMemory()
        for frame in range(4):
            pose = np.eye(4)
            pose[:3, 3] = g.uniform(-0.2, 0.2, 3)
            rgb = g.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            depth = np.round(g.uniform(1.0, 3.0, (12, 16)), 1).astype(np.float32)  # many exact ties
            memory.ingest(Camera(INTR, pose), rgb, depth, provenance=1 + frame % 2, frame_index=frame)
        return memory, Camera(INTR, np.eye(4))

    (a, camera), (b, _) = build(), build()
    for name, values in a.points().items():
        assert torch.equal(values, b.points()[name]), name
    first, second = a.render(camera), a.render(camera)
    assert torch.equal(first.point_index, second.point_index) and torch.equal(first.rgb, second.rgb)
    assert torch.equal(first.point_index, b.render(camera).point_index)
