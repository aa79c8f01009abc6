"""`SpatialMemoryQuery`: render memory from a pose, pick along a ray, list what is in a box, stats.

`MemoryQueryRPCs` is mixed into `runtime.server.MirageServicer` (which gives it ``_session``, ``_run``,
``_abort``, ``config``). Every query reads the memory under the session lock and never changes it.
Positions, directions, distances and radii cross the wire in the session's convention and units
(`plugin_bridge.conventions`); the memory works in canonical metres, so this module converts both
ways at the edge, as the pose path does.
"""

from __future__ import annotations

import grpc
import numpy as np
from mirage.v1 import mirage_pb2 as pb

from plugin_bridge.conventions import (
    canonical_point_to_engine,
    engine_direction_to_canonical,
    engine_point_to_canonical,
)
from runtime import wire
from runtime.memory.query import MAX_RAY_HITS, BoxContents, RayPick
from runtime.session import Session, SessionClosedError
from runtime.types import SessionSpec

DEFAULT_BOX_POINTS = 100_000
"""Points a box query returns when its request does not say (`BoxQuery.max_points` absent)."""
BOX_POINT_BYTES = 12 + 3 + 4 + 1 + 4
"""Wire bytes of one returned point: xyz float32, rgb, object id uint32, provenance, last seen uint32."""
MESSAGE_SLACK_BYTES = 64 << 10
"""Room a query response keeps under the server's message limit for everything but the point arrays."""


def _vec(msg: pb.Vec3, field: str) -> np.ndarray:
    v = np.array([msg.x, msg.y, msg.z], dtype=np.float64)
    if not np.isfinite(v).all():
        raise wire.WireError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field} has a non-finite value {v.tolist()}: send finite coordinates",
        )
    return v


