"""The numba splat kernel against the torch one, bit for bit (index, depth bits, points in view)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin_bridge.camera import Intrinsics
from runtime.memory import backend
from runtime.memory import splat as splat_module
from runtime.memory.reference import reference_splat
from runtime.memory.splat import splat_points, splat_points_torch

pytest.importorskip("numba")
from runtime.memory import kernels, splat_fast  # noqa: E402  (after the skip: needs numba)

SQUARE = Intrinsics(fx=14.0, fy=13.0, cx=7.5, cy=5.5, width=16, height=12)
WIDE = Intrinsics(fx=31.7, fy=29.3, cx=3.3, cy=17.9, width=41, height=23)  # off-centre principal point
TALL = Intrinsics(fx=9.1, fy=12.6, cx=6.0, cy=2.25, width=7, height=30)
UNIT = Intrinsics(fx=1.0, fy=1.0, cx=0.0, cy=0.0, width=12, height=9)  # u = x, v = y, ext = radius at z=1
RULE = {"near": 0.05, "max_radius_px": 4, "depth_tolerance": 0.02}


@pytest.fixture(autouse=True)
def numba_kernel(monkeypatch):
    """Every test runs `splat_points` on the numba kernel (and counts its calls)."""
    monkeypatch.delenv("MIRAGE_SPLAT_KERNEL", raising=False)
    assert backend.splat_kernels() is splat_fast
    calls = []
    kernel = splat_fast.splat_kernel

    def counted(*args):
        calls.append(1)
        return kernel(*args)

    monkeypatch.setattr(splat_fast, "splat_kernel", counted)
    return calls


def assert_identical(xyz, radius, intrinsics, depth_bias=None, **rule):
    rule = {**RULE, **rule}
    fast = splat_points(xyz, radius, intrinsics, depth_bias=depth_bias, **rule)
    slow = splat_points_torch(xyz, radius, intrinsics, depth_bias=depth_bias, **rule)
    shape = (intrinsics.height, intrinsics.width)
    assert fast.index.shape == shape and fast.index.dtype == torch.int64
    assert fast.depth.shape == shape and fast.depth.dtype == torch.float32
    assert fast.points_in_view == slow.points_in_view
    assert torch.equal(fast.index, slow.index), (fast.index != slow.index).nonzero()[:5]
    # the depth bits, so that -0.0 / nan / inf are compared exactly too
    assert torch.equal(fast.depth.view(torch.int32), slow.depth.view(torch.int32))
    return fast


def cloud(seed, n, intrinsics, *, max_radius_px=4, snap=False, duplicates=0.0, biased=False):
    """Points over, around and behind the image; half-sizes hitting every footprint bucket.

    ``snap`` puts depths and centres on coarse grids (exact depth and distance ties); ``duplicates``
    is the fraction of points that repeat an earlier one exactly.
    """
    rng = np.random.default_rng(seed)
    w, h = intrinsics.width, intrinsics.height
    z = rng.uniform(-0.5, 6.0, n)  # some behind the camera or the near plane
    u = rng.uniform(-0.25 * w - 4, 1.25 * w + 4, n)  # off the image and straddling its borders
    v = rng.uniform(-0.25 * h - 4, 1.25 * h + 4, n)
    if snap:
        z, u, v = np.round(z * 4) / 4, np.round(u * 2) / 2, np.round(v * 2) / 2
    x = (u - intrinsics.cx) / intrinsics.fx * z
    y = (v - intrinsics.cy) / intrinsics.fy * z
    # pixel half-size: bucket j = floor(2 ext) uniform over 0 .. 2 max + 3 (past the clamp), then
    # uniform inside the bucket, with some exactly on a bucket edge
    bucket = rng.integers(0, 2 * max_radius_px + 4, n)
    ext = (bucket + np.where(rng.random(n) < 0.2, 0.0, rng.random(n))) / 2
    f_mean = (intrinsics.fx + intrinsics.fy) / 2
    radius = ext * np.abs(z) / f_mean
    xyz = np.stack((x, y, z), axis=1).astype(np.float32)
    radius = radius.astype(np.float32)
    k = int(duplicates * n)
    if k and n > 1:
        src, dst = rng.integers(0, n, k), rng.integers(0, n, k)
        xyz[dst], radius[dst] = xyz[src], radius[src]
    bias = None
    if biased:
        bias = torch.from_numpy(
            np.where(rng.random(n) < 0.5, 0.0, rng.choice([0.01, 0.3, 1.0], n)).astype(np.float32)
        )
    return torch.from_numpy(xyz), torch.from_numpy(radius), bias


@pytest.mark.parametrize("intrinsics", [SQUARE, WIDE, TALL], ids=["square", "wide", "tall"])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 60, 400, 3000])
@pytest.mark.parametrize("biased", [False, True])
def test_numba_equals_torch_on_random_clouds(intrinsics, n, biased, numba_kernel):
    for seed in range(3):
        xyz, radius, bias = cloud(1000 * n + seed, n, intrinsics, biased=biased)
        assert_identical(xyz, radius, intrinsics, depth_bias=bias)
    assert len(numba_kernel) == 3


@pytest.mark.parametrize("max_radius_px", [0, 1, 2, 3, 4, 6, 9])
def test_numba_equals_torch_for_every_footprint_bucket(max_radius_px):
    for seed, intrinsics in enumerate([SQUARE, WIDE, TALL]):
        xyz, radius, bias = cloud(seed, 500, intrinsics, max_radius_px=max_radius_px, biased=seed == 1)
        assert_identical(xyz, radius, intrinsics, depth_bias=bias, max_radius_px=max_radius_px)


@pytest.mark.parametrize("seed", range(4))
def test_numba_equals_torch_with_ties_and_duplicates(seed):
    for intrinsics in (SQUARE, WIDE):
        xyz, radius, bias = cloud(seed, 800, intrinsics, snap=True, duplicates=0.3, biased=seed % 2 == 1)
        winners = assert_identical(xyz, radius, intrinsics, depth_bias=bias)
        assert (winners.index >= 0).any()


def test_stacked_duplicates_tie_to_the_lowest_index():
    xyz = torch.tensor([[0.0, 0.0, 2.0]] * 5)
    winners = assert_identical(xyz, torch.full((5,), 0.01), SQUARE)
    assert set(winners.index.unique().tolist()) == {-1, 0}


def edge_values(rng, n, limit):
    """float32 values on and one ulp either side of integers and half-integers in [-2, limit + 2]."""
    base = rng.integers(-4, 2 * limit + 5, n).astype(np.float32) / np.float32(2)
    step = rng.integers(-2, 3, n)
    out = base.copy()
    for _ in range(2):
        out = np.where(step > 0, np.nextafter(out, np.float32(np.inf)), out)
        out = np.where(step < 0, np.nextafter(out, np.float32(-np.inf)), out)
        step = step - np.sign(step)
    special = np.float32([0.5 - 2**-25, 0.5 - 2**-24, -0.5, -(0.5 - 2**-25), 2**-30, -(2**-30), 0.0, -0.0])
    pick = rng.random(n) < 0.1
    out[pick] = rng.choice(special, int(pick.sum()))
    return out.astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_numba_equals_torch_on_pixel_and_bucket_edges(seed):
    # unit intrinsics at z = 1: u = x, v = y and ext = radius exactly, so the centres sit on (and one or
    # two ulps off) pixel centres and pixel borders, and half-sizes on (and just off) bucket edges
    rng = np.random.default_rng(seed)
    n = 600
    u = edge_values(rng, n, UNIT.width)
    v = edge_values(rng, n, UNIT.height)
    ext = np.abs(edge_values(rng, n, 5))
    z = rng.choice(np.float32([1.0, 1.0, 1.01, 1.02, 1.0404]), n)  # ties and the tolerance band's edge
    xyz = torch.from_numpy(np.stack((u * z, v * z, z), axis=1).astype(np.float32))
    radius = torch.from_numpy((ext * z).astype(np.float32))
    assert np.array_equal((xyz[:, 0] / xyz[:, 2]).numpy()[z == 1], u[z == 1])
    for max_radius_px in (1, 4):
        assert_identical(xyz, radius, UNIT, max_radius_px=max_radius_px)
    assert_identical(xyz[:120], radius[:120], UNIT, depth_bias=torch.full((120,), 0.01))
    slow = reference_splat(xyz[:150], radius[:150], UNIT, **RULE)
    fast = splat_points(xyz[:150], radius[:150], UNIT, **RULE)
    assert torch.equal(fast.index, slow.index) and fast.points_in_view == slow.points_in_view
    assert torch.equal(fast.depth, slow.depth)


def test_numba_equals_the_reference():
    xyz, radius, bias = cloud(5, 150, SQUARE, snap=True, duplicates=0.1, biased=True)
    fast = splat_points(xyz, radius, SQUARE, depth_bias=bias, **RULE)
    slow = reference_splat(xyz, radius, SQUARE, depth_bias=bias, **RULE)
    assert fast.points_in_view == slow.points_in_view
    assert torch.equal(fast.index, slow.index)
    torch.testing.assert_close(fast.depth, slow.depth, rtol=0, atol=0)


def test_numba_equals_torch_on_degenerate_values():
    # zero / negative / infinite / nan depths, radii and coordinates: culled or splatted alike
    inf, nan = float("inf"), float("nan")
    rows = [
        ([0.0, 0.0, 0.0], 0.1),
        ([1.0, 0.0, -0.0], 0.1),
        ([0.0, 0.0, inf], 0.1),
        ([inf, 0.0, 2.0], 0.1),
        ([nan, 0.0, 2.0], 0.1),
        ([0.0, nan, 2.0], 0.1),
        ([0.0, 0.0, nan], 0.1),
        ([0.0, 0.0, 2.0], nan),
        ([0.1, 0.0, 2.0], inf),
        ([0.0, 0.1, 2.0], -inf),
        ([0.2, 0.2, 2.0], -0.3),
        ([0.0, 0.0, 0.05], 0.01),  # exactly on the near plane
        ([0.0, 0.0, 0.0500001], 0.01),
        ([0.0, 0.0, 1e-30], 0.01),
        ([1e30, 1e30, 3.0], 0.01),
    ]
    xyz = torch.tensor([r[0] for r in rows], dtype=torch.float32)
    radius = torch.tensor([r[1] for r in rows], dtype=torch.float32)
    assert_identical(xyz, radius, SQUARE)
    bias = torch.tensor([0.0, 0.5, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, -3.0, inf, 0.0, 0.0, 0.0])
    assert_identical(xyz, radius, SQUARE, depth_bias=bias)


def test_input_layouts_and_dtypes_are_accepted():
    xyz, radius, bias = cloud(9, 300, WIDE, biased=True)
    expected = assert_identical(xyz, radius, WIDE, depth_bias=bias)
    transposed = xyz.T.contiguous().T  # what memory passes: a [N, 3] view of a contiguous [3, N]
    strided = torch.zeros(300, 7)[:, 2:5]
    strided[:] = xyz
    for points in (transposed, strided, xyz.double()):
        got = splat_points(points, radius.double(), WIDE, depth_bias=bias.double(), **RULE)
        assert torch.equal(got.index, expected.index) and torch.equal(got.depth, expected.depth)


def test_other_rules_and_tolerances():
    xyz, radius, bias = cloud(11, 700, SQUARE, snap=True, biased=True)
    for near, tolerance in ((0.5, 0.0), (0.05, 1e-4), (1.0, 0.3), (0.0, 0.02)):
        assert_identical(xyz, radius, SQUARE, depth_bias=bias, near=near, depth_tolerance=tolerance)


def test_work_space_is_reused_across_sizes_and_images():
    cases = [(4000, WIDE), (10, SQUARE), (2500, TALL), (0, WIDE), (6000, SQUARE), (1, TALL)]
    for n, intrinsics in cases * 2:
        xyz, radius, bias = cloud(n, n, intrinsics, biased=True)
        assert_identical(xyz, radius, intrinsics, depth_bias=bias)


def test_threads_render_at_once():
    clouds = [cloud(s, 3000, WIDE, biased=True) for s in range(4)]
    expected = [splat_points_torch(xyz, r, WIDE, depth_bias=b, **RULE) for xyz, r, b in clouds]
    failures = []

    def work(k):
        for _ in range(5):
            xyz, r, b = clouds[k]
            got = splat_points(xyz, r, WIDE, depth_bias=b, **RULE)
            if not (torch.equal(got.index, expected[k].index) and torch.equal(got.depth, expected[k].depth)):
                failures.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_the_environment_variable_forces_torch(monkeypatch, numba_kernel):
    xyz, radius, _ = cloud(3, 200, SQUARE)
    splat_points(xyz, radius, SQUARE, **RULE)
    assert len(numba_kernel) == 1
    monkeypatch.setenv("MIRAGE_SPLAT_KERNEL", "torch")
    got = splat_points(xyz, radius, SQUARE, **RULE)
    assert len(numba_kernel) == 1
    assert torch.equal(got.index, splat_points_torch(xyz, radius, SQUARE, **RULE).index)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(0, 300),
    intrinsics=st.sampled_from([SQUARE, WIDE, TALL, UNIT]),
    max_radius_px=st.integers(0, 6),
    snap=st.booleans(),
    duplicates=st.sampled_from([0.0, 0.2]),
    biased=st.booleans(),
    tolerance=st.sampled_from([0.0, 1e-4, 0.02, 0.3]),
)
def test_numba_equals_torch_property(seed, n, intrinsics, max_radius_px, snap, duplicates, biased, tolerance):
    xyz, radius, bias = cloud(
        seed, n, intrinsics, max_radius_px=max_radius_px, snap=snap, duplicates=duplicates, biased=biased
    )
    assert_identical(
        xyz, radius, intrinsics, depth_bias=bias, max_radius_px=max_radius_px, depth_tolerance=tolerance
    )


# -- free_space ------------------------------------------------------------------------------------


def observed_depth(seed, intrinsics, xyz):
    """A depth map near the points' depths (so margins are tested on both sides): unknown (0), inf
    and nan pixels, exact copies of point depths and values a tolerance away."""
    rng = np.random.default_rng(seed)
    h, w = intrinsics.height, intrinsics.width
    z = xyz[:, 2].numpy()
    base = rng.choice(z[z > 0], h * w) if (z > 0).any() else rng.uniform(0.5, 5.0, h * w)
    scale = rng.choice(np.float32([1.0, 1.02, 1.0200001, 0.98, 1.3, 0.5, 2.0]), h * w)
    depth = (base * scale).astype(np.float32)
    special = rng.random(h * w)
    depth[special < 0.08] = 0.0
    depth[(special >= 0.08) & (special < 0.14)] = np.inf
    depth[(special >= 0.14) & (special < 0.16)] = np.nan
    depth[(special >= 0.16) & (special < 0.17)] = -1.0
    return torch.from_numpy(depth.reshape(h, w))


def assert_free_space_identical(xyz, radius, depth, intrinsics, near=0.05, depth_tolerance=0.02):
    fast = splat_module.free_space(xyz, radius, depth, intrinsics, near=near, depth_tolerance=depth_tolerance)
    slow = splat_module.free_space_torch(
        xyz, radius, depth, intrinsics, near=near, depth_tolerance=depth_tolerance
    )
    assert fast.dtype == torch.bool and fast.shape == (xyz.shape[0],)
    assert torch.equal(fast, slow), (fast != slow).nonzero()[:5]
    return fast


@pytest.mark.parametrize("intrinsics", [SQUARE, WIDE, TALL, UNIT], ids=["square", "wide", "tall", "unit"])
@pytest.mark.parametrize("n", [0, 1, 50, 2000])
def test_free_space_numba_equals_torch(intrinsics, n, monkeypatch):
    calls = []
    kernel = kernels.free_space_kernel
    monkeypatch.setattr(kernels, "free_space_kernel", lambda *a: calls.append(1) or kernel(*a))
    for seed in range(3):
        xyz, radius, _ = cloud(seed + n, n, intrinsics, snap=seed == 1, duplicates=0.1)
        depth = observed_depth(seed, intrinsics, xyz)
        for near, tolerance in ((0.05, 0.02), (0.3, 0.1), (0.05, 0.0)):
            carve = assert_free_space_identical(xyz, radius, depth, intrinsics, near, tolerance)
            if n >= 2000:
                assert 0 < int(carve.sum()) < n
    assert len(calls) == 9


def test_free_space_on_pixel_edges_and_degenerate_values():
    rng = np.random.default_rng(4)
    n = 800
    u = edge_values(rng, n, UNIT.width)
    v = edge_values(rng, n, UNIT.height)
    z = rng.choice(np.float32([1.0, 1.0, 0.05, 0.0500001, 0.0, -1.0, np.inf, np.nan]), n)
    xyz = torch.from_numpy(np.stack((u * np.where(np.isfinite(z), z, 1), v, z), axis=1).astype(np.float32))
    radius = torch.from_numpy(rng.choice(np.float32([0.0, 0.01, 0.5, np.inf, np.nan, -0.1]), n))
    depth = observed_depth(1, UNIT, xyz)
    assert_free_space_identical(xyz, radius, depth, UNIT)
    assert_free_space_identical(xyz, radius, torch.zeros(UNIT.height, UNIT.width), UNIT)
    assert_free_space_identical(xyz, radius, torch.full((UNIT.height, UNIT.width), float("inf")), UNIT)


def test_free_space_layouts_and_the_torch_fallback(monkeypatch):
    xyz, radius, _ = cloud(7, 500, WIDE)
    depth = observed_depth(7, WIDE, xyz)
    expected = assert_free_space_identical(xyz, radius, depth, WIDE)
    transposed = xyz.T.contiguous().T
    got = splat_module.free_space(
        transposed, radius, depth.T.contiguous().T, WIDE, near=0.05, depth_tolerance=0.02
    )
    assert torch.equal(got, expected)
    # float64 inputs compute in float64 in torch: they stay on the torch kernel
    monkeypatch.setattr(kernels, "free_space_kernel", None)
    got = splat_module.free_space(
        xyz.double(), radius.double(), depth.double(), WIDE, near=0.05, depth_tolerance=0.02
    )
    assert torch.equal(
        got,
        splat_module.free_space_torch(
            xyz.double(), radius.double(), depth.double(), WIDE, near=0.05, depth_tolerance=0.02
        ),
    )
    monkeypatch.setenv("MIRAGE_SPLAT_KERNEL", "torch")
    assert torch.equal(
        splat_module.free_space(xyz, radius, depth, WIDE, near=0.05, depth_tolerance=0.02), expected
    )


def ulp_walk(values, steps):
    """float32 ``values`` moved ``steps`` ulps (steps: int array, same shape)."""
    out = values.astype(np.float32).copy()
    for k in range(int(np.abs(steps).max(initial=0))):
        out = np.where(steps > k, np.nextafter(out, np.float32(np.inf)), out)
        out = np.where(-steps > k, np.nextafter(out, np.float32(-np.inf)), out)
    return out


@pytest.mark.parametrize("tolerance", [0.02, 0.1, 0.3, 0.7])
def test_free_space_on_the_margin(tolerance):
    # a flat observed depth D, points a margin (tolerance D, or 2 radius) in front of it and a few
    # ulps either side: the strict comparison and the float32 rounding of the margin decide
    rng = np.random.default_rng(int(tolerance * 100))
    f32 = np.float32
    for depth_value in np.concatenate(
        (f32([1.0, 2.7182817, 9.87654, 123.456]), rng.uniform(0.5, 300, 16).astype(f32))
    ):
        n = 300
        steps = rng.integers(-3, 4, n)
        by_tolerance = rng.random(n) < 0.5
        margin = f32(tolerance) * depth_value
        z_tol = ulp_walk(np.full(n, depth_value - margin, np.float32), steps)
        z_rad = rng.uniform(0.06, float(depth_value) * 0.9, n).astype(np.float32)
        gap = (depth_value - z_rad).astype(np.float32)
        r_rad = ulp_walk(gap / f32(2), steps)
        z = np.where(by_tolerance, z_tol, z_rad).astype(np.float32)
        radius = np.where(by_tolerance, f32(0.0), r_rad).astype(np.float32)
        u = rng.uniform(1.0, UNIT.width - 2.0, n).astype(np.float32)
        v = rng.uniform(1.0, UNIT.height - 2.0, n).astype(np.float32)
        xyz = torch.from_numpy(np.stack((u * z, v * z, z), axis=1).astype(np.float32))
        depth = torch.full((UNIT.height, UNIT.width), float(depth_value))
        carve = assert_free_space_identical(xyz, torch.from_numpy(radius), depth, UNIT, 0.05, tolerance)
        assert 0 < int(carve.sum()) < n
