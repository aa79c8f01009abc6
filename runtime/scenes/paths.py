"""Camera paths for cycle tests (pure numpy): canonical camera-to-world poses in the scenes' world.

The world is right-handed, metres, Z up; a pose is a camera-to-world 4x4 float64 matrix with OpenCV
camera axes (x right, y down, z forward); image up points towards world +z and the camera pitches
slightly down. Every path stays on the open lawn of the built-in scenes (``panda_source``), on a ring
of about 8 m around the object area at (0, 2): the view always holds scenery and passes objects.

- :func:`out_and_back`: walk out N poses, then come back along the same poses in reverse order.
- :func:`abc_loop`: A -> B -> C -> A, back to exactly A's pose by another route.
- :func:`revisit_pairs`: the (outbound, return) indices at identical poses, for either kind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from plugin_bridge.conventions import look_at

__all__ = ["PATH_KINDS", "abc_loop", "out_and_back", "revisit_pairs"]

PATH_KINDS: tuple[str, ...] = ("out_and_back", "abc_loop")

RING_CENTRE = (0.0, 2.0)
"""The paths circle this point (world x, y); the built-in scenes keep their objects off the ring."""
PITCH_DEG = 8.0
"""How far the camera looks down below the horizon at its look-ahead point (out_and_back)."""
_CARROT_M = 3.0  # pure-pursuit look-ahead along the guide ring


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0.0):
            raise ValueError(f"{name} must be finite and > 0, got {value}")


def _wobble(rng: np.random.Generator, harmonics: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Random amplitudes (summing to 1) and phases for a smooth periodic signal in [-1, 1]."""
    amp = rng.uniform(0.3, 1.0, size=len(harmonics))
    return amp / amp.sum(), rng.uniform(0.0, 2.0 * math.pi, size=len(harmonics))


