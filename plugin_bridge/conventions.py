"""Engine pose conventions <-> the canonical frame (pure numpy, no engine imports).

Canonical frame (see docs/conventions.md): world right-handed, metres; a pose is a camera-to-world
4x4 float64 matrix; camera axes as OpenCV (x right, y down, z forward); quaternions are written
(w, x, y, z), Hamilton product, active rotation.

Each engine convention is a world basis change ``A`` (engine world -> canonical world), a camera basis
``B`` (OpenCV camera -> engine camera; its columns are the engine-frame images of the OpenCV x, y, z
axes) and a default number of units per metre::

    R_c = A @ R_e @ B          t_c = A @ t_e / units_per_meter
    R_e = A.T @ R_c @ B.T      t_e = A.T @ t_c * units_per_meter

``det(A) == det(B)`` (-1 for left-handed engines), so ``R_c`` is always a proper rotation.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "Convention",
    "canonical_to_engine",
    "canonical_to_engine_matrix",
    "convention_basis",
    "default_units_per_meter",
    "engine_matrix_to_canonical",
    "engine_to_canonical",
    "look_at",
    "matrix_to_quat",
    "quat_to_matrix",
]


class Convention(str, Enum):  # noqa: UP042 - (str, Enum) is the agreed public API
    """Pose conventions a session may declare."""

    OPENCV = "opencv"
    OPENGL = "opengl"
    UNITY = "unity"
    UNREAL = "unreal"
    GODOT = "godot"
    ARKIT = "arkit"
    ARCORE = "arcore"
    PANDA3D = "panda3d"


_I3 = np.eye(3)
_GL_CAMERA = np.diag([1.0, -1.0, -1.0])  # x right, y up, looks down -z
# columns: engine-camera images of OpenCV x (right), y (down), z (forward)
_UNREAL_CAMERA = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
_PANDA_CAMERA = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

# convention -> (A: engine world -> canonical world, B: OpenCV camera -> engine camera, units per metre)
_TABLE: dict[Convention, tuple[np.ndarray, np.ndarray, float]] = {
    Convention.OPENCV: (_I3, _I3, 1.0),
    Convention.OPENGL: (_I3, _GL_CAMERA, 1.0),
    Convention.GODOT: (_I3, _GL_CAMERA, 1.0),
    Convention.ARKIT: (_I3, _GL_CAMERA, 1.0),
    Convention.ARCORE: (_I3, _GL_CAMERA, 1.0),
    Convention.UNITY: (np.diag([1.0, 1.0, -1.0]), np.diag([1.0, -1.0, 1.0]), 1.0),
    Convention.UNREAL: (np.diag([1.0, -1.0, 1.0]), _UNREAL_CAMERA, 100.0),
    Convention.PANDA3D: (_I3, _PANDA_CAMERA, 1.0),
}


def _convention(convention: Convention | str) -> Convention:
    """The enum member for ``convention`` (enum or case-insensitive string value)."""
    if isinstance(convention, Convention):
        return convention
    if isinstance(convention, str):
        try:
            return Convention(convention.strip().lower())
        except ValueError:
            pass
    valid = ", ".join(c.value for c in Convention)
    raise ValueError(f"unknown pose convention {convention!r}; valid: {valid}")


def _finite(x: ArrayLike, shape: tuple[int, ...], name: str) -> np.ndarray:
    """``x`` as a float64 array of ``shape``; ValueError if the shape is wrong or any value not finite."""
    a = np.asarray(x, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite, got {a.tolist()}")
    return a


def _units(convention: Convention, units_per_meter: float | None) -> float:
    upm = _TABLE[convention][2] if units_per_meter is None else float(units_per_meter)
    if not (np.isfinite(upm) and upm > 0.0):
        raise ValueError(f"units_per_meter must be finite and > 0, got {units_per_meter!r}")
    return upm


def default_units_per_meter(convention: Convention | str) -> float:
    """Engine units in one metre (100 for Unreal's centimetres, 1 otherwise)."""
    return float(_TABLE[_convention(convention)][2])


def convention_basis(convention: Convention | str) -> tuple[np.ndarray, np.ndarray]:
    """Copies of (A [3,3]: engine world -> canonical world, B [3,3]: OpenCV camera -> engine camera)."""
    a, b, _ = _TABLE[_convention(convention)]
    return a.copy(), b.copy()


def quat_to_matrix(q_wxyz: ArrayLike) -> np.ndarray:
    """Rotation matrix [3,3] of a quaternion [4] (w, x, y, z); normalised first, q and -q agree."""
    q = _finite(q_wxyz, (4,), "quaternion")
    big = np.max(np.abs(q))
    if big > 1e150:  # scaled first: the squares of components near 1e155 and above overflow
        q = q / big
    n = np.linalg.norm(q)
    if n < 1e-12:
        raise ValueError("quaternion must be non-zero")
    w, x, y, z = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quat(r: ArrayLike) -> np.ndarray:
    """Unit quaternion [4] (w, x, y, z) with w >= 0 of a rotation matrix [3,3] (Shepperd's method)."""
    m = _finite(r, (3, 3), "rotation matrix")
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    # pick the largest of 4w^2, 4x^2, 4y^2, 4z^2 as the pivot: no cancellation near 180 degrees
    i = int(np.argmax([tr, m[0, 0], m[1, 1], m[2, 2]]))
    if i == 0:
        s = 2.0 * np.sqrt(max(1.0 + tr, 0.0))
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif i == 1:
        s = 2.0 * np.sqrt(max(1.0 + m[0, 0] - m[1, 1] - m[2, 2], 0.0))
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif i == 2:
        s = 2.0 * np.sqrt(max(1.0 - m[0, 0] + m[1, 1] - m[2, 2], 0.0))
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(max(1.0 - m[0, 0] - m[1, 1] + m[2, 2], 0.0))
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    if not s > 1e-12:
        raise ValueError("not a rotation matrix")
    q = np.asarray(q, dtype=np.float64)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0.0 else q


def _pose(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 homogeneous matrix from a rotation [3,3] and a translation [3]."""
    out = np.eye(4)
    out[:3, :3] = r
    out[:3, 3] = t
    return out


def engine_matrix_to_canonical(
    convention: Convention | str, engine_cam_to_world: ArrayLike, units_per_meter: float | None = None
) -> np.ndarray:
    """Engine camera-to-world [4,4] (engine axes and units, no scale) -> canonical [4,4]."""
    conv = _convention(convention)
    m = _finite(engine_cam_to_world, (4, 4), "engine_cam_to_world")
    a, b, _ = _TABLE[conv]
    upm = _units(conv, units_per_meter)
    return _pose(a @ m[:3, :3] @ b, a @ m[:3, 3] / upm)


def canonical_to_engine_matrix(
    convention: Convention | str, cam_to_world: ArrayLike, units_per_meter: float | None = None
) -> np.ndarray:
    """Canonical camera-to-world [4,4] -> engine camera-to-world [4,4] (engine axes and units)."""
    conv = _convention(convention)
    m = _finite(cam_to_world, (4, 4), "cam_to_world")
    a, b, _ = _TABLE[conv]
    upm = _units(conv, units_per_meter)
    return _pose(a.T @ m[:3, :3] @ b.T, a.T @ m[:3, 3] * upm)


def engine_to_canonical(
    convention: Convention | str,
    position: ArrayLike,
    quaternion_wxyz: ArrayLike,
    units_per_meter: float | None = None,
) -> np.ndarray:
    """Engine position [3] (engine units) + rotation quaternion [4] (w, x, y, z) -> canonical [4,4]."""
    t = _finite(position, (3,), "position")
    r = quat_to_matrix(quaternion_wxyz)
    return engine_matrix_to_canonical(convention, _pose(r, t), units_per_meter)


def canonical_to_engine(
    convention: Convention | str, cam_to_world: ArrayLike, units_per_meter: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical camera-to-world [4,4] -> (engine position [3], engine quaternion [4] wxyz, w >= 0)."""
    m = canonical_to_engine_matrix(convention, cam_to_world, units_per_meter)
    return m[:3, 3].copy(), matrix_to_quat(m[:3, :3])


def engine_point_to_canonical(
    convention: Convention | str, point: ArrayLike, units_per_meter: float | None = None
) -> np.ndarray:
    """A world point [3] in engine axes and units -> canonical metres [3]."""
    conv = _convention(convention)
    a, _, _ = _TABLE[conv]
    return a @ _finite(point, (3,), "point") / _units(conv, units_per_meter)


def canonical_point_to_engine(
    convention: Convention | str, point: ArrayLike, units_per_meter: float | None = None
) -> np.ndarray:
    """Canonical points [..., 3] (metres) -> engine axes and units [..., 3]."""
    conv = _convention(convention)
    a, _, _ = _TABLE[conv]
    return np.asarray(point, dtype=np.float64) @ a * _units(conv, units_per_meter)  # rows: (A.T p)


def engine_direction_to_canonical(convention: Convention | str, direction: ArrayLike) -> np.ndarray:
    """A world direction [3] in engine axes -> canonical axes [3] (length kept: A is a rotation or
    a reflection)."""
    a, _, _ = _TABLE[_convention(convention)]
    return a @ _finite(direction, (3,), "direction")


def look_at(eye: ArrayLike, target: ArrayLike, up: ArrayLike = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Canonical camera-to-world [4,4] at ``eye``: +z looks at ``target``, image up (-y) nearest ``up``."""
    e = _finite(eye, (3,), "eye")
    forward = _finite(target, (3,), "target") - e
    u = _finite(up, (3,), "up")
    dist, up_norm = np.linalg.norm(forward), np.linalg.norm(u)
    if dist < 1e-12:
        raise ValueError("eye and target must differ")
    if up_norm < 1e-12:
        raise ValueError("up must be non-zero")
    z = forward / dist
    right = np.cross(z, u / up_norm)  # z x up points to the image right (x) when y is down
    n = np.linalg.norm(right)
    if n < 1e-9:
        raise ValueError("view direction is parallel to up")
    x = right / n
    y = np.cross(z, x)  # completes x, y, z right-handed (x = y cross z)
    return _pose(np.stack([x, y, z], axis=1), e)
