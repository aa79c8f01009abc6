"""Scene families: procedurally varied worlds, so memory (and the generator) are judged beyond the
scenes they were built and trained on.

A family fixes what a model or a tuning could get used to, and varies it together: the ground
(tiled, textured or one flat colour), the sky (bright, overcast, coloured, or none: indoors), the
light, the object palette and shapes, indoor room or outdoor yard, near and far content. The seed
draws one world of a family: positions, sizes, turns, colours, textures and the sun all move with it.

Everything here is pure numpy: a `FamilyScene` lists textures (uint8 arrays), shapes with their
materials, the sky gradient and the lights; `runtime.scenes.panda_source` builds it in Panda3D. The
world is the scenes' world (right-handed, metres, Z up) and keeps the camera ring of
`runtime.scenes.paths` (about 6.4-9.6 m around (0, 2)) clear: shapes stand inside it (near content,
within 4 m of the path), outside it, or far off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FAMILIES",
    "FAMILY_NOTES",
    "FamilyScene",
    "Material",
    "Shape",
    "Sky",
    "family_scene",
]

Colour = tuple[float, float, float]

FAMILY_NOTES: dict[str, str] = {
    "tiled_yard": "tiled floor, bright white sky, high sun; cubes, tables, balls, small robots",
    "meadow": "noise-textured grass, overcast sky, soft light; rocks, trees, teapots",
    "plaza": "flat sand ground, dusk sky (orange to violet), low warm sun; saturated columns and blocks",
    "hall": "indoors (no sky): plank floor, painted walls, ceiling; tables, shelves, near furniture",
    "canyon": "sand and rock ground, deep blue sky; rock walls and pillars 12-35 m off, few near things",
}
FAMILIES: tuple[str, ...] = tuple(FAMILY_NOTES)
"""Every family, in report order."""

_RING_CENTRE = (0.0, 2.0)
_RING_CLEAR = (6.2, 9.8)  # radii about the ring centre where no shape stands (the camera walks there)


@dataclass(frozen=True)
class Material:
    colour: Colour
    """Flat colour, or the tint (multiplier) of the texture."""
    texture: str | None = None
    """Key into `FamilyScene.textures`; None: flat colour."""
    metres: float = 1.0
    """World size of one repeat of the texture, metres."""


@dataclass(frozen=True)
class Shape:
    kind: str
    """"box", "sphere", "cylinder" (axis z), or "model:NAME" (a model the panda3d wheel ships)."""
    centre: tuple[float, float, float]
    """World (x, y) of the footprint centre and z of the lowest point, metres."""
    size: tuple[float, float, float]
    """Extent along the shape's own x, y, z (before the heading), metres."""
    heading_deg: float
    """Turn about world z, degrees."""
    material: Material


@dataclass(frozen=True)
class Sky:
    horizon: Colour
    zenith: Colour


@dataclass(frozen=True)
class FamilyScene:
    family: str
    seed: int
    ground: Material
    sky: Sky | None
    """None: indoors, the room closes every view (nothing at infinity)."""
    sun_direction: tuple[float, float, float]
    """Where the sunlight travels (world)."""
    sun_colour: Colour
    ambient: Colour
    shapes: tuple[Shape, ...]
    textures: dict[str, np.ndarray] = field(default_factory=dict)
    """Name -> uint8 [H, W, 3] image, tiling seamlessly."""
    ground_half_m: float = 80.0
    """The ground is the square |x|, |y| <= this around the origin, at z = 0."""


# ---------------------------------------------------------------- textures (seamless, 256 px)