def _signal(x: np.ndarray | float, freqs: Sequence[float], amp: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """sum_k amp_k sin(freq_k x + phase_k), in [-1, 1] when amp sums to 1."""
    x = np.asarray(x, dtype=np.float64)[..., None]
    return np.sum(amp * np.sin(np.asarray(freqs) * x + phase), axis=-1)


def out_and_back(
    n_out: int,
    *,
    start: Sequence[float] = (0.0, -6.0, 1.6),
    seed: int = 0,
    step_m: float = 0.08,
    turn_deg_per_frame: float = 0.8,
    height_amp_m: float = 0.3,
    look_ahead_m: float = 4.0,
    centre: Sequence[float] = RING_CENTRE,
    wander_m: float = 0.8,
) -> list[np.ndarray]:
    """A smooth walk of ``n_out`` poses, then the same poses in reverse order (2 * n_out in all).

    The walker moves ``step_m`` per frame (horizontally) from ``start`` and steers after a guide ring
    around ``centre`` (radius: the start's distance from it, wobbling by up to ``wander_m``; direction
    chosen by ``seed``) with a turn rate of at most ``turn_deg_per_frame``. The eye height wanders within
    ``start[2] +- height_amp_m``. The camera looks at the path point ``look_ahead_m`` further on,
    ``PITCH_DEG`` below the horizon, image up towards +z. Pose i and pose 2 * n_out - 1 - i are equal.
    """
    if int(n_out) < 1:
        raise ValueError(f"n_out must be >= 1, got {n_out}")
    n_out = int(n_out)
    _check_positive(step_m=step_m, turn_deg_per_frame=turn_deg_per_frame, look_ahead_m=look_ahead_m)
    if not (height_amp_m >= 0.0 and wander_m >= 0.0):
        raise ValueError(f"height_amp_m and wander_m must be >= 0, got {height_amp_m}, {wander_m}")
    p0 = np.asarray(start, dtype=np.float64)
    c = np.asarray(centre, dtype=np.float64)
    if p0.shape != (3,) or c.shape != (2,) or not (np.all(np.isfinite(p0)) and np.all(np.isfinite(c))):
        raise ValueError(f"start must be 3 finite numbers and centre 2, got {start}, {centre}")
    radius = float(np.linalg.norm(p0[:2] - c))
    if radius < 1.0:
        raise ValueError(f"start must be at least 1 m from centre {tuple(c)}, got {radius:.3f} m")

    rng = np.random.default_rng(seed)
    sense = 1.0 if rng.random() < 0.5 else -1.0  # +1: counter-clockwise around the centre
    ring_freqs = (1.0, 2.0)  # low harmonics only: the ring's curvature must stay within the turn rate
    ring_amp, ring_phase = _wobble(rng, ring_freqs)
    height_freqs = 2.0 * math.pi / rng.uniform(6.0, 16.0, size=3)  # per metre walked
    height_amp, height_phase = _wobble(rng, height_freqs)
    phi0 = math.atan2(p0[1] - c[1], p0[0] - c[0])

    def ring_radius(phi: float) -> float:
        # zero at the start angle, so the walk starts on the ring; |offset| <= wander_m
        d = _signal(phi, ring_freqs, ring_amp, ring_phase) - _signal(phi0, ring_freqs, ring_amp, ring_phase)
        return radius + wander_m * float(d) / 2.0

    omega_max = math.radians(turn_deg_per_frame)
    look_frames = max(1, round(look_ahead_m / step_m))
    total = n_out + look_frames
    xy = np.empty((total, 2))
    xy[0] = p0[:2]
    heading = phi0 + sense * math.pi / 2.0  # tangent to the ring
    omega = 0.0
    for i in range(1, total):
        rel = xy[i - 1] - c
        phi = math.atan2(rel[1], rel[0]) + sense * _CARROT_M / radius
        carrot = c + ring_radius(phi) * np.array([math.cos(phi), math.sin(phi)])
        want = math.atan2(carrot[1] - xy[i - 1, 1], carrot[0] - xy[i - 1, 0])
        err = (want - heading + math.pi) % (2.0 * math.pi) - math.pi
        # smooth steering: the turn rate eases towards what the guide asks, and never exceeds omega_max
        omega += float(np.clip(0.5 * err - omega, -0.1 * omega_max, 0.1 * omega_max))
        omega = float(np.clip(omega, -omega_max, omega_max))
        heading += omega
        xy[i] = xy[i - 1] + step_m * np.array([math.cos(heading), math.sin(heading)])

    walked = step_m * np.arange(total)
    h0 = _signal(0.0, height_freqs, height_amp, height_phase)
    z = p0[2] + height_amp_m * (_signal(walked, height_freqs, height_amp, height_phase) - h0) / 2.0
    drop = look_ahead_m * math.tan(math.radians(PITCH_DEG))
    outbound = []
    for i in range(n_out):
        eye = np.array([xy[i, 0], xy[i, 1], z[i]])
        j = i + look_frames
        target = np.array([xy[j, 0], xy[j, 1], z[j] - drop])
        outbound.append(look_at(eye, target))
    return outbound + [pose.copy() for pose in reversed(outbound)]


def abc_loop(
    n_per_leg: int,
    *,
    a: Sequence[float] = (0.0, -6.0, 1.6),
    b: Sequence[float] = (7.0, 5.5, 1.4),
    c: Sequence[float] = (-7.5, 4.5, 1.8),
    seed: int = 0,
    focus: Sequence[float] = (*RING_CENTRE, 0.8),
    wander_m: float = 0.5,
) -> list[np.ndarray]:
    """A -> B -> C -> A around ``focus``, looking at it: 3 * n_per_leg + 1 poses, the last equal to the first.

    Each leg has ``n_per_leg`` poses (its start included, its end not) and sweeps the angle around
    ``focus`` the short way from one waypoint to the next while the distance and height blend smoothly;
    ``seed`` adds a radial wobble of up to ``wander_m`` inside each leg (none at the waypoints). The
    camera always looks at ``focus``, so the pose at a waypoint depends on its position alone.
    """
    if int(n_per_leg) < 1:
        raise ValueError(f"n_per_leg must be >= 1, got {n_per_leg}")
    n = int(n_per_leg)
    f = np.asarray(focus, dtype=np.float64)
    points = [np.asarray(p, dtype=np.float64) for p in (a, b, c)]
    if f.shape != (3,) or any(p.shape != (3,) or not np.all(np.isfinite(p)) for p in points):
        raise ValueError(f"a, b, c and focus must be 3 finite numbers each, got {a}, {b}, {c}, {focus}")
    polar = []
    for p in points:
        rel = p[:2] - f[:2]
        r = float(np.linalg.norm(rel))
        if r < 1.0:
            raise ValueError(f"waypoint {tuple(p)} must be at least 1 m from the focus {tuple(f)}")
        polar.append((r, math.atan2(rel[1], rel[0]), float(p[2])))
    rng = np.random.default_rng(seed)
    wobble = rng.uniform(-1.0, 1.0, size=3) * wander_m

    poses = []
    for leg in range(3):
        (r0, a0, z0), (r1, a1, z1) = polar[leg], polar[(leg + 1) % 3]
        sweep = (a1 - a0 + math.pi) % (2.0 * math.pi) - math.pi
        for k in range(n):
            t = k / n
            s = 0.5 - 0.5 * math.cos(math.pi * t)  # smooth blend of distance and height
            r = r0 + (r1 - r0) * s + wobble[leg] * math.sin(math.pi * t)
            ang = a0 + sweep * t
            eye = np.array([f[0] + r * math.cos(ang), f[1] + r * math.sin(ang), z0 + (z1 - z0) * s])
            poses.append(look_at(eye, f))
    poses.append(poses[0].copy())
    return poses


def revisit_pairs(kind: str, n: int) -> list[tuple[int, int]]:
    """(outbound index, return index) pairs at identical poses.

    ``kind`` "out_and_back" with ``n`` = n_out: (i, 2n - 1 - i) for i < n; "abc_loop" with ``n`` =
    n_per_leg: [(0, 3n)].
    """
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    n = int(n)
    if kind == "out_and_back":
        return [(i, 2 * n - 1 - i) for i in range(n)]
    if kind == "abc_loop":
        return [(0, 3 * n)]
    raise ValueError(f"unknown path kind {kind!r}; valid: {', '.join(PATH_KINDS)}")


def seed_poses_for(path: list[np.ndarray], n_out: int, count: int) -> list[np.ndarray]:
    """``count`` poses spread over the first quarter of an ``n_out``-frame outbound ``path`` (where
    the demo, the eval and the bench send their seed observations)."""
    idx = np.linspace(0, max(n_out // 4, 1), num=count).round().astype(int)
    return [path[i] for i in idx]
