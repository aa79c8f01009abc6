"""Asking memory directly: the surfaces along a ray (pick) and the points and objects in a box.

Both read memory and change nothing. They go through the chunk index, so their cost follows what
the ray or box meets, not the memory's size: a ray is tested against the chunks' boxes (each point
box widened by its largest radius, a slab test), a box against the chunks' boxes, and only the
chunks met are gathered; packed chunks (quantised storage) among them are decoded one by one.

A point is a sphere of its footprint radius around its centre (what the splat draws as a disc
facing the camera). A ray meets a point when it passes within that radius; the hit lies at the
point's closest approach along the ray. Hits are grouped into surfaces nearest first: a hit farther
than ``depth_tolerance`` (relative, the render's rule) behind a surface's front starts the next
surface, so a pick reports the wall and then what memory holds behind it. A surface's attributes
are those of the point the ray passes closest to the centre of.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from runtime.memory.quantised import decode_chunk

QUERY_FIELDS = ("xyz", "rgb", "radius", "confidence", "provenance", "last_seen", "hit_count", "object_id",
                "frame_added")  # fmt: skip
"""What a query reads of a point (every field of `store.SCHEMA`)."""
MAX_RAY_HITS = 16
"""Most surfaces one pick reports."""
RADIUS_SLACK = 1e-3
"""A ray meets a point within (1 + this) times its radius: a footprint's radius is half its pixel's
diagonal, so a ray through a pixel corner passes at exactly the radius (and float32 rounding may put
it a hair beyond)."""


@dataclass(frozen=True)
class SurfaceHit:
    """One surface a ray meets (canonical frame, metres)."""

    point: tuple[float, float, float]  # the closest approach of the ray to the point
    distance_m: float  # along the ray from its origin
    rgb: tuple[int, int, int]
    object_id: int  # 0: static scene
    provenance: int  # 1 observed, 2 generated, 3 imported
    confidence: float
    last_seen: int  # frame index
    first_seen: int  # frame index the point was added at
    hit_count: int  # frames that confirmed it
    radius_m: float  # the point's footprint radius
    offset_m: float  # how far from the point's centre the ray passes
    points: int  # points of memory that make up the surface along the ray


@dataclass(frozen=True)
class RayPick:
    """What `Queries.pick` found along a ray."""

    hits: tuple[SurfaceHit, ...]  # nearest first
    environment_rgb: tuple[int, int, int] | None  # the direction map's colour along the ray, if filled
    chunks_tested: int
    points_tested: int


@dataclass(frozen=True)
class ObjectExtent:
    """The points of one object id inside a box."""

    object_id: int
    points: int
    centroid: tuple[float, float, float]
    lo: tuple[float, float, float]  # the AABB of its points' centres
    hi: tuple[float, float, float]
    last_seen: int


@dataclass(frozen=True)
class BoxContents:
    """What `Queries.box` found: every point inside counted, at most ``max_points`` returned."""

    inside: int
    fields: dict[str, np.ndarray]  # QUERY_FIELDS of the returned points, in a stable order
    objects: tuple[ObjectExtent, ...]  # object ids > 0 inside, ascending
    chunks_tested: int


def _slab(lo: np.ndarray, hi: np.ndarray, origin: np.ndarray, direction: np.ndarray, t_max: float):
    """Rows whose box [lo, hi] ([C, 3]) the ray origin + t direction, 0 <= t <= t_max, meets."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / direction
        t1 = (lo - origin) * inv
        t2 = (hi - origin) * inv
    flat = direction == 0.0  # parallel to a slab: inside it or never
    inside = (origin >= lo) & (origin <= hi)
    t_lo = np.where(flat, np.where(inside, -np.inf, np.inf), np.minimum(t1, t2))
    t_hi = np.where(flat, np.where(inside, np.inf, -np.inf), np.maximum(t1, t2))
    near = np.maximum(t_lo.max(axis=1), 0.0)
    far = np.minimum(t_hi.min(axis=1), t_max)
    return near <= far