def _periodic_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1] that tiles: a random ``cells`` x ``cells`` grid, bilinear, wrapped."""
    grid = rng.random((cells, cells))
    t = np.arange(size) * cells / size
    i0 = np.floor(t).astype(int)
    f = t - i0
    f = f * f * (3 - 2 * f)  # smoothstep: no visible grid lines
    i1 = (i0 + 1) % cells
    rows = grid[i0] * (1 - f)[:, None] + grid[i1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]


def fractal_noise(rng: np.random.Generator, size: int = 256, octaves: tuple[int, ...] = (4, 8, 16, 32, 64)):
    """Sum of periodic value-noise octaves (amplitude halving), normalised to [0, 1]."""
    total = np.zeros((size, size))
    amp = 1.0
    for cells in octaves:
        total += amp * _periodic_noise(rng, size, cells)
        amp *= 0.5
    total -= total.min()
    return total / max(total.max(), 1e-9)


def _to_u8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def tiles_texture(a: Colour, b: Colour, grout: Colour, n: int = 4, size: int = 256, grout_px: int = 4):
    """n x n tiles in a checkerboard of ``a`` and ``b`` with ``grout`` lines between them."""
    v, u = np.mgrid[0:size, 0:size]
    tile = size // n
    checker = ((u // tile) + (v // tile)) % 2
    image = np.where(checker[..., None] == 0, np.asarray(a), np.asarray(b)).astype(np.float64)
    edge = ((u % tile) < grout_px // 2) | ((u % tile) >= tile - grout_px // 2)
    edge |= ((v % tile) < grout_px // 2) | ((v % tile) >= tile - grout_px // 2)
    image[edge] = grout
    return _to_u8(image)


def noise_texture(rng: np.random.Generator, dark: Colour, light: Colour, size: int = 256):
    """Fractal noise between a ``dark`` and a ``light`` colour (grass, sand, rock)."""
    n = fractal_noise(rng, size)[..., None]
    return _to_u8(np.asarray(dark) * (1 - n) + np.asarray(light) * n)


def planks_texture(rng: np.random.Generator, base: Colour, planks: int = 8, size: int = 256):
    """Floor boards along u: each plank its own tone, a dark seam between, fine grain along it."""
    v, u = np.mgrid[0:size, 0:size]
    width = size // planks
    tone = 0.8 + 0.35 * rng.random(planks)
    grain = fractal_noise(rng, size, octaves=(2, 4, 64, 128))
    image = np.asarray(base)[None, None, :] * (tone[v // width] * (0.85 + 0.3 * grain))[..., None]
    image[(v % width) < 2] *= 0.45
    return _to_u8(image)


def bricks_texture(rng: np.random.Generator, brick: Colour, mortar: Colour, size: int = 256):
    """Running-bond bricks (8 rows, 4 a row) of varied tone in ``mortar``."""
    v, u = np.mgrid[0:size, 0:size]
    rows, per_row = 8, 4
    bh, bw = size // rows, size // per_row
    row = v // bh
    shifted = (u + (row % 2) * (bw // 2)) % size
    index = row * per_row + shifted // bw
    tone = 0.75 + 0.4 * rng.random(rows * per_row)
    image = np.asarray(brick)[None, None, :] * tone[index][..., None]
    joint = ((v % bh) < 3) | ((shifted % bw) < 3)
    image[joint] = mortar
    return _to_u8(image)


# ---------------------------------------------------------------- placement helpers


def _spot(rng: np.random.Generator, radius: tuple[float, float]) -> tuple[float, float]:
    """A world (x, y) at a random angle and a radius in ``radius`` about the ring centre."""
    a = rng.uniform(-math.pi, math.pi)
    r = rng.uniform(*radius)
    return (_RING_CENTRE[0] + r * math.cos(a), _RING_CENTRE[1] + r * math.sin(a))


def _clear_of_ring(xy: tuple[float, float], half_extent: float) -> bool:
    r = math.hypot(xy[0] - _RING_CENTRE[0], xy[1] - _RING_CENTRE[1])
    return r + half_extent < _RING_CLEAR[0] or r - half_extent > _RING_CLEAR[1]


def _place(rng, radius, half_extent, taken: list[tuple[float, float, float]], tries: int = 40):
    """A spot in ``radius`` whose footprint (a disc of ``half_extent``) is clear of the ring and of
    the discs already ``taken``; None when none is found."""
    for _ in range(tries):
        xy = _spot(rng, radius)
        if not _clear_of_ring(xy, half_extent):
            continue
        if all(math.hypot(xy[0] - x, xy[1] - y) > half_extent + r + 0.3 for x, y, r in taken):
            taken.append((xy[0], xy[1], half_extent))
            return xy
    return None


def _jitter(rng: np.random.Generator, colour: Colour, amount: float = 0.08) -> Colour:
    return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0.02, 1.0)) for c in colour)


def _sun(rng: np.random.Generator, elevation: tuple[float, float]) -> tuple[float, float, float]:
    az = rng.uniform(0, 2 * math.pi)
    el = rng.uniform(*elevation)
    return (-math.cos(el) * math.cos(az), -math.cos(el) * math.sin(az), -math.sin(el))


def _table(xy, heading, top: Material, legs: Material, size=(1.4, 0.8, 0.75)) -> list[Shape]:
    """A table: a top slab on four legs."""
    sx, sy, h = size
    c, s = math.cos(math.radians(heading)), math.sin(math.radians(heading))
    shapes = [Shape("box", (xy[0], xy[1], h - 0.05), (sx, sy, 0.05), heading, top)]
    for lx in (-1, 1):
        for ly in (-1, 1):
            ox, oy = lx * (sx / 2 - 0.06), ly * (sy / 2 - 0.06)
            p = (xy[0] + c * ox - s * oy, xy[1] + s * ox + c * oy, 0.0)
            shapes.append(Shape("box", p, (0.06, 0.06, h - 0.05), heading, legs))
    return shapes


def _robot(xy, heading, body: Material, head: Material, scale: float) -> list[Shape]:
    """A small robot: a body block, a head block and a ball on top."""
    return [
        Shape("box", (xy[0], xy[1], 0.0), (0.45 * scale, 0.35 * scale, 0.6 * scale), heading, body),
        Shape("box", (xy[0], xy[1], 0.6 * scale), (0.3 * scale, 0.3 * scale, 0.25 * scale), heading, head),
        Shape("sphere", (xy[0], xy[1], 0.85 * scale), (0.12 * scale,) * 3, 0.0, body),
    ]


_WHEEL_MODELS = ("model:teapot", "model:smiley", "model:frowney", "model:jack", "model:panda-model")


# ---------------------------------------------------------------- the families


def _tiled_yard(rng: np.random.Generator) -> dict:
    light, dark = _jitter(rng, (0.86, 0.84, 0.8), 0.03), _jitter(rng, (0.42, 0.4, 0.42), 0.03)
    textures = {"tiles": tiles_texture(light, dark, (0.25, 0.24, 0.24))}
    palette = [(0.85, 0.2, 0.15), (0.15, 0.45, 0.85), (0.95, 0.8, 0.2), (0.2, 0.7, 0.35), (0.9, 0.9, 0.9)]
    shapes: list[Shape] = []
    taken: list = []
    for _ in range(int(rng.integers(7, 11))):  # cubes, near and outside the ring
        e = float(rng.uniform(0.5, 1.3))
        xy = _place(rng, (4.0, 6.0) if rng.random() < 0.5 else (10.2, 14.0), e * 0.75, taken)
        if xy:
            colour = _jitter(rng, palette[int(rng.integers(len(palette)))])
            shapes.append(Shape("box", (*xy, 0.0), (e, e, e), float(rng.uniform(-90, 90)), Material(colour)))
    for _ in range(int(rng.integers(1, 3))):
        xy = _place(rng, (4.0, 5.4) if rng.random() < 0.6 else (10.8, 12.0), 0.9, taken)
        if xy:
            wood = Material(_jitter(rng, (0.55, 0.38, 0.22)))
            shapes += _table(xy, float(rng.uniform(-90, 90)), wood, wood)
    for _ in range(int(rng.integers(1, 3))):
        r = float(rng.uniform(0.25, 0.5))
        xy = _place(rng, (2.0, 6.0), r, taken)
        if xy:
            colour = _jitter(rng, palette[int(rng.integers(len(palette)))])
            shapes.append(Shape("sphere", (*xy, 0.0), (2 * r,) * 3, 0.0, Material(colour)))
    for _ in range(int(rng.integers(3, 6))):
        xy = _place(rng, (4.0, 6.0) if rng.random() < 0.7 else (10.2, 11.0), 0.4, taken)
        if xy:
            body = Material(_jitter(rng, (0.7, 0.72, 0.75)))
            head = Material(_jitter(rng, palette[int(rng.integers(len(palette)))]))
            shapes += _robot(xy, float(rng.uniform(-180, 180)), body, head, float(rng.uniform(0.8, 1.3)))
    return dict(
        ground=Material((1.0, 1.0, 1.0), "tiles", metres=float(rng.uniform(1.6, 2.4))),
        sky=Sky(_jitter(rng, (0.97, 0.97, 0.97), 0.02), _jitter(rng, (0.9, 0.92, 0.96), 0.02)),
        sun_direction=_sun(rng, (0.8, 1.3)),
        sun_colour=(0.75, 0.75, 0.72),
        ambient=(0.42, 0.42, 0.44),
        shapes=shapes,
        textures=textures,
    )


def _meadow(rng: np.random.Generator) -> dict:
    textures = {
        "grass": noise_texture(rng, _jitter(rng, (0.16, 0.32, 0.1)), _jitter(rng, (0.45, 0.62, 0.24))),
        "rock": noise_texture(rng, (0.3, 0.3, 0.3), (0.68, 0.66, 0.62)),
        "bark": noise_texture(rng, (0.22, 0.14, 0.08), (0.45, 0.32, 0.2)),
        "leaves": noise_texture(rng, (0.08, 0.3, 0.08), (0.3, 0.55, 0.18)),
    }
    shapes: list[Shape] = []
    taken: list = []
    for _ in range(int(rng.integers(6, 11))):  # rocks: squashed balls
        r = float(rng.uniform(0.4, 1.2))
        xy = _place(rng, (3.5, 6.0) if rng.random() < 0.5 else (10.5, 18.0), r, taken)
        if xy:
            size = (2 * r, 2 * r * float(rng.uniform(0.6, 1.0)), 2 * r * float(rng.uniform(0.4, 0.8)))
            shapes.append(Shape("sphere", (*xy, -0.1 * r), size, float(rng.uniform(-90, 90)),
                                Material((1, 1, 1), "rock", 1.5)))  # fmt: skip
    for _ in range(int(rng.integers(6, 10))):  # trees: a trunk and a canopy
        xy = _place(rng, (3.0, 4.8) if rng.random() < 0.3 else (11.2, 22.0), 1.4, taken)
        if xy:
            h = float(rng.uniform(2.0, 4.0))
            shapes.append(
                Shape("cylinder", (*xy, 0.0), (0.35, 0.35, h), 0.0, Material((1, 1, 1), "bark", 1.0))
            )
            c = float(rng.uniform(1.8, 2.8))
            shapes.append(Shape("sphere", (xy[0], xy[1], h - 0.4), (c, c, c * 0.9), 0.0,
                                Material((1, 1, 1), "leaves", 1.2)))  # fmt: skip
    for _ in range(int(rng.integers(2, 4))):
        xy = _place(rng, (2.5, 5.5), 0.6, taken)
        if xy:
            e = float(rng.uniform(0.6, 1.1))
            colour = _jitter(rng, (0.8, 0.78, 0.75), 0.15)
            shapes.append(Shape(_WHEEL_MODELS[int(rng.integers(len(_WHEEL_MODELS)))], (*xy, 0.0),
                                (e, e, e), float(rng.uniform(-180, 180)), Material(colour)))  # fmt: skip
    return dict(
        ground=Material((1.0, 1.0, 1.0), "grass", metres=float(rng.uniform(3.0, 5.0))),
        sky=Sky(_jitter(rng, (0.74, 0.76, 0.78), 0.04), _jitter(rng, (0.6, 0.62, 0.66), 0.04)),
        sun_direction=_sun(rng, (0.6, 1.2)),
        sun_colour=(0.35, 0.35, 0.36),
        ambient=(0.6, 0.61, 0.64),
        shapes=shapes,
        textures=textures,
    )


def _plaza(rng: np.random.Generator) -> dict:
    textures = {"bricks": bricks_texture(rng, _jitter(rng, (0.62, 0.3, 0.22)), (0.78, 0.74, 0.68))}
    palette = [(0.9, 0.1, 0.45), (0.1, 0.75, 0.8), (0.98, 0.55, 0.05), (0.45, 0.2, 0.85), (0.1, 0.85, 0.3)]
    shapes: list[Shape] = []
    taken: list = []
    for _ in range(int(rng.integers(6, 10))):  # columns
        r = float(rng.uniform(0.25, 0.5))
        xy = _place(rng, (3.5, 6.0) if rng.random() < 0.5 else (10.2, 16.0), r, taken)
        if xy:
            colour = _jitter(rng, palette[int(rng.integers(len(palette)))])
            shapes.append(Shape("cylinder", (*xy, 0.0), (2 * r, 2 * r, float(rng.uniform(1.5, 4.0))), 0.0,
                                Material(colour)))  # fmt: skip
    for _ in range(int(rng.integers(4, 8))):  # blocks
        sx, sy, sz = (float(v) for v in rng.uniform((0.5, 0.5, 0.4), (1.8, 1.2, 1.6)))
        xy = _place(rng, (3.0, 5.6) if rng.random() < 0.5 else (10.8, 15.0), max(sx, sy) * 0.6, taken)
        if xy:
            colour = _jitter(rng, palette[int(rng.integers(len(palette)))])
            shapes.append(
                Shape("box", (*xy, 0.0), (sx, sy, sz), float(rng.uniform(-90, 90)), Material(colour))
            )
    for _ in range(int(rng.integers(2, 4))):  # brick walls far off
        a = rng.uniform(-math.pi, math.pi)
        r = float(rng.uniform(16.0, 24.0))
        xy = (_RING_CENTRE[0] + r * math.cos(a), _RING_CENTRE[1] + r * math.sin(a))
        length = float(rng.uniform(6.0, 12.0))
        shapes.append(Shape("box", (*xy, 0.0), (length, 0.5, float(rng.uniform(2.5, 5.0))),
                            math.degrees(a) + 90.0, Material((1, 1, 1), "bricks", 2.0)))  # fmt: skip
    return dict(
        ground=Material(_jitter(rng, (0.78, 0.68, 0.5), 0.05)),
        sky=Sky(_jitter(rng, (0.98, 0.62, 0.38), 0.04), _jitter(rng, (0.36, 0.3, 0.62), 0.04)),
        sun_direction=_sun(rng, (0.2, 0.45)),
        sun_colour=(0.85, 0.6, 0.4),
        ambient=(0.38, 0.34, 0.42),
        shapes=shapes,
        textures=textures,
    )


def _hall(rng: np.random.Generator) -> dict:
    textures = {
        "planks": planks_texture(rng, _jitter(rng, (0.62, 0.45, 0.3))),
        "plaster": noise_texture(rng, (0.78, 0.76, 0.72), (0.9, 0.89, 0.86)),
    }
    wall_tint = _jitter(rng, (0.95, 0.9, 0.85), 0.08)
    x0, x1, y0, y1 = -12.0, 12.0, -10.0, 14.0
    height = float(rng.uniform(3.5, 5.0))
    t = 0.3
    wall = Material(wall_tint, "plaster", 3.0)
    shapes: list[Shape] = [
        Shape("box", (0.0, y0 - t / 2, 0.0), (x1 - x0 + 2 * t, t, height), 0.0, wall),
        Shape("box", (0.0, y1 + t / 2, 0.0), (x1 - x0 + 2 * t, t, height), 0.0, wall),
        Shape("box", (x0 - t / 2, 2.0, 0.0), (t, y1 - y0, height), 0.0, wall),
        Shape("box", (x1 + t / 2, 2.0, 0.0), (t, y1 - y0, height), 0.0, wall),
        Shape("box", (0.0, 2.0, height), (x1 - x0 + 2 * t, y1 - y0 + 2 * t, t), 0.0,
              Material(_jitter(rng, (0.92, 0.92, 0.9), 0.04))),
    ]  # fmt: skip
    taken: list = []
    palette = [(0.7, 0.25, 0.2), (0.25, 0.35, 0.6), (0.85, 0.75, 0.55), (0.3, 0.5, 0.35), (0.2, 0.2, 0.22)]
    for _ in range(int(rng.integers(3, 5))):
        xy = _place(rng, (4.0, 5.2), 0.9, taken)
        if xy:
            top = Material((1, 1, 1), "planks", 1.0)
            shapes += _table(xy, float(rng.uniform(-90, 90)), top, Material((0.25, 0.2, 0.18)))
    for _ in range(int(rng.integers(3, 6))):  # shelves and cabinets along the walls
        side = int(rng.integers(4))
        length, depth, h = (
            float(rng.uniform(1.0, 2.5)),
            float(rng.uniform(0.4, 0.7)),
            float(rng.uniform(0.8, 2.2)),
        )
        if side < 2:
            x = float(rng.uniform(x0 + 2, x1 - 2))
            y = y0 + depth / 2 + 0.05 if side == 0 else y1 - depth / 2 - 0.05
            heading = 0.0
        else:
            y = float(rng.uniform(y0 + 2, y1 - 2))
            x = x0 + depth / 2 + 0.05 if side == 2 else x1 - depth / 2 - 0.05
            heading = 90.0
        if _clear_of_ring((x, y), length / 2):
            colour = _jitter(rng, palette[int(rng.integers(len(palette)))])
            shapes.append(Shape("box", (x, y, 0.0), (length, depth, h), heading, Material(colour)))
    for _ in range(int(rng.integers(4, 8))):  # near things: crates, balls, models
        xy = _place(rng, (3.5, 5.6) if rng.random() < 0.6 else (10.3, 11.2), 0.5, taken)
        if xy is None or not (x0 + 0.5 < xy[0] < x1 - 0.5 and y0 + 0.5 < xy[1] < y1 - 0.5):
            continue
        colour = _jitter(rng, palette[int(rng.integers(len(palette)))])
        kind = ("box", "sphere", _WHEEL_MODELS[int(rng.integers(len(_WHEEL_MODELS)))])[int(rng.integers(3))]
        e = float(rng.uniform(0.4, 0.9))
        shapes.append(Shape(kind, (*xy, 0.0), (e, e, e), float(rng.uniform(-180, 180)), Material(colour)))
    return dict(
        ground=Material((1.0, 1.0, 1.0), "planks", metres=float(rng.uniform(2.0, 3.0))),
        sky=None,
        sun_direction=_sun(rng, (1.0, 1.4)),
        sun_colour=(0.45, 0.43, 0.4),
        ambient=(0.5, 0.5, 0.52),
        shapes=shapes,
        textures=textures,
    )


def _canyon(rng: np.random.Generator) -> dict:
    textures = {
        "sand": noise_texture(rng, _jitter(rng, (0.6, 0.45, 0.3)), _jitter(rng, (0.85, 0.72, 0.52))),
        "stone": noise_texture(rng, (0.42, 0.28, 0.2), (0.75, 0.55, 0.4)),
    }
    stone = Material((1, 1, 1), "stone", 4.0)
    shapes: list[Shape] = []
    for k in range(int(rng.integers(5, 9))):  # rock walls ringing the site, 20-35 m off
        a = 2 * math.pi * k / 8 + rng.uniform(-0.2, 0.2)
        r = float(rng.uniform(20.0, 35.0))
        xy = (_RING_CENTRE[0] + r * math.cos(a), _RING_CENTRE[1] + r * math.sin(a))
        shapes.append(Shape("box", (*xy, 0.0), (float(rng.uniform(10, 18)), 3.0, float(rng.uniform(6, 14))),
                            math.degrees(a) + 90.0 + float(rng.uniform(-15, 15)), stone))  # fmt: skip
    taken: list = []
    for _ in range(int(rng.integers(3, 6))):  # pillars 12-20 m off
        xy = _place(rng, (12.0, 20.0), 1.2, taken)
        if xy:
            w = float(rng.uniform(1.0, 2.4))
            shapes.append(
                Shape("box", (*xy, 0.0), (w, w, float(rng.uniform(4, 9))), float(rng.uniform(-45, 45)), stone)
            )
    for _ in range(int(rng.integers(2, 4))):  # a few near things
        xy = _place(rng, (4.0, 5.6), 0.5, taken)
        if xy:
            colour = _jitter(rng, (0.3, 0.45, 0.7), 0.2)
            kind = ("box", "sphere", "cylinder")[int(rng.integers(3))]
            e = float(rng.uniform(0.5, 1.0))
            shapes.append(Shape(kind, (*xy, 0.0), (e, e, e), float(rng.uniform(-90, 90)), Material(colour)))
    return dict(
        ground=Material((1.0, 1.0, 1.0), "sand", metres=float(rng.uniform(3.0, 6.0))),
        sky=Sky(_jitter(rng, (0.7, 0.82, 0.95), 0.04), _jitter(rng, (0.18, 0.38, 0.78), 0.04)),
        sun_direction=_sun(rng, (0.5, 1.1)),
        sun_colour=(0.8, 0.76, 0.68),
        ambient=(0.36, 0.37, 0.42),
        shapes=shapes,
        textures=textures,
    )


_BUILDERS = {
    "tiled_yard": _tiled_yard,
    "meadow": _meadow,
    "plaza": _plaza,
    "hall": _hall,
    "canyon": _canyon,
}
assert tuple(_BUILDERS) == FAMILIES


def family_scene(family: str, seed: int = 0) -> FamilyScene:
    """World ``seed`` of ``family`` (deterministic: the same pair gives the same world)."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown scene family {family!r}; valid: {', '.join(FAMILIES)}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, FAMILIES.index(family), 0xFA71])
    return FamilyScene(family=family, seed=int(seed), **_BUILDERS[family](rng))