def _vec3(v) -> pb.Vec3:
    return pb.Vec3(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def _rgb24(rgb) -> int:
    return (int(rgb[0]) << 16) | (int(rgb[1]) << 8) | int(rgb[2])


def _invalid(message: str) -> wire.WireError:
    return wire.WireError(grpc.StatusCode.INVALID_ARGUMENT, message)


def pixel_ray(cam_to_world: np.ndarray, k, u: float, v: float) -> tuple[np.ndarray, np.ndarray]:
    """Canonical (origin, unit direction) of the ray through pixel (u, v) of a camera."""
    if not (np.isfinite(u) and np.isfinite(v)):
        raise _invalid(f"pick.pixel (u, v) = ({u}, {v}): send finite pixel coordinates")
    if not (-0.5 <= u <= k.width - 0.5 and -0.5 <= v <= k.height - 0.5):
        raise _invalid(
            f"pick.pixel (u, v) = ({u:g}, {v:g}) lies outside the {k.width}x{k.height} image: pixel centres "
            f"are at integers, the image spans -0.5..{k.width - 0.5:g} by -0.5..{k.height - 0.5:g}"
        )
    d_cam = np.array([(u - k.cx) / k.fx, (v - k.cy) / k.fy, 1.0])
    d = cam_to_world[:3, :3] @ d_cam
    return cam_to_world[:3, 3].copy(), d / np.linalg.norm(d)


def _pick_ray(query: pb.PickQuery, session: Session, max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    spec = session.spec
    kind = query.WhichOneof("ray")
    if kind == "pixel":
        if not query.pixel.HasField("pose"):
            raise _invalid("pick.pixel.pose is required: the camera the pixel belongs to")
        cam_to_world = wire.pose_from_proto(query.pixel.pose, spec, "pick.pixel.pose")
        k = spec.intrinsics
        if query.pixel.HasField("intrinsics"):
            k = wire.intrinsics_from_proto(query.pixel.intrinsics, max_pixels)
        return pixel_ray(cam_to_world, k, query.pixel.u, query.pixel.v)
    if kind == "world":
        origin = _vec(query.world.origin, "pick.world.origin")
        direction = _vec(query.world.direction, "pick.world.direction")
        if not np.linalg.norm(direction) > 0.0:
            raise _invalid("pick.world.direction is zero: send the direction the ray points in (any length)")
        o = engine_point_to_canonical(spec.convention, origin, spec.units_per_meter)
        if not np.linalg.norm(o) <= wire.MAX_POSITION_M:
            raise _invalid(
                f"pick.world.origin is {np.linalg.norm(o):.3g} m from the origin; keep it within "
                f"{wire.MAX_POSITION_M:g} m, as cameras"
            )
        return o, engine_direction_to_canonical(spec.convention, direction)
    raise _invalid(
        "PickQuery needs a ray: set pixel (a camera pose and a pixel) or world (origin and direction)"
    )


def _pick_limits(query: pb.PickQuery, spec: SessionSpec) -> dict:
    upm = spec.units_per_meter
    lo, hi = query.min_distance, query.max_distance
    if not (np.isfinite(lo) and lo >= 0.0):
        raise _invalid(f"pick.min_distance={lo}: send a finite distance >= 0 (session units)")
    if not (np.isfinite(hi) and hi >= 0.0):
        raise _invalid(f"pick.max_distance={hi}: send a finite distance >= 0 (session units; 0: no limit)")
    if hi and hi <= lo:
        raise _invalid(
            f"pick.max_distance={hi:g} is not beyond min_distance={lo:g}: widen the range (0: no limit)"
        )
    hits = query.max_hits or 1
    if hits > MAX_RAY_HITS:
        raise _invalid(f"pick.max_hits={hits}: ask for 1 to {MAX_RAY_HITS} surfaces (0 means 1)")
    return {"min_distance_m": lo / upm, "max_distance_m": hi / upm if hi else None, "max_hits": hits}


def pick_to_proto(pick: RayPick, spec: SessionSpec) -> pb.PickResult:
    upm = spec.units_per_meter
    hits = [
        pb.SurfaceHit(
            point=_vec3(canonical_point_to_engine(spec.convention, h.point, upm)),
            distance=h.distance_m * upm,
            rgb=_rgb24(h.rgb),
            object_id=h.object_id,
            provenance=h.provenance,
            confidence=h.confidence,
            first_seen_frame=h.first_seen,
            last_seen_frame=h.last_seen,
            hit_count=h.hit_count,
            radius=h.radius_m * upm,
            points=h.points,
        )
        for h in pick.hits
    ]
    env = pick.environment_rgb
    return pb.PickResult(
        hits=hits,
        environment=env is not None,
        environment_rgb=_rgb24(env) if env is not None else 0,
        chunks_tested=pick.chunks_tested,
        points_tested=pick.points_tested,
    )


def box_corners(query: pb.BoxQuery, spec: SessionSpec) -> tuple[np.ndarray, np.ndarray]:
    """Canonical (lo, hi) of a box given in the session's convention and units."""
    lo, hi = _vec(query.min, "box.min"), _vec(query.max, "box.max")
    if (lo > hi).any():
        raise _invalid(
            f"box.min {lo.tolist()} exceeds box.max {hi.tolist()} on some axis: send min <= max on each"
        )
    # the convention's world basis is a signed axis permutation: the box maps to a box
    a = engine_point_to_canonical(spec.convention, lo, spec.units_per_meter)
    b = engine_point_to_canonical(spec.convention, hi, spec.units_per_meter)
    return np.minimum(a, b), np.maximum(a, b)


def box_to_proto(contents: BoxContents, spec: SessionSpec) -> pb.BoxResult:
    upm = spec.units_per_meter
    f = contents.fields
    xyz = canonical_point_to_engine(spec.convention, f["xyz"].astype(np.float64), upm).astype("<f4")
    objects = [
        pb.ObjectExtent(
            object_id=o.object_id,
            points=o.points,
            centroid=_vec3(canonical_point_to_engine(spec.convention, o.centroid, upm)),
            # the corners map to corners; min and max again, as a basis axis may flip
            min=_vec3(
                np.minimum(*(canonical_point_to_engine(spec.convention, c, upm) for c in (o.lo, o.hi)))
            ),
            max=_vec3(
                np.maximum(*(canonical_point_to_engine(spec.convention, c, upm) for c in (o.lo, o.hi)))
            ),
            last_seen_frame=o.last_seen,
        )
        for o in contents.objects
    ]
    return pb.BoxResult(
        inside=contents.inside,
        returned=int(xyz.shape[0]),
        xyz=xyz.tobytes(),
        rgb=np.ascontiguousarray(f["rgb"], dtype=np.uint8).tobytes(),
        object_ids=f["object_id"].astype("<u4").tobytes(),
        provenance=f["provenance"].astype(np.uint8).tobytes(),
        last_seen_frames=f["last_seen"].astype("<u4").tobytes(),
        objects=objects,
        chunks_tested=contents.chunks_tested,
    )


class MemoryQueryRPCs:
    def max_box_points(self) -> int:
        """The most points one box answer carries inside the server's message limit."""
        return max(0, (self.config.server.max_message_bytes - MESSAGE_SLACK_BYTES) // BOX_POINT_BYTES)

    async def SpatialMemoryQuery(
        self, request: pb.SpatialMemoryQueryRequest, context
    ) -> pb.SpatialMemoryQueryResponse:
        session = await self._session(request.session_id, context)
        kind = request.WhichOneof("query")
        try:
            if kind == "stats":
                stats = await self._run(session.stats)
                return pb.SpatialMemoryQueryResponse(stats=wire.memory_stats_to_proto(stats))
            if kind == "render":
                return pb.SpatialMemoryQueryResponse(render=await self._render(request.render, session))
            if kind == "pick":
                origin, direction = _pick_ray(request.pick, session, self.config.sessions.max_pixels)
                limits = _pick_limits(request.pick, session.spec)
                pick = await self._run(lambda: session.pick(origin, direction, **limits))
                return pb.SpatialMemoryQueryResponse(pick=pick_to_proto(pick, session.spec))
            if kind == "box":
                lo, hi = box_corners(request.box, session.spec)
                cap = self.max_box_points()
                wanted = (
                    request.box.max_points
                    if request.box.HasField("max_points")
                    else min(DEFAULT_BOX_POINTS, cap)
                )
                if wanted > cap:
                    raise _invalid(
                        f"box.max_points={wanted}: at most {cap} points fit in one answer under the server's "
                        f"{self.config.server.max_message_bytes} byte message limit; ask for fewer or split the box"
                    )
                contents = await self._run(session.box, lo, hi, wanted)
                return pb.SpatialMemoryQueryResponse(box=box_to_proto(contents, session.spec))
        except (wire.WireError, SessionClosedError) as exc:
            await self._abort(context, exc)
        except ValueError as exc:  # what the memory refuses (a degenerate ray or box)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            "SpatialMemoryQuery needs a query: set render, stats, pick or box",
        )

    async def _render(self, query: pb.RenderQuery, session: Session) -> pb.MemoryRender:
        if not query.HasField("pose"):
            raise _invalid("RenderQuery.pose is required")
        cam_to_world = wire.pose_from_proto(query.pose, session.spec, "render.pose")
        intrinsics = None
        if query.HasField("intrinsics"):
            intrinsics = wire.intrinsics_from_proto(query.intrinsics, self.config.sessions.max_pixels)
        view = await self._run(session.render_view, cam_to_world, intrinsics)
        image, depth = wire.encode_frame_images(view.rgb, view.depth, session.spec)
        return pb.MemoryRender(
            rgb=image,
            depth=depth,
            coverage=(view.coverage * 255).round().clip(0, 255).astype(np.uint8).tobytes(),
            coverage_fraction=float(view.coverage.mean()),
            object_ids=view.object_id.astype("<u4").tobytes(),
            provenance=view.provenance.tobytes(),
            confidence=(view.confidence * 255).round().clip(0, 255).astype(np.uint8).tobytes(),
        )
