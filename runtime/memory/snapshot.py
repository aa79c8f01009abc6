"""Memory snapshots: a session's spatial memory as one versioned, self-describing byte payload.

No pickle, no ``torch.load``: a snapshot is a fixed prefix (magic, format version, header length), a
JSON header (config, counters, schema, section table), raw little-endian arrays (the live points'
fields, the environment map, the recent camera trail) and a trailing SHA-256 of everything before
it. Loading it gives a memory whose every live point, environment texel, counter and trail position
is bit-identical to the one saved, so it renders the same frames and goes on ingesting as the
original would. The byte-by-byte layout is in ``docs/snapshot_format.md``.

The digest detects corruption (a flipped bit, a truncated upload); it is **not** authentication:
anyone can recompute it. Authenticity comes from the AES-256-GCM sealing that wraps the whole payload
when it leaves the server (`runtime.sealing`); the payload is one byte string/stream for that reason.

Plain arrays and dataclasses only (no gRPC): the export RPC streams `iter_snapshot_chunks`. This
module defines the format and writes it; `runtime.memory.snapshot_load` reads it back.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from plugin_bridge.files import atomic_write
from runtime.memory.config import PROVENANCE_OBSERVED, MemoryConfig
from runtime.memory.freespace import KEYFRAME_FIELDS
from runtime.memory.spatial import SpatialMemory
from runtime.memory.store import SCHEMA

MAGIC = b"MIRAGEMEM"
OLDEST_MAJOR = 1
"""The oldest major version this runtime still reads (1.x: no free-space keyframes)."""
FORMAT_MAJOR = 4
"""Bumped when a reader of the previous major could misread or refuse a snapshot (2.0 added the keyframe
sections, 3.0 the packed chunks of quantised storage, 4.0 the environment's provenance); readers refuse
newer majors and read every older one from OLDEST_MAJOR. A writer uses the oldest major that describes
the memory: 4 when an environment texel holds generated or imported colour, else 2 for full storage
(readable by 2.x runtimes) and 3 for quantised storage (a 2.x reader would drop the packed chunks)."""
QUANTISED_MAJOR = 3
"""The oldest major that holds packed chunks."""
FULL_STORAGE_MAJOR = 2
"""The major a snapshot of a memory with full storage is written with (2.x runtimes read it)."""
FORMAT_MINOR = 0
"""Bumped for additions an older reader of the same major may ignore (extra header keys)."""
FORMAT_NAME = "mirage.memory.snapshot"
PREFIX = struct.Struct("<9sHHI")  # magic, major, minor, header length in bytes
ALIGN = 8  # header end and every section start at a multiple of 8 from the start of the payload
DIGEST_BYTES = 32  # SHA-256
MAX_HEADER_BYTES = 1 << 20
LOAD_BATCH_POINTS = 1 << 18  # points appended per `_append` call when loading

# dtype name in the header -> (torch dtype, little-endian numpy dtype)
_DTYPES: dict[str, tuple[torch.dtype, np.dtype]] = {
    "uint8": (torch.uint8, np.dtype("u1")),
    "int16": (torch.int16, np.dtype("<i2")),
    "int32": (torch.int32, np.dtype("<i4")),
    "int64": (torch.int64, np.dtype("<i8")),
    "float16": (torch.float16, np.dtype("<f2")),
    "float32": (torch.float32, np.dtype("<f4")),
    "float64": (torch.float64, np.dtype("<f8")),
}
_DTYPE_NAMES = {torch_dtype: name for name, (torch_dtype, _) in _DTYPES.items()}
_ENV_SECTIONS = (("env/rgb", "uint8", (3,)), ("env/last_seen", "int32", ()))
MAX_TRAIL = 4096  # recent camera positions a snapshot may carry (the memory keeps far fewer)
MAX_KEYFRAMES = 4096  # free-space keyframes a snapshot may carry (MemoryConfig.freespace_keyframes' cap)
PROBE_LIMIT_BYTES = 2**40  # budgets above this are not probed for the "bytes needed" figure
_HEADER_KEYS = {
    "format",
    "config",
    "counters",
    "schema",
    "environment",
    "created_utc",
    "sections",
    "data_length",
    "trail",
}
_COUNTER_KEYS = ("points", "points_pruned_total", "points_carved_total", "frames_ingested")
_COUNTER_KEYS_1_1 = ("chunks_evicted_total", "points_refined_total")
"""Totals added in format 1.1, under their own header key ``counters_1_1`` (a 1.0 reader ignores the key,
as the minor-version rule promises; a 1.0 snapshot restores them as 0)."""


class SnapshotError(ValueError):
    """A snapshot that cannot be read or does not fit; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class SnapshotInfo:
    """What a written snapshot holds."""

    size_bytes: int
    points: int
    environment_texels: int
    """Filled environment texels."""
    sha256: str
    """Hex of the trailing digest (integrity, not authentication)."""
    format_version: tuple[int, int]
    created_utc: str
    path: str | None = None
    """Where `save_snapshot` wrote it (None for a file object)."""


# -- layout --------------------------------------------------------------------------------------
def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _section_specs(
    points: int,
    texels: int,
    trail: int,
    keyframes: int | None,
    packed: tuple[int, int] | None = None,
    env_provenance: bool = False,
) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, dtype name, full shape) of every section, in payload order (``keyframes`` None: a 1.x
    snapshot, which has no keyframe sections; ``packed`` (chunks, bytes): a 3.x snapshot's packed
    chunks, None before 3.0; ``env_provenance``: a 4.x snapshot's environment provenance, last)."""
    specs = [(f"points/{name}", _DTYPE_NAMES[dtype], (points, *shape)) for name, dtype, shape in SCHEMA]
    specs += [(name, dtype, (texels, *shape)) for name, dtype, shape in _ENV_SECTIONS]
    specs.append(("state/trail", "float64", (trail, 3)))
    if keyframes is not None:
        specs += [
            (f"state/keyframes/{name}", _DTYPE_NAMES[dtype], (keyframes, *shape))
            for name, dtype, shape in KEYFRAME_FIELDS
        ]
    if packed is not None:
        specs += [("packed/lengths", "int64", (packed[0],)), ("packed/blobs", "uint8", (packed[1],))]
    if env_provenance:
        specs.append(("env/provenance", "uint8", (texels,)))
    return specs


def _section_table(
    points: int,
    texels: int,
    trail: int,
    keyframes: int | None,
    packed: tuple[int, int] | None = None,
    env_provenance: bool = False,
) -> list[dict]:
    """The header's section table: each section 8-aligned, in order, offsets from the data start."""
    table, offset = [], 0
    for name, dtype, shape in _section_specs(points, texels, trail, keyframes, packed, env_provenance):
        length = math.prod(shape) * _DTYPES[dtype][1].itemsize
        table.append({"name": name, "dtype": dtype, "shape": list(shape), "offset": offset, "length": length})
        offset = _align(offset + length)
    return table


def _data_length(table: list[dict]) -> int:
    return _align(table[-1]["offset"] + table[-1]["length"])


def _schema_json() -> list[dict]:
    return [{"name": n, "dtype": _DTYPE_NAMES[d], "shape": list(s)} for n, d, s in SCHEMA]


def _schema_bytes_per_point() -> int:
    return sum(dtype.itemsize * math.prod(shape) for _, dtype, shape in SCHEMA)


def _config_json(config: MemoryConfig) -> dict:
    """MemoryConfig fields as plain JSON numbers (ints stay ints; numpy scalars become Python ones)."""
    defaults = MemoryConfig()

    def plain(default):
        return str if isinstance(default, str) else int if isinstance(default, int) else float

    config_json = {
        f.name: plain(getattr(defaults, f.name))(getattr(config, f.name))
        for f in dataclasses.fields(MemoryConfig)
    }
    if config.storage == defaults.storage:  # as 2.x wrote it: a 2.x reader refuses unknown fields
        del config_json["storage"]
    return config_json


def _trail_of(memory: SpatialMemory) -> np.ndarray:
    """The recent camera positions eviction weighs (float64 [K, 3], oldest first)."""
    return memory.trajectory().numpy().astype(np.float64).reshape(-1, 3)


# -- writer --------------------------------------------------------------------------------------
def _le_array(t: torch.Tensor, dtype_name: str, copy: bool) -> np.ndarray:
    """A tensor as a contiguous little-endian numpy array (a private copy when ``copy``)."""
    a = t.detach().to("cpu").contiguous().numpy()
    return a.astype(_DTYPES[dtype_name][1], copy=copy)  # same dtype on little-endian hosts: a view


def _created_utc(created_unix: float | None) -> str:
    stamp = time.time() if created_unix is None else float(created_unix)
    moment = _dt.datetime.fromtimestamp(stamp, tz=_dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Capture:
    prefix: bytes  # prefix + header + padding up to the data start
    arrays: list[np.ndarray]  # one per section, in order
    table: list[dict]
    data_length: int
    points: int
    env_filled: int
    created_utc: str
    major: int

    @property
    def size_bytes(self) -> int:
        return len(self.prefix) + self.data_length + DIGEST_BYTES


def _capture(memory: SpatialMemory, copy: bool, created_unix: float | None) -> _Capture:
    """Everything a snapshot of ``memory`` holds; ``copy`` detaches it from later mutations."""
    live, env = memory.points(), memory.env
    points, texels, trail = memory.hot_points, env.width * env.height, _trail_of(memory)
    keyframes = memory.freespace.ordered()
    count = int(keyframes["frame"].shape[0])
    packed = memory.packed_chunks() if memory.cold is not None else None  # (lengths, blobs) by key
    shape = None if packed is None else (int(packed[0].shape[0]), int(packed[1].shape[0]))
    # the environment's provenance is written only when it says more than "observed" (format 4.0)
    env_provenance = bool(((env.last_seen >= 0) & (env.provenance != PROVENANCE_OBSERVED)).any())
    table = _section_table(points, texels, len(trail), count, shape, env_provenance)
    tensors = [live[name] for name, _, _ in SCHEMA] + [env.rgb, env.last_seen, torch.from_numpy(trail)]
    tensors += [keyframes[name] for name, _, _ in KEYFRAME_FIELDS]
    if packed is not None:
        tensors += [torch.from_numpy(packed[0]), torch.from_numpy(packed[1])]
    if env_provenance:
        tensors.append(env.provenance)
    arrays = [_le_array(t, spec["dtype"], copy) for t, spec in zip(tensors, table, strict=True)]
    for a, spec in zip(arrays, table, strict=True):  # the layout is derived from SCHEMA: must agree
        assert list(a.shape) == spec["shape"] and a.nbytes == spec["length"], spec["name"]
    env_filled = int((env.last_seen >= 0).sum())
    created = _created_utc(created_unix)
    header = {
        "format": FORMAT_NAME,
        "config": _config_json(memory.config),
        "counters": {
            "points": points,
            "points_pruned_total": int(memory._pruned_total),
            "points_carved_total": int(memory._carved_total),
            "frames_ingested": int(memory._frames),
        },
        "counters_1_1": {
            "chunks_evicted_total": int(memory._chunks_evicted_total),
            "points_refined_total": int(memory._refined_total),
        },
        "schema": _schema_json(),
        "environment": {"width": env.width, "height": env.height, "texels": texels, "filled": env_filled},
        "created_utc": created,
        "trail": len(trail),
        "keyframes": count,
        **(
            {}
            if shape is None
            else {"packed": {"chunks": shape[0], "bytes": shape[1], "now": int(memory._now)}}
        ),
        "sections": table,
        "data_length": _data_length(table),
    }
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    major = FORMAT_MAJOR if env_provenance else FULL_STORAGE_MAJOR if shape is None else QUANTISED_MAJOR
    head = PREFIX.pack(MAGIC, major, FORMAT_MINOR, len(text)) + text
    head += bytes(_align(len(head)) - len(head))
    total = points + (0 if packed is None else memory.cold.points)
    return _Capture(head, arrays, table, header["data_length"], total, env_filled, created, major)


def _raw_pieces(cap: _Capture, digest_out: list) -> Iterator[memoryview | bytes]:
    """The payload as consecutive pieces (views into the captured arrays), digest last."""
    sha = hashlib.sha256(cap.prefix)
    yield cap.prefix
    written = 0
    for a, spec in zip(cap.arrays, cap.table, strict=True):
        if spec["offset"] > written:
            pad = bytes(spec["offset"] - written)
            sha.update(pad)
            yield pad
        if a.size:
            view = memoryview(a.reshape(-1).view(np.uint8))
            sha.update(view)
            yield view
        written = spec["offset"] + spec["length"]
    if cap.data_length > written:
        pad = bytes(cap.data_length - written)
        sha.update(pad)
        yield pad
    digest = sha.digest()
    digest_out.append(digest)
    yield digest


def _rechunk(pieces: Iterator[memoryview | bytes], chunk_size: int) -> Iterator[bytes]:
    """Pieces regrouped into bytes of exactly ``chunk_size`` (the last one may be shorter)."""
    pending = bytearray()
    for piece in pieces:
        view = memoryview(piece)
        if pending:
            take = chunk_size - len(pending)
            pending += view[:take]
            view = view[take:]
            if len(pending) < chunk_size:
                continue
            yield bytes(pending)
            pending = bytearray()
        full = len(view) - len(view) % chunk_size
        for start in range(0, full, chunk_size):
            yield bytes(view[start : start + chunk_size])
        pending += view[full:]
    if pending:
        yield bytes(pending)


def iter_snapshot_chunks(
    memory: SpatialMemory, chunk_size: int = 1 << 20, *, created_unix: float | None = None
) -> Iterator[bytes]:
    """The snapshot of ``memory`` as bytes pieces of ``chunk_size`` (the last one shorter).

    The memory is copied when this is called (not when iterated), so the stream is consistent
    even if the memory changes while it is being sent; the copy is at most the memory's budget.
    Concatenated, the pieces equal `snapshot_bytes`.
    """
    return snapshot_stream(memory, chunk_size, created_unix=created_unix)[1]


def snapshot_stream(
    memory: SpatialMemory, chunk_size: int = 1 << 20, *, created_unix: float | None = None
) -> tuple[int, Iterator[bytes]]:
    """(size in bytes, `iter_snapshot_chunks`' pieces) of the snapshot of ``memory``, copied now."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r}: use a positive number of bytes, e.g. 1 << 20")
    cap = _capture(memory, copy=True, created_unix=created_unix)
    return cap.size_bytes, _rechunk(_raw_pieces(cap, []), chunk_size)


def snapshot_bytes(memory: SpatialMemory, *, created_unix: float | None = None) -> bytes:
    """The whole snapshot of ``memory`` as one bytes object."""
    cap = _capture(memory, copy=False, created_unix=created_unix)
    return b"".join(_raw_pieces(cap, []))


def save_snapshot(
    memory: SpatialMemory, path_or_file: str | os.PathLike | BinaryIO, *, created_unix: float | None = None
) -> SnapshotInfo:
    """Write the snapshot of ``memory`` to a path (atomically: temp file, fsync, rename) or a binary file.

    Returns what was written (size, points, SHA-256).
    """
    cap = _capture(memory, copy=False, created_unix=created_unix)
    digest: list[bytes] = []
    path = None
    if isinstance(path_or_file, (str, os.PathLike)):
        path = Path(path_or_file)
        atomic_write(path, _raw_pieces(cap, digest))
    else:
        for piece in _raw_pieces(cap, digest):
            path_or_file.write(piece)
    return SnapshotInfo(
        size_bytes=cap.size_bytes,
        points=cap.points,
        environment_texels=cap.env_filled,
        sha256=digest[0].hex(),
        format_version=(cap.major, FORMAT_MINOR),
        created_utc=cap.created_utc,
        path=None if path is None else str(path),
    )


__all__ = [
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "MAGIC",
    "SnapshotError",
    "SnapshotInfo",
    "iter_snapshot_chunks",
    "save_snapshot",
    "snapshot_bytes",
    "snapshot_stream",
]
