"""The client's domain types: poses from an engine's own matrix, intrinsics from K, observations with
a far plane and signed instance ids."""

from __future__ import annotations

import numpy as np
import pytest

from plugin_bridge.camera import Intrinsics
from plugin_bridge.codec import CodecError, DepthEncoding, decode_depth, decode_instance_ids
from plugin_bridge.conventions import Convention, canonical_to_engine_matrix, engine_to_canonical, look_at
from plugin_bridge.types import Observation, Pose
from plugin_bridge.wire import observation_to_proto

CANONICAL = look_at((1.0, -2.0, 1.5), (3.0, 4.0, 0.5))


@pytest.mark.parametrize("convention", list(Convention))
def test_from_matrix_takes_the_engines_own_matrix(convention):
    engine = canonical_to_engine_matrix(convention, CANONICAL)
    pose = Pose.from_matrix(engine, convention)
    back = engine_to_canonical(convention, pose.position, pose.rotation_wxyz)  # what the runtime does
    np.testing.assert_allclose(back, CANONICAL, atol=1e-9)
    same = Pose.from_canonical(CANONICAL, convention)
    np.testing.assert_allclose(same.position, pose.position, atol=1e-9)
    np.testing.assert_allclose(same.rotation_wxyz, pose.rotation_wxyz, atol=1e-9)


def test_a_canonical_matrix_read_as_opengl_is_a_different_pose():
    """The trap `from_matrix` closes: OpenGL's camera looks down -z, so the same numbers are another view."""
    wrong = engine_to_canonical("opengl", *_parts(Pose.from_matrix(CANONICAL, "opengl")))
    right = engine_to_canonical("opengl", *_parts(Pose.from_canonical(CANONICAL, "opengl")))
    np.testing.assert_allclose(right, CANONICAL, atol=1e-9)
    assert np.abs(wrong[:3, :3] - CANONICAL[:3, :3]).max() > 0.5


def _parts(pose: Pose):
    return pose.position, pose.rotation_wxyz


@pytest.mark.parametrize(
    ("matrix", "needle"),
    [
        (np.diag([2.0, 2.0, 2.0, 1.0]), "not a rotation"),
        (np.diag([-1.0, 1.0, 1.0, 1.0]), "not a rotation"),
        (np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]], dtype=float), "last row"),
        (np.full((4, 4), np.nan), "finite 4x4"),
        (np.eye(3), "finite 4x4"),
    ],
)
def test_from_matrix_refuses_what_is_not_a_camera_pose(matrix, needle):
    with pytest.raises(ValueError, match=needle):
        Pose.from_matrix(matrix, "opencv")


def test_intrinsics_from_k_state_the_pixel_centre_convention():
    k = np.array([[100.0, 0, 64.0], [0, 100.0, 48.0], [0, 0, 1]])
    half = Intrinsics.from_matrix(k, 128, 96, pixel_centers="half")
    centred = Intrinsics.from_fov(128, 96, 60.0)
    assert (half.cx, half.cy) == (63.5, 47.5) == (centred.cx, centred.cy)
    integer = Intrinsics.from_matrix(k, 128, 96)
    assert (integer.cx, integer.cy, integer.fx, integer.fy) == (64.0, 48.0, 100.0, 100.0)
    with pytest.raises(ValueError, match="skew"):
        Intrinsics.from_matrix([[100.0, 1, 64], [0, 100, 48], [0, 0, 1]], 128, 96)
    with pytest.raises(ValueError, match="pixel_centers"):
        Intrinsics.from_matrix(k, 128, 96, pixel_centers="corner")


def test_observation_far_plane_and_signed_ids():
    rgb = np.zeros((4, 6, 3), np.uint8)
    depth = np.full((4, 6), 3.0, np.float32)
    depth[0] = 40.0  # the engine's far plane
    ids = np.full((4, 6), -1, np.int64)
    ids[1, 2] = 7
    msg = observation_to_proto(Observation(Pose((0, 0, 0)), rgb, depth, instance_ids=ids, far_plane=40.0), 5)
    sent = decode_depth(msg.depth.data, DepthEncoding.FLOAT16_METERS, 6, 4)
    assert np.isinf(sent[0]).all() and (sent[1:] == 3.0).all()
    got = decode_instance_ids(msg.instance_ids, 6, 4)
    assert got[1, 2] == 7 and int(got.sum()) == 7  # negative ids are "no object", not 4294967295
    assert msg.sequence == 5
    with pytest.raises(CodecError, match="above"):
        observation_to_proto(Observation(Pose((0, 0, 0)), rgb, depth, instance_ids=ids + 2**31), 1)
    with pytest.raises(CodecError, match="integer"):
        observation_to_proto(Observation(Pose((0, 0, 0)), rgb, depth, instance_ids=ids.astype(float)), 1)
    with pytest.raises(ValueError, match="far_plane"):
        observation_to_proto(Observation(Pose((0, 0, 0)), rgb, depth, far_plane=-1.0), 1)


def test_a_negative_id_written_as_uint32_is_refused_on_decode():
    data = np.full((2, 2), 0xFFFFFFFF, dtype="<u4").tobytes()
    with pytest.raises(CodecError, match="negative id sent as uint32"):
        decode_instance_ids(data, 2, 2)


def test_pose_needs_three_and_four_values():
    with pytest.raises(ValueError, match="3 position values and 4 quaternion values"):
        Pose((0, 0), (1, 0, 0, 0))
