"""plugin_bridge.conventions: engine pose conventions <-> the canonical (OpenCV, metres) frame."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from plugin_bridge.conventions import (
    Convention,
    canonical_to_engine,
    canonical_to_engine_matrix,
    convention_basis,
    default_units_per_meter,
    engine_matrix_to_canonical,
    engine_to_canonical,
    look_at,
    matrix_to_quat,
    quat_to_matrix,
)

ALL = list(Convention)
LEFT_HANDED = {Convention.UNITY, Convention.UNREAL}

_unit = st.floats(-1.0, 1.0, allow_nan=False)
quats = st.tuples(_unit, _unit, _unit, _unit).map(np.array).filter(lambda q: np.linalg.norm(q) > 0.1)
positions = st.tuples(*[st.floats(-1e3, 1e3, allow_nan=False)] * 3).map(np.array)


def _assert_rotation(r: np.ndarray) -> None:
    assert r.shape == (3, 3)
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-12)


def _assert_same_quat(q1: np.ndarray, q2: np.ndarray) -> None:
    q1, q2 = q1 / np.linalg.norm(q1), q2 / np.linalg.norm(q2)
    assert min(np.abs(q1 - q2).max(), np.abs(q1 + q2).max()) < 1e-9


def _axis_quat(axis, deg: float) -> np.ndarray:
    half = math.radians(deg) / 2.0
    return np.array([math.cos(half), *(math.sin(half) * np.asarray(axis, dtype=float))])


# --- quaternion <-> matrix ---------------------------------------------------------------------


@given(quats)
def test_quat_to_matrix_is_proper_rotation_and_sign_invariant(q):
    r = quat_to_matrix(q)
    _assert_rotation(r)
    np.testing.assert_allclose(quat_to_matrix(-q), r, atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(3.5 * q), r, atol=1e-12)


@given(quats)
def test_quat_matrix_round_trip(q):
    back = matrix_to_quat(quat_to_matrix(q))
    assert back[0] >= 0.0
    assert np.linalg.norm(back) == pytest.approx(1.0)
    _assert_same_quat(back, q)


@pytest.mark.parametrize("deg", [0.0, 90.0, 179.999, 180.0])
@pytest.mark.parametrize("axis", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 1)])
def test_matrix_to_quat_near_and_at_half_turn(axis, deg):
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    q = _axis_quat(axis, deg)
    _assert_same_quat(matrix_to_quat(quat_to_matrix(q)), q)


def test_quat_formula_is_hamilton_active():
    # +90 degrees about +z turns +x into +y (right-hand rule, active rotation)
    np.testing.assert_allclose(quat_to_matrix(_axis_quat((0, 0, 1), 90)) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix([1, 0, 0, 0]), np.eye(3))


# --- convention tables -------------------------------------------------------------------------


@pytest.mark.parametrize("conv", ALL)
def test_bases_are_orthogonal_with_matching_handedness(conv):
    a, b = convention_basis(conv)
    for m in (a, b):
        np.testing.assert_allclose(m.T @ m, np.eye(3), atol=0)
    expected = -1.0 if conv in LEFT_HANDED else 1.0
    assert np.linalg.det(a) == pytest.approx(expected)
    assert np.linalg.det(b) == pytest.approx(expected)


def test_explicit_determinants_and_units():
    dets = {
        c: (round(np.linalg.det(convention_basis(c)[0])), round(np.linalg.det(convention_basis(c)[1])))
        for c in ALL
    }
    assert dets == {
        Convention.OPENCV: (1, 1), Convention.OPENGL: (1, 1), Convention.GODOT: (1, 1),
        Convention.ARKIT: (1, 1), Convention.ARCORE: (1, 1), Convention.PANDA3D: (1, 1),
        Convention.UNITY: (-1, -1), Convention.UNREAL: (-1, -1),
    }  # fmt: skip
    assert {c: default_units_per_meter(c) for c in ALL} == {
        c: (100.0 if c is Convention.UNREAL else 1.0) for c in ALL
    }


def test_convention_basis_returns_copies():
    a, b = convention_basis("unity")
    a[:] = 0.0
    b[:] = 0.0
    a2, b2 = convention_basis("unity")
    np.testing.assert_array_equal(a2, np.diag([1.0, 1.0, -1.0]))
    np.testing.assert_array_equal(b2, np.diag([1.0, -1.0, 1.0]))


def test_convention_accepts_strings_case_insensitive():
    assert default_units_per_meter("UnReAl") == 100.0
    np.testing.assert_array_equal(convention_basis(" Panda3D ")[1], convention_basis(Convention.PANDA3D)[1])
    np.testing.assert_allclose(
        engine_to_canonical("OPENGL", [0, 0, 0], [1, 0, 0, 0])[:3, :3], np.diag([1.0, -1.0, -1.0])
    )


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("conv", ALL)
@given(pos=positions, q=quats)
def test_engine_canonical_round_trip(conv, pos, q):
    c2w = engine_to_canonical(conv, pos, q)
    assert c2w.shape == (4, 4) and c2w.dtype == np.float64
    np.testing.assert_array_equal(c2w[3], [0, 0, 0, 1])
    _assert_rotation(c2w[:3, :3])
    pos2, q2 = canonical_to_engine(conv, c2w)
    np.testing.assert_allclose(pos2, pos, atol=1e-9)
    _assert_same_quat(q2, q)
    assert q2[0] >= 0.0


@pytest.mark.parametrize("conv", ALL)
@given(pos=positions, q=quats, upm=st.floats(0.01, 1000.0))
def test_matrix_variants_agree_with_quaternion_variants(conv, pos, q, upm):
    engine = np.eye(4)
    engine[:3, :3] = quat_to_matrix(q)
    engine[:3, 3] = pos
    c2w = engine_to_canonical(conv, pos, q, units_per_meter=upm)
    np.testing.assert_allclose(engine_matrix_to_canonical(conv, engine, upm), c2w, atol=1e-12)
    np.testing.assert_allclose(canonical_to_engine_matrix(conv, c2w, upm), engine, atol=1e-9)
    pos2, q2 = canonical_to_engine(conv, c2w, upm)
    np.testing.assert_allclose(pos2, pos, atol=1e-9)
    _assert_same_quat(q2, q)


@pytest.mark.parametrize("conv", ALL)
def test_units_scale_translation_only(conv):
    a, _ = convention_basis(conv)
    c2w = engine_to_canonical(conv, [200.0, -50.0, 10.0], [1, 0, 0, 0], units_per_meter=100.0)
    np.testing.assert_allclose(c2w[:3, 3], a @ [2.0, -0.5, 0.1])
    default = engine_to_canonical(conv, [1.0, 2.0, 3.0], [1, 0, 0, 0])
    np.testing.assert_allclose(default[:3, 3], a @ [1.0, 2.0, 3.0] / default_units_per_meter(conv))


# --- known poses -------------------------------------------------------------------------------

# identity engine rotation: canonical (forward = R_c @ +z, up = R_c @ -y, right = R_c @ +x)
IDENTITY = {
    Convention.OPENCV: ((0, 0, 1), (0, -1, 0), (1, 0, 0)),
    Convention.OPENGL: ((0, 0, -1), (0, 1, 0), (1, 0, 0)),
    Convention.GODOT: ((0, 0, -1), (0, 1, 0), (1, 0, 0)),
    Convention.ARKIT: ((0, 0, -1), (0, 1, 0), (1, 0, 0)),
    Convention.ARCORE: ((0, 0, -1), (0, 1, 0), (1, 0, 0)),
    Convention.UNITY: ((0, 0, -1), (0, 1, 0), (1, 0, 0)),
    Convention.UNREAL: ((1, 0, 0), (0, 0, 1), (0, -1, 0)),
    Convention.PANDA3D: ((0, 1, 0), (0, 0, 1), (1, 0, 0)),
}
# the engine's own (forward, up, right) camera axes in engine coordinates
ENGINE_AXES = {
    Convention.OPENCV: ((0, 0, 1), (0, -1, 0), (1, 0, 0)),
    Convention.OPENGL: ((0, 0, -1), (0, 1, 0), (1, 0, 0)),
    Convention.GODOT: ((0, 0, -1), (0, 1, 0), (1, 0, 0)),
    Convention.ARKIT: ((0, 0, -1), (0, 1, 0), (1, 0, 0)),
    Convention.ARCORE: ((0, 0, -1), (0, 1, 0), (1, 0, 0)),
    Convention.UNITY: ((0, 0, 1), (0, 1, 0), (1, 0, 0)),
    Convention.UNREAL: ((1, 0, 0), (0, 0, 1), (0, 1, 0)),
    Convention.PANDA3D: ((0, 1, 0), (0, 0, 1), (1, 0, 0)),
}


@pytest.mark.parametrize("conv", ALL)
def test_identity_pose_axes(conv):
    r = engine_to_canonical(conv, [0, 0, 0], [1, 0, 0, 0])[:3, :3]
    a, _ = convention_basis(conv)
    fwd, up, right = IDENTITY[conv]
    e_fwd, e_up, e_right = ENGINE_AXES[conv]
    np.testing.assert_allclose(r @ [0, 0, 1], fwd, atol=1e-12)
    np.testing.assert_allclose(r @ [0, -1, 0], up, atol=1e-12)
    np.testing.assert_allclose(r @ [1, 0, 0], right, atol=1e-12)
    # the same vectors, expressed through A from the engine's own axes
    np.testing.assert_allclose(a @ e_fwd, fwd, atol=0)
    np.testing.assert_allclose(a @ e_up, up, atol=0)
    np.testing.assert_allclose(a @ e_right, right, atol=0)


def test_unreal_centimetres():
    c2w = engine_to_canonical("unreal", [100.0, 0.0, 0.0], [1, 0, 0, 0])
    np.testing.assert_allclose(c2w[:3, 3], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(
        engine_to_canonical("unreal", [0, 250, 50], [1, 0, 0, 0])[:3, 3], [0, -2.5, 0.5]
    )
    pos, q = canonical_to_engine("unreal", c2w)
    np.testing.assert_allclose(pos, [100.0, 0.0, 0.0])
    np.testing.assert_allclose(q, [1, 0, 0, 0], atol=1e-12)


def test_unity_position_flips_z():
    np.testing.assert_allclose(engine_to_canonical("unity", [1, 2, 3], [1, 0, 0, 0])[:3, 3], [1, 2, -3])


# +90 degree yaw about each engine's up axis: (axis, engine forward after, canonical forward after)
YAW = {
    # OpenCV: up is -y; +90 about -y turns left, forward +z -> -x
    Convention.OPENCV: ((0, -1, 0), (-1, 0, 0), (-1, 0, 0)),
    # right-handed y-up engines: +90 about +y turns left, forward -z -> -x
    Convention.OPENGL: ((0, 1, 0), (-1, 0, 0), (-1, 0, 0)),
    Convention.GODOT: ((0, 1, 0), (-1, 0, 0), (-1, 0, 0)),
    Convention.ARKIT: ((0, 1, 0), (-1, 0, 0), (-1, 0, 0)),
    Convention.ARCORE: ((0, 1, 0), (-1, 0, 0), (-1, 0, 0)),
    # Unity (left-handed): +90 about +y turns right, forward +z -> +x
    Convention.UNITY: ((0, 1, 0), (1, 0, 0), (1, 0, 0)),
    # Unreal (left-handed): yaw +90 about +z turns right, forward +x -> +y (canonical -y)
    Convention.UNREAL: ((0, 0, 1), (0, 1, 0), (0, -1, 0)),
    # Panda3D: heading +90 about +z turns left, forward +y -> -x
    Convention.PANDA3D: ((0, 0, 1), (-1, 0, 0), (-1, 0, 0)),
}


@pytest.mark.parametrize("conv", ALL)
def test_yaw_90_turns_the_way_the_engine_means(conv):
    axis, engine_fwd, canon_fwd = YAW[conv]
    q = _axis_quat(axis, 90.0)
    e_fwd0, e_up0, _ = ENGINE_AXES[conv]
    np.testing.assert_allclose(quat_to_matrix(q) @ e_fwd0, engine_fwd, atol=1e-12)
    r = engine_to_canonical(conv, [0, 0, 0], q)[:3, :3]
    np.testing.assert_allclose(r @ [0, 0, 1], canon_fwd, atol=1e-12)
    # a yaw keeps the camera's up where it was
    np.testing.assert_allclose(r @ [0, -1, 0], IDENTITY[conv][1], atol=1e-12)
    # turning right means the new forward is the old right, turning left its opposite
    old_right = np.asarray(IDENTITY[conv][2], dtype=float)
    turns_right = conv in LEFT_HANDED
    np.testing.assert_allclose(r @ [0, 0, 1], old_right if turns_right else -old_right, atol=1e-12)


# --- look_at -----------------------------------------------------------------------------------

vec = st.tuples(*[st.floats(-100, 100, allow_nan=False)] * 3).map(np.array)


@given(eye=vec, target=vec, up=vec)
def test_look_at_sees_target_on_axis_with_up(eye, target, up):
    d = target - eye
    assume(np.linalg.norm(d) > 1e-3 and np.linalg.norm(up) > 1e-3)
    assume(np.linalg.norm(np.cross(d / np.linalg.norm(d), up / np.linalg.norm(up))) > 1e-3)
    c2w = look_at(eye, target, up)
    r, t = c2w[:3, :3], c2w[:3, 3]
    _assert_rotation(r)
    np.testing.assert_allclose(t, eye)
    p = r.T @ (target - t)  # target in camera coordinates
    assert abs(p[0]) < 1e-9 * max(1.0, np.linalg.norm(d)) and abs(p[1]) < 1e-9 * max(1.0, np.linalg.norm(d))
    assert p[2] == pytest.approx(np.linalg.norm(d))
    image_up = r @ [0, -1, 0]
    u = up / np.linalg.norm(up)
    z = d / np.linalg.norm(d)
    u_perp = u - (u @ z) * z
    np.testing.assert_allclose(image_up, u_perp / np.linalg.norm(u_perp), atol=1e-6)


def test_look_at_known():
    c2w = look_at([0, 0, 0], [1, 0, 0])  # default up +z
    np.testing.assert_allclose(c2w[:3, :3] @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(c2w[:3, :3] @ [0, -1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(c2w[:3, :3] @ [1, 0, 0], [0, -1, 0], atol=1e-12)
    # matches Unreal's identity camera
    np.testing.assert_allclose(c2w, engine_to_canonical("unreal", [0, 0, 0], [1, 0, 0, 0]), atol=1e-12)


def test_look_at_degenerate():
    with pytest.raises(ValueError):
        look_at([1, 2, 3], [1, 2, 3])
    with pytest.raises(ValueError):
        look_at([0, 0, 0], [0, 0, 5])  # parallel to default up
    with pytest.raises(ValueError):
        look_at([0, 0, 0], [0, 0, -5], up=(0, 0, 2))
    with pytest.raises(ValueError):
        look_at([0, 0, 0], [1, 0, 0], up=(0, 0, 0))


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("conv", ALL)
def test_bad_pose_input(conv):
    with pytest.raises(ValueError):
        engine_to_canonical(conv, [0, np.nan, 0], [1, 0, 0, 0])
    with pytest.raises(ValueError):
        engine_to_canonical(conv, [0, 0, 0], [1, np.nan, 0, 0])
    with pytest.raises(ValueError):
        engine_to_canonical(conv, [0, 0, np.inf], [1, 0, 0, 0])
    with pytest.raises(ValueError):
        engine_to_canonical(conv, [0, 0, 0], [0, 0, 0, 0])
    with pytest.raises(ValueError):
        engine_to_canonical(conv, [0, 0], [1, 0, 0, 0])
    with pytest.raises(ValueError):
        engine_to_canonical(conv, [0, 0, 0], [1, 0, 0, 0], units_per_meter=0.0)
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(ValueError):
        canonical_to_engine(conv, bad)
    with pytest.raises(ValueError):
        engine_matrix_to_canonical(conv, np.eye(3))


def test_bad_quaternions():
    for q in ([0, 0, 0, 0], [np.nan, 0, 0, 1], [np.inf, 0, 0, 0], [1, 0, 0]):
        with pytest.raises(ValueError):
            quat_to_matrix(q)
    with pytest.raises(ValueError):
        matrix_to_quat(np.full((3, 3), np.nan))


def test_huge_quaternions_keep_their_direction():
    """Components whose squares overflow (the fuzzer sends them) still give their rotation."""
    with np.errstate(all="raise"):
        r = quat_to_matrix([1e300, 1e300, 0.0, 0.0])
    assert np.allclose(r, quat_to_matrix([1.0, 1.0, 0.0, 0.0]))


@pytest.mark.parametrize("name", ["vulkan", "", "open gl", 3, None])
def test_unknown_convention(name):
    with pytest.raises(ValueError, match="opencv.*panda3d"):
        engine_to_canonical(name, [0, 0, 0], [1, 0, 0, 0])
    with pytest.raises(ValueError):
        default_units_per_meter(name)
    with pytest.raises(ValueError):
        convention_basis(name)
