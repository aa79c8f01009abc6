"""Memory snapshots: bit-exact round trips (file, bytes, chunks), equal renders, refusals of bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import pickle
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin_bridge.camera import Camera, Intrinsics
from runtime.memory import MemoryConfig, SpatialMemory
from runtime.memory.environment import EnvironmentMap
from runtime.memory.snapshot import (
    FORMAT_MAJOR,
    FORMAT_MINOR,
    FULL_STORAGE_MAJOR,
    MAGIC,
    SnapshotError,
    iter_snapshot_chunks,
    save_snapshot,
    snapshot_bytes,
)
from runtime.memory.snapshot_load import load_snapshot
from runtime.memory.store import SCHEMA

MiB = 2**20
SKY = np.array([110, 160, 230], dtype=np.uint8)
INTR = Intrinsics.from_fov(96, 72, 70.0)
BYTES_PER_POINT = sum(d.itemsize * math.prod(s) for _, d, s in SCHEMA)


# -- synthetic RGB-D frames: a ground plane, a wall and a box, sky beyond -----------------------------
def look_at(eye, target) -> np.ndarray:
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, np.cross(forward, right), forward, eye
    return pose


def cam(eye, target, intrinsics=INTR) -> Camera:
    return Camera(intrinsics, look_at(eye, target))


def frame(camera: Camera, box_y: float = 0.0, wall_x: float = 8.0, tint: int = 0):
    """RGB uint8 [H, W, 3], planar depth float32 [H, W] (+inf: sky) and object ids (box 5, else 0)."""
    k = camera.intrinsics
    u, v = np.meshgrid(np.arange(k.width, dtype=float), np.arange(k.height, dtype=float))
    rays = (
        np.stack(((u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)), -1) @ camera.cam_to_world[:3, :3].T
    )
    origin = camera.cam_to_world[:3, 3]
    depth = np.full(u.shape, np.inf)
    rgb = np.broadcast_to(SKY, (*u.shape, 3)).copy()
    ids = np.zeros(u.shape, np.int32)
    with np.errstate(divide="ignore", invalid="ignore"):
        ground = -origin[2] / rays[..., 2]
        wall = (wall_x - origin[0]) / rays[..., 0]
        wall = np.where(np.abs(origin[1] + wall * rays[..., 1]) < 3.0, wall, np.inf)  # a wall 6 m wide
        lo, hi = np.array([3.0, box_y - 0.4, 0.0]), np.array([3.6, box_y + 0.4, 1.4])
        t1, t2 = (lo - origin) / rays, (hi - origin) / rays
        t_in, t_out = np.nanmax(np.minimum(t1, t2), -1), np.nanmin(np.maximum(t1, t2), -1)
        box = np.where(t_in <= t_out, t_in, np.inf)
    for t, colour, oid in ((ground, (120, 100, 70), 0), (wall, (90, 120, 60), 0), (box, (200, 60, 50), 5)):
        hit = (t > 1e-6) & (t < depth)
        depth = np.where(hit, t, depth)
        point = origin + rays * np.where(hit, t, 0.0)[..., None]
        checker = np.floor((point + 0.137) / 0.3).sum(-1) % 2
        colour = np.clip(np.asarray(colour) + 40 * checker[..., None] + tint, 0, 255).astype(np.uint8)
        rgb = np.where(hit[..., None], colour, rgb)
        ids = np.where(hit, oid, ids)
    return rgb, depth.astype(np.float32), ids


def orbit(i: int, radius: float = 2.5) -> Camera:
    angle = 0.4 * i
    eye = (radius * math.cos(angle) - 1.0, radius * math.sin(angle), 1.2 + 0.1 * (i % 3))
    return cam(eye, (4.0, 0.3 * math.sin(i), 0.8))


def build_memory(frames: int = 12, budget: int = MiB) -> SpatialMemory:
    """Observed and generated frames from an orbit: sky (environment map), carving (a moving box), pruning."""
    memory = SpatialMemory(
        MemoryConfig(budget_bytes=budget, env_width=256, env_height=128, initial_capacity=4096)
    )
    for i in range(frames):
        camera = orbit(i)
        rgb, depth, ids = frame(camera, box_y=0.6 * math.sin(0.7 * i), tint=i % 7)
        if i % 3 == 2:  # generated: fill only what memory does not cover
            memory.tier(camera)
            render = memory.render(camera)
            mask = render.coverage.numpy() < 0.5
            memory.ingest(camera, rgb, depth, provenance=2, frame_index=i, mask=mask, render=render)
        else:
            depth[:2, :5] = 0.0  # a few pixels of unknown depth
            memory.ingest(camera, rgb, depth, provenance=1, frame_index=i, object_ids=ids)
    return memory


@pytest.fixture(scope="module")
def memory() -> SpatialMemory:
    return build_memory()


@pytest.fixture(scope="module")
def payload(memory) -> bytes:
    return snapshot_bytes(memory, created_unix=1.7e9)


# -- comparisons ----------------------------------------------------------------------------------
def raw(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().numpy().tobytes()


def assert_same_memory(a: SpatialMemory, b: SpatialMemory) -> None:
    assert b.num_points == a.num_points
    pa, pb = a.points(), b.points()
    for name, dtype, _ in SCHEMA:
        assert pb[name].dtype == dtype and pb[name].shape == pa[name].shape, name
        assert raw(pb[name]) == raw(pa[name]), name
    assert raw(b.env.rgb) == raw(a.env.rgb) and raw(b.env.last_seen) == raw(a.env.last_seen)
    assert raw(b.env.provenance) == raw(a.env.provenance)
    assert b.env.filled_count == a.env.filled_count
    sa, sb = dataclasses.asdict(a.stats()), dataclasses.asdict(b.stats())
    sa.pop("bytes_used"), sb.pop("bytes_used")  # spare capacity is not saved: storage restarts compact
    assert sb == sa
    assert b.config == a.config and b.max_points == a.max_points
    assert raw(b.trajectory()) == raw(a.trajectory())
    kf_a, kf_b = a.freespace.ordered(), b.freespace.ordered()
    assert kf_a.keys() == kf_b.keys()
    for name in kf_a:
        assert kf_b[name].dtype == kf_a[name].dtype and raw(kf_b[name]) == raw(kf_a[name]), name


RENDER_FIELDS = (
    "rgb",
    "depth",
    "coverage",
    "confidence",
    "point_index",
    "object_id",
    "provenance",
    "env_texel",
)


def assert_same_renders(a: SpatialMemory, b: SpatialMemory, cameras) -> None:
    for camera in cameras:
        ra, rb = a.render(camera), b.render(camera)
        for name in RENDER_FIELDS:
            assert raw(getattr(rb, name)) == raw(getattr(ra, name)), name
        assert rb.points_in_view == ra.points_in_view


def rewrite_header(payload: bytes, edit, major: int = FORMAT_MAJOR, fix_digest: bool = True) -> bytes:
    """The payload with its JSON header edited by ``edit(header)`` (and prefix/padding/digest redone)."""
    _, _, minor, length = struct.unpack_from("<9sHHI", payload)
    old_end = 17 + length
    data_start = -(-old_end // 8) * 8
    header = json.loads(payload[17:old_end])
    edit(header)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head = struct.pack("<9sHHI", MAGIC, major, minor, len(text)) + text
    head += bytes(-len(head) % 8)
    body = head + payload[data_start:-32]
    return body + (hashlib.sha256(body).digest() if fix_digest else payload[-32:])


# -- round trips ----------------------------------------------------------------------------------
def test_fixture_exercises_every_part_of_memory(memory):
    stats = memory.stats()
    assert stats.points > memory.max_points // 2 and stats.points > 5000
    assert stats.points_pruned_total > 0 and stats.points_carved_total > 0
    assert stats.environment_texels > 100 and stats.frames_ingested == 12
    provenance = memory.points()["provenance"]
    assert (provenance == 1).any() and (provenance == 2).any()
    assert (memory.points()["object_id"] == 5).any()
    assert memory.trajectory().shape[0] > 1  # camera positions (eviction's nearness term) are state too
    assert memory.freespace.count == 8  # every observed view is a keyframe (one per 128 KiB of budget)


def test_bytes_round_trip_is_bit_exact_and_renders_identically(memory, payload):
    loaded = load_snapshot(payload)
    assert_same_memory(memory, loaded)
    cameras = [orbit(i) for i in (0, 5, 11)] + [
        cam((-3.0, -2.0, 2.0), (6.0, 1.0, 0.5)),
        cam((0, 0, 1.0), (0, 5, 2.0)),
    ]
    assert_same_renders(memory, loaded, cameras)
    assert snapshot_bytes(loaded, created_unix=1.7e9) == payload  # and saving it again gives the same bytes


def test_observed_only_memory_keeps_format_2():
    """A memory whose environment holds observed colour only is written as 2.0 (2.x runtimes read it),
    and its texels load back as observed."""
    memory = SpatialMemory(
        MemoryConfig(budget_bytes=MiB, env_width=256, env_height=128, initial_capacity=4096)
    )
    for i in range(3):
        camera = orbit(i)
        rgb, depth, ids = frame(camera)
        memory.ingest(camera, rgb, depth, provenance=1, frame_index=i, object_ids=ids)
    payload = snapshot_bytes(memory, created_unix=1.7e9)
    assert struct.unpack("<HH", payload[9:13]) == (FULL_STORAGE_MAJOR, FORMAT_MINOR)
    loaded = load_snapshot(payload)
    assert loaded.env.filled_count > 0
    assert_same_memory(memory, loaded)


def test_environment_provenance_is_checked(payload):
    """A 4.x snapshot whose environment provenance is outside the known values is refused."""
    header_len = struct.unpack("<I", payload[13:17])[0]
    header = json.loads(payload[17 : 17 + header_len])
    spec = next(s for s in header["sections"] if s["name"] == "env/provenance")
    start = _align8(17 + header_len) + spec["offset"]
    section = np.frombuffer(payload, np.uint8, spec["length"], start)
    at = start + int(np.flatnonzero(section)[0])
    bad = bytearray(payload)
    bad[at] = 7
    bad[-32:] = hashlib.sha256(bytes(bad[:-32])).digest()
    with pytest.raises(SnapshotError, match="environment provenance outside"):
        load_snapshot(bytes(bad))


def _align8(n: int) -> int:
    return -(-n // 8) * 8


def test_file_round_trip_and_info(memory, payload, tmp_path):
    path = tmp_path / "session.mirage-mem"
    info = save_snapshot(memory, path, created_unix=1.7e9)
    data = path.read_bytes()
    assert data == payload and info.size_bytes == len(data) and info.path == str(path)
    assert info.sha256 == hashlib.sha256(data[:-32]).hexdigest() == data[-32:].hex()
    assert info.points == memory.num_points and info.environment_texels == memory.env.filled_count
    # generated frames filled sky texels: only format 4.0 can say so
    assert bool((memory.env.provenance == 2).any())
    assert info.format_version == (FORMAT_MAJOR, FORMAT_MINOR) == (4, 0)
    assert info.created_utc.startswith("2023-11-14T22:13:20")
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    assert_same_memory(memory, load_snapshot(path))
    assert_same_memory(memory, load_snapshot(str(path)))
    with open(path, "rb") as f:
        assert_same_memory(memory, load_snapshot(f))
    buffer = io.BytesIO()
    assert save_snapshot(memory, buffer, created_unix=1.7e9).path is None
    assert buffer.getvalue() == payload


class OneWay(io.RawIOBase):
    """A non-seekable stream that hands out at most 1000 bytes per read (like a socket)."""

    def __init__(self, data: bytes):
        self._data, self._pos = data, 0

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), 1000, len(self._data) - self._pos)
        b[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def test_streamed_chunks_reassemble_to_the_snapshot(memory, payload):
    chunks = list(iter_snapshot_chunks(memory, chunk_size=4096, created_unix=1.7e9))
    assert all(len(c) == 4096 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 4096
    assert b"".join(chunks) == payload
    odd = list(iter_snapshot_chunks(memory, chunk_size=1000003, created_unix=1.7e9))
    assert b"".join(odd) == payload and len(odd) == -(-len(payload) // 1000003)
    assert_same_memory(memory, load_snapshot(OneWay(b"".join(chunks))))
    with pytest.raises(ValueError, match="chunk_size"):
        iter_snapshot_chunks(memory, chunk_size=0)


def test_stream_is_taken_when_asked_for_not_when_read():
    memory = build_memory(frames=3, budget=MiB)
    before = snapshot_bytes(memory, created_unix=0.0)
    stream = iter_snapshot_chunks(memory, chunk_size=1 << 16, created_unix=0.0)
    camera = orbit(7)
    rgb, depth, _ = frame(camera, box_y=-1.0)
    memory.ingest(camera, rgb, depth, provenance=1, frame_index=3)
    assert b"".join(stream) == before != snapshot_bytes(memory, created_unix=0.0)


def test_loaded_memory_goes_on_like_the_original():
    a = build_memory(frames=4, budget=MiB)
    b = load_snapshot(snapshot_bytes(a))
    pruned = 0
    for i in (4, 5):
        camera = orbit(i + 3)
        rgb, depth, ids = frame(camera, box_y=1.0)
        stats = a.ingest(camera, rgb, depth, provenance=1, frame_index=i, object_ids=ids)
        assert b.ingest(camera, rgb, depth, provenance=1, frame_index=i, object_ids=ids) == stats
        pruned += stats.pruned
    assert pruned > 0  # eviction ran, and chose the same points in both
    assert_same_memory(a, b)


def test_empty_memory_round_trips():
    empty = SpatialMemory(MemoryConfig(budget_bytes=MiB, env_width=8, env_height=4, window_frames=3))
    loaded = load_snapshot(snapshot_bytes(empty))
    assert_same_memory(empty, loaded)
    assert loaded.config.window_frames == 3


def test_loading_never_unpickles(payload, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("snapshots must not be unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert load_snapshot(payload).num_points > 0


def test_header_is_documented_json(payload, memory):
    magic, major, minor, length = struct.unpack_from("<9sHHI", payload)
    assert (magic, major, minor) == (b"MIRAGEMEM", 4, 0)
    header = json.loads(payload[17 : 17 + length].decode("utf-8"))
    assert header["counters"]["points"] == memory.num_points
    assert header["schema"][0] == {"name": "xyz", "dtype": "float32", "shape": [3]}
    assert header["environment"] == {
        "width": 256,
        "height": 128,
        "texels": 32768,
        "filled": memory.env.filled_count,
    }
    assert header["config"]["budget_bytes"] == MiB
    assert header["trail"] == memory.trajectory().shape[0] > 0
    assert header["keyframes"] == memory.freespace.count > 0
    assert [s["name"] for s in header["sections"][-9:]] == [
        f"state/keyframes/{name}"
        for name in ("w2c", "intrinsics", "size", "frame", "observed", "position", "axis", "depth")
    ] + ["env/provenance"]
    stats = memory.stats()
    assert header["counters_1_1"] == {
        "chunks_evicted_total": stats.chunks_evicted_total,
        "points_refined_total": stats.points_refined_total,
    }
    data_start = -(-(17 + length) // 8) * 8
    assert len(payload) == data_start + header["data_length"] + 32
    xyz = header["sections"][0]
    assert xyz["name"] == "points/xyz" and xyz["length"] == memory.num_points * 12
    stored = np.frombuffer(payload, "<f4", memory.num_points * 3, data_start + xyz["offset"])
    assert stored.tobytes() == raw(memory.points()["xyz"])


# -- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", [-1, -40, 0.5, 0.0])  # digest, trail, mid-data, first array byte
def test_a_changed_byte_is_refused_by_the_digest(payload, where):
    if isinstance(where, float):  # a fraction of the way through the data sections
        data_start = -(-(17 + struct.unpack_from("<I", payload, 13)[0]) // 8) * 8
        where = data_start + int(where * (len(payload) - 32 - data_start))
    damaged = bytearray(payload)
    damaged[where] ^= 0x01
    with pytest.raises(SnapshotError, match="digest mismatch"):
        load_snapshot(bytes(damaged))


def test_a_changed_header_byte_is_refused(payload):
    length = struct.unpack_from("<I", payload, 13)[0]
    start = payload.index(b'"near":0.05') + len('"near":0.0')
    assert start < 17 + length
    damaged = bytearray(payload)
    damaged[start] = ord("6")  # still valid JSON, still a valid config: only the digest can tell
    with pytest.raises(SnapshotError, match="digest mismatch"):
        load_snapshot(bytes(damaged))


@pytest.mark.parametrize("keep", [0, 5, 16, 200, -100, -32, -1])
def test_truncated_snapshot_is_refused(payload, tmp_path, keep):
    cut = payload[:keep] if keep >= 0 else payload[:keep]
    with pytest.raises(SnapshotError, match="truncated"):
        load_snapshot(cut)
    path = tmp_path / "cut.snap"
    path.write_bytes(cut)
    with pytest.raises(SnapshotError, match="truncated"):
        load_snapshot(path)
    with pytest.raises(SnapshotError, match="truncated"):
        load_snapshot(OneWay(cut))


def test_extra_bytes_are_refused(payload):
    with pytest.raises(SnapshotError, match="extra bytes"):
        load_snapshot(payload + b"\0")
    with pytest.raises(SnapshotError, match="extra bytes"):
        load_snapshot(OneWay(payload + b"\0"))


def test_wrong_magic_is_refused(payload, tmp_path):
    with pytest.raises(SnapshotError, match="not a Mirage memory snapshot"):
        load_snapshot(b"PK\x03\x04" + payload[4:])
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"xyz": [1, 2, 3]}))
    with pytest.raises(SnapshotError, match="not a Mirage memory snapshot"):
        load_snapshot(path)


def test_newer_major_version_is_refused_with_upgrade_advice(payload):
    newer = payload[:9] + struct.pack("<HH", FORMAT_MAJOR + 1, 0) + payload[13:]
    with pytest.raises(
        SnapshotError, match=rf"format {FORMAT_MAJOR + 1}\.0 is newer.*format {FORMAT_MAJOR}\.x.*upgrade"
    ):
        load_snapshot(newer)
    older = payload[:9] + struct.pack("<HH", 0, 3) + payload[13:]
    with pytest.raises(SnapshotError, match="older"):
        load_snapshot(older)


def test_newer_minor_version_with_extra_header_keys_loads(payload, memory):
    def add(header):
        header["future_key"] = {"anything": 1}

    edited = rewrite_header(payload, add)
    newer_minor = edited[:11] + struct.pack("<H", FORMAT_MINOR + 1) + edited[13:]
    body = newer_minor[:-32]
    assert_same_memory(memory, load_snapshot(body + hashlib.sha256(body).digest()))


def test_format_1_1_snapshot_without_keyframes_loads(payload, memory):
    # a 1.1 writer stopped after the trail: no "keyframes" key, no keyframe sections; 2.0 reads 1.x
    def as_1_1(header):
        header.pop("keyframes")
        header["sections"] = [
            s for s in header["sections"] if not s["name"].startswith(("state/keyframes/", "env/provenance"))
        ]
        last = header["sections"][-1]
        header["data_length"] = -(-(last["offset"] + last["length"]) // 8) * 8

    edited = rewrite_header(payload, as_1_1)
    length = struct.unpack_from("<I", edited, 13)[0]
    data_start = -(-(17 + length) // 8) * 8
    header = json.loads(edited[17 : 17 + length])
    body = edited[:9] + struct.pack("<HH", 1, 1) + edited[13 : data_start + header["data_length"]]
    loaded = load_snapshot(body + hashlib.sha256(body).digest())
    assert loaded.num_points == memory.num_points and loaded.freespace.count == 0
    assert raw(loaded.points()["xyz"]) == raw(memory.points()["xyz"])
    # before 4.0 the environment kept no provenance: what it holds loads as observed
    filled = loaded.env.last_seen >= 0
    assert bool((loaded.env.provenance[filled] == 1).all()) and not bool(loaded.env.provenance[~filled].any())


def test_header_claiming_more_bytes_than_present_is_refused(payload):
    def more_points(header):
        extra = 1000
        header["counters"]["points"] += extra
        n = header["counters"]["points"]
        offset = 0
        for section in header["sections"]:
            if section["name"].startswith("points/"):
                section["shape"][0] = n
            per_row = {"float32": 4, "float16": 2, "uint8": 1, "int32": 4, "float64": 8}[
                section["dtype"]
            ] * math.prod(section["shape"][1:])
            section["offset"], section["length"] = offset, per_row * section["shape"][0]
            offset = -(-(offset + section["length"]) // 8) * 8
        header["data_length"] = offset

    claimed = rewrite_header(payload, more_points)
    with pytest.raises(SnapshotError, match="does not fit a budget"):  # the budget is checked first
        load_snapshot(claimed)
    with pytest.raises(SnapshotError, match="truncated: its header says"):
        load_snapshot(claimed, budget_bytes=8 * MiB)
    with pytest.raises(SnapshotError, match="truncated: the arrays and digest need"):
        load_snapshot(OneWay(claimed), budget_bytes=8 * MiB)

    def longer(header):
        header["data_length"] += 8

    with pytest.raises(SnapshotError, match="data_length"):
        load_snapshot(rewrite_header(payload, longer))
    huge = payload[:13] + struct.pack("<I", 2**31) + payload[17:]
    with pytest.raises(SnapshotError, match="header claims"):
        load_snapshot(huge)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda h: h.pop("counters"), "lacks counters"),
        (lambda h: h["config"].update(colour_depth=8), "newer Mirage"),
        (lambda h: h["config"].update(near=-1.0), "config is invalid"),
        (lambda h: h["config"].update(budget_bytes="lots"), "budget_bytes"),
        (lambda h: h["counters"].update(points=-1), "counters.points"),
        (lambda h: h["schema"][0].update(dtype="float64"), "schema"),
        (lambda h: h["schema"].pop(), "schema"),
        (lambda h: h["sections"][1].update(offset=h["sections"][1]["offset"] + 8), "section table"),
        (lambda h: h["sections"][0].update(dtype="float16"), "section table"),
        (lambda h: h["environment"].update(width=7), "environment"),
        (lambda h: h["environment"].update(filled=h["environment"]["filled"] + 1), "filled"),
        (lambda h: h.update(format="something.else"), "format"),
        (lambda h: h.update(trail=h["trail"] + 1), "section table"),
        (lambda h: h.update(trail=10**6), "trail"),
        (lambda h: h.update(keyframes=h["keyframes"] + 1), "section table"),
        (lambda h: h.update(keyframes=-1), "keyframes"),
        (lambda h: h.pop("keyframes"), "lacks keyframes"),
    ],
)
def test_inconsistent_headers_are_refused(payload, edit, message):
    with pytest.raises(SnapshotError, match=message):
        load_snapshot(rewrite_header(payload, edit))


def test_invalid_values_are_refused_even_with_a_valid_digest(payload):
    length = struct.unpack_from("<I", payload, 13)[0]
    header = json.loads(payload[17 : 17 + length])
    data_start = -(-(17 + length) // 8) * 8
    prov = next(s for s in header["sections"] if s["name"] == "points/provenance")
    damaged = bytearray(payload[:-32])
    damaged[data_start + prov["offset"]] = 9
    with pytest.raises(SnapshotError, match="provenance"):
        load_snapshot(bytes(damaged) + hashlib.sha256(damaged).digest())


def test_budget_too_small_on_load_says_how_many_bytes_it_needs():
    big = SpatialMemory(MemoryConfig(budget_bytes=8 * MiB, env_width=128, env_height=64))
    camera = cam((0.0, 0.0, 1.0), (6.0, 0.0, 0.6), Intrinsics.from_fov(256, 192, 90.0))
    rgb, depth, _ = frame(camera)
    big.ingest(camera, rgb, depth, provenance=1, frame_index=0)
    payload = snapshot_bytes(big)
    assert (
        big.num_points
        > SpatialMemory(MemoryConfig(budget_bytes=MiB, env_width=128, env_height=64)).max_points
    )
    with pytest.raises(SnapshotError, match=f"budget of {MiB} bytes.*at least [0-9]+ bytes") as refused:
        load_snapshot(payload, budget_bytes=MiB)
    need = int(refused.value.args[0].split("budget_bytes=")[1].split()[0])
    assert need >= EnvironmentMap.nbytes_for(128, 64) + big.num_points * BYTES_PER_POINT
    with pytest.raises(SnapshotError, match=f"at least {need} bytes"):
        load_snapshot(payload, budget_bytes=need - 1)
    loaded = load_snapshot(payload, budget_bytes=need)  # the figure given is enough
    assert loaded.config.budget_bytes == need and loaded.bytes_used() <= need
    assert raw(loaded.points()["xyz"]) == raw(big.points()["xyz"])
    bigger = load_snapshot(payload, budget_bytes=64 * MiB)
    assert bigger.config.budget_bytes == 64 * MiB and bigger.num_points == big.num_points
    with pytest.raises(SnapshotError, match="budget_bytes"):
        load_snapshot(payload, budget_bytes=1.5e6)


def test_unreadable_sources_are_refused(tmp_path):
    with pytest.raises(SnapshotError, match="cannot read a snapshot from int"):
        load_snapshot(42)
    with pytest.raises(SnapshotError, match="cannot open snapshot"):
        load_snapshot(tmp_path / "missing.snap")


# -- property: random small memories round-trip bit-exactly ----------------------------------------
SMALL = Intrinsics.from_fov(16, 12, 80.0)


@st.composite
def ingests(draw):
    count = draw(st.integers(0, 4))
    steps = []
    for i in range(count):
        steps.append(
            {
                "yaw": draw(st.floats(-math.pi, math.pi)),
                "pitch": draw(st.floats(-0.6, 0.6)),
                "eye": draw(st.tuples(*[st.floats(-1.0, 1.0)] * 3)),
                "provenance": draw(st.sampled_from([1, 2, 3])),
                "seed": draw(st.integers(0, 2**32 - 1)),
                "frame_index": i * draw(st.integers(1, 3)),
            }
        )
    window = draw(st.sampled_from([0, 0, 2]))
    return window, steps


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ingests())
def test_random_memories_round_trip_bit_exactly(case):
    window, steps = case
    memory = SpatialMemory(
        MemoryConfig(budget_bytes=MiB, env_width=16, env_height=8, window_frames=window, initial_capacity=64)
    )
    for step in steps:
        rng = np.random.default_rng(step["seed"])
        direction = (
            math.cos(step["pitch"]) * math.cos(step["yaw"]),
            math.cos(step["pitch"]) * math.sin(step["yaw"]),
            math.sin(step["pitch"]),
        )
        eye = np.asarray(step["eye"]) + (0.0, 0.0, 1.0)
        camera = cam(eye, eye + np.asarray(direction), SMALL)
        rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        depth = rng.uniform(0.5, 20.0, (12, 16)).astype(np.float32)
        kind = rng.integers(0, 6, (12, 16))
        depth[kind == 0] = np.inf  # sky
        depth[kind == 1] = 0.0  # unknown
        ids = rng.integers(0, 4, (12, 16)).astype(np.int32)
        memory.ingest(
            camera,
            rgb,
            depth,
            provenance=step["provenance"],
            frame_index=step["frame_index"],
            object_ids=ids,
            mask=rng.random((12, 16)) < 0.8,
        )
    payload = snapshot_bytes(memory)
    loaded = load_snapshot(payload)
    assert_same_memory(memory, loaded)
    assert b"".join(iter_snapshot_chunks(loaded, chunk_size=777, created_unix=0.0)) == snapshot_bytes(
        memory, created_unix=0.0
    )
    assert_same_renders(memory, loaded, [cam((0.0, 0.0, 1.0), (3.0, 1.0, 1.0), SMALL)])