class Queries:
    """`SpatialMemory`'s queries (a mixin; its state is set up by `SpatialMemory.__init__`)."""

    def _row_boxes(self, rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r = self.chunks.rows
        return (r["lo"][rows].numpy().astype(np.float64), r["hi"][rows].numpy().astype(np.float64),
                r["rmax"][rows].numpy().astype(np.float64))  # fmt: skip

    def _gather(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Every field of the points of chunk ``rows`` (int64): the hot points, then each packed blob."""
        rows_t = torch.from_numpy(rows.astype(np.int64))
        hot = rows_t[self.chunks.rows["size"][rows_t] > 0]
        index = self.chunks.members(hot, self._count) if hot.numel() else torch.zeros(0, dtype=torch.int64)
        parts = [{name: self._fields[name][index].numpy() for name in QUERY_FIELDS}]
        if self.cold is not None:
            for row in rows[self.cold.count[rows] > 0]:
                parts.append(decode_chunk(self.cold.get(int(row)), self.config.chunk_size_m))
        return {name: np.concatenate([p[name] for p in parts]) for name in QUERY_FIELDS}

    def pick(
        self,
        origin,
        direction,
        max_distance_m: float | None = None,
        max_hits: int = 1,
        min_distance_m: float = 0.0,
    ) -> RayPick:
        """The surfaces memory holds along the ray ``origin`` + t ``direction`` (canonical, metres),
        ``min_distance_m`` <= t <= ``max_distance_m`` (default: the memory's far plane), nearest first,
        at most ``max_hits``; and the environment map's colour along it."""
        o = np.asarray(origin, dtype=np.float64).reshape(3)
        d = np.asarray(direction, dtype=np.float64).reshape(3)
        norm = float(np.linalg.norm(d))
        if not (np.isfinite(o).all() and np.isfinite(d).all()) or norm < 1e-9:
            raise ValueError("a ray needs a finite origin and a finite, non-zero direction")
        d = d / norm
        t_max = float(self.config.far if max_distance_m is None else max_distance_m)
        if not 0.0 <= min_distance_m < t_max:
            raise ValueError(f"need 0 <= min_distance_m ({min_distance_m}) < max_distance_m ({t_max})")
        if not 1 <= max_hits <= MAX_RAY_HITS:
            raise ValueError(f"max_hits={max_hits}: use 1 to {MAX_RAY_HITS}")
        rows = self.chunks.used_rows()
        met = np.zeros(0, dtype=np.int64)
        if rows.numel():
            lo, hi, rmax = self._row_boxes(rows)
            met = rows.numpy()[_slab(lo - rmax[:, None], hi + rmax[:, None], o, d, t_max)]
        pts = self._gather(met)
        v = pts["xyz"].astype(np.float64) - o
        t = v @ d
        perp2 = np.maximum((v * v).sum(axis=1) - t * t, 0.0)
        r = pts["radius"].astype(np.float64) * (1.0 + RADIUS_SLACK)
        hit = (t >= min_distance_m) & (t <= t_max) & (perp2 <= r * r)
        hits = self._surfaces(pts, np.flatnonzero(hit), t, perp2, o, d, max_hits)
        env_rgb, filled = self.env.lookup(torch.from_numpy(d[None].astype(np.float32)))
        env = tuple(int(c) for c in (env_rgb[0] * 255.0).round().to(torch.int64)) if bool(filled[0]) else None
        return RayPick(hits, env, int(met.shape[0]), int(t.shape[0]))

    def _surfaces(self, pts, idx, t, perp2, o, d, max_hits: int) -> tuple[SurfaceHit, ...]:
        idx = idx[np.argsort(t[idx], kind="stable")]
        scale = 1.0 + float(self.config.depth_tolerance)
        out: list[SurfaceHit] = []
        start = 0
        while start < idx.shape[0] and len(out) < max_hits:
            front = t[idx[start]]
            end = start + int(np.searchsorted(t[idx[start:]], front * scale, side="right"))
            group = idx[start:end]
            best = int(group[np.argmin(perp2[group])])
            out.append(
                SurfaceHit(
                    point=_vec(o + t[best] * d),
                    distance_m=float(t[best]),
                    rgb=tuple(int(c) for c in pts["rgb"][best]),
                    object_id=int(pts["object_id"][best]),
                    provenance=int(pts["provenance"][best]),
                    confidence=float(pts["confidence"][best]),
                    last_seen=int(pts["last_seen"][best]),
                    first_seen=int(pts["frame_added"][best]),
                    hit_count=int(pts["hit_count"][best]),
                    radius_m=float(pts["radius"][best]),
                    offset_m=float(np.sqrt(perp2[best])),
                    points=int(group.shape[0]),
                )
            )
            start = end
        return tuple(out)

    def box(self, lo, hi, max_points: int = 100_000) -> BoxContents:
        """Points whose centre lies in the world box [``lo``, ``hi``] (canonical, metres): all counted,
        at most ``max_points`` returned (an even subsample, deterministic), and per object id inside
        its count, centroid and extent."""
        lo = np.asarray(lo, dtype=np.float64).reshape(3)
        hi = np.asarray(hi, dtype=np.float64).reshape(3)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()) or (lo > hi).any():
            raise ValueError("a box needs finite corners with min <= max on every axis")
        if max_points < 0:
            raise ValueError(f"max_points={max_points}: use 0 (count only) or more")
        rows = self.chunks.used_rows()
        met = np.zeros(0, dtype=np.int64)
        if rows.numel():
            rlo, rhi, _ = self._row_boxes(rows)
            met = rows.numpy()[((rlo <= hi) & (rhi >= lo)).all(axis=1)]
        pts = self._gather(met)
        xyz = pts["xyz"]
        inside = ((xyz >= lo.astype(np.float32)) & (xyz <= hi.astype(np.float32))).all(axis=1)
        keep = np.flatnonzero(inside)
        # a stable order (position-major) that does not depend on storage order or tiering
        keep = keep[np.lexsort(tuple(xyz[keep].T[::-1]))]
        objects = []
        ids = pts["object_id"][keep]
        for oid in np.unique(ids[ids > 0]):
            mine = keep[ids == oid]
            p = xyz[mine].astype(np.float64)
            objects.append(ObjectExtent(int(oid), int(mine.shape[0]), _vec(p.mean(axis=0)), _vec(p.min(axis=0)),
                                        _vec(p.max(axis=0)), int(pts["last_seen"][mine].max())))  # fmt: skip
        if keep.shape[0] > max_points:
            keep = (
                keep[np.linspace(0, keep.shape[0] - 1, max_points).round().astype(np.int64)]
                if max_points
                else keep[:0]
            )
        return BoxContents(
            inside=int(inside.sum()),
            fields={name: pts[name][keep] for name in QUERY_FIELDS},
            objects=tuple(objects),
            chunks_tested=int(met.shape[0]),
        )


def _vec(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))
