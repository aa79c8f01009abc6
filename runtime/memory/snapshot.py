"""Memory snapshots: a session's spatial memory as one versioned, self-describing byte payload.

No pickle, no ``torch.load``: a snapshot is a fixed prefix (magic, format version, header length), a
JSON header (config, counters, schema, section table), raw little-endian arrays (the live points'
fields, the environment map, the recent camera trail) and a trailing SHA-256 of everything before
it. Loading it gives a memory whose every live point, environment texel, counter and trail position
is bit-identical to the one saved, so it renders the same frames and goes on ingesting as the
original would. The byte-by-byte layout is in ``docs/snapshot_format.md``.

The digest detects corruption (a flipped bit, a truncated upload); it is **not** authentication:
anyone can recompute it. Authenticity comes from an authenticated-encryption envelope that wraps the
whole payload (the security work); the payload is one byte string/stream for that reason.

Plain arrays and dataclasses only (no gRPC): the export RPC streams `iter_snapshot_chunks`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import math
import os
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from runtime.memory.config import PROVENANCES, MemoryConfig
from runtime.memory.environment import EnvironmentMap
from runtime.memory.freespace import KEYFRAME_FIELDS
from runtime.memory.spatial import SCHEMA, SpatialMemory

MAGIC = b"MIRAGEMEM"
OLDEST_MAJOR = 1
"""The oldest major version this runtime still reads (1.x: no free-space keyframes)."""
FORMAT_MAJOR = 3
"""Bumped when a reader of the previous major could misread or refuse a snapshot (2.0 added the keyframe
sections, 3.0 the packed chunks of quantised storage); readers refuse newer majors and read every older
one from OLDEST_MAJOR. A writer uses the oldest major that describes the memory: 2 for full storage
(readable by 2.x runtimes), 3 for quantised storage (a 2.x reader would drop the packed chunks)."""
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
    points: int, texels: int, trail: int, keyframes: int | None, packed: tuple[int, int] | None = None
) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, dtype name, full shape) of every section, in payload order (``keyframes`` None: a 1.x
    snapshot, which has no keyframe sections; ``packed`` (chunks, bytes): a 3.x snapshot's packed
    chunks, None before 3.0)."""
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
    return specs


def _section_table(
    points: int, texels: int, trail: int, keyframes: int | None, packed: tuple[int, int] | None = None
) -> list[dict]:
    """The header's section table: each section 8-aligned, in order, offsets from the data start."""
    table, offset = [], 0
    for name, dtype, shape in _section_specs(points, texels, trail, keyframes, packed):
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
    table = _section_table(points, texels, len(trail), count, shape)
    tensors = [live[name] for name, _, _ in SCHEMA] + [env.rgb, env.last_seen, torch.from_numpy(trail)]
    tensors += [keyframes[name] for name, _, _ in KEYFRAME_FIELDS]
    if packed is not None:
        tensors += [torch.from_numpy(packed[0]), torch.from_numpy(packed[1])]
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
    major = FULL_STORAGE_MAJOR if shape is None else FORMAT_MAJOR
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
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r}: use a positive number of bytes, e.g. 1 << 20")
    cap = _capture(memory, copy=True, created_unix=created_unix)
    return _rechunk(_raw_pieces(cap, []), chunk_size)


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
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                for piece in _raw_pieces(cap, digest):
                    out.write(piece)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
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


# -- reader --------------------------------------------------------------------------------------
class _Reader:
    """Exact reads from bytes, a path or a binary file object, with an end-of-input check."""

    def __init__(self, source):
        self._file: BinaryIO | None = None
        self._owned = False
        self._view: memoryview | None = None
        self._pos = 0
        self.remaining: int | None = None  # bytes left when known
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._view = memoryview(source).cast("B")
            self.remaining = len(self._view)
        elif isinstance(source, (str, os.PathLike)):
            try:
                self._file = open(source, "rb")  # noqa: SIM115 - closed by close()
            except OSError as exc:
                raise SnapshotError(f"cannot open snapshot {os.fspath(source)!r}: {exc}") from exc
            self._owned = True
            self.remaining = os.fstat(self._file.fileno()).st_size
        elif hasattr(source, "read"):
            self._file = source
            try:
                if source.seekable():
                    here = source.tell()
                    self.remaining = source.seek(0, io.SEEK_END) - here
                    source.seek(here)
            except (AttributeError, OSError):
                self.remaining = None
        else:
            raise SnapshotError(
                f"cannot read a snapshot from {type(source).__name__}: pass bytes, a path or a binary file"
            )

    def close(self) -> None:
        if self._owned and self._file is not None:
            self._file.close()

    def read(self, n: int, what: str) -> memoryview:
        """Exactly ``n`` bytes, or SnapshotError naming what was cut off."""
        if self._view is not None:
            out = self._view[self._pos : self._pos + n]
            self._pos += len(out)
        else:
            if self.remaining is not None and self.remaining >= n:
                buf = bytearray(n)  # size known to be there: read straight into place
                got = self._file.readinto(buf) if hasattr(self._file, "readinto") else 0
                while got < n:
                    more = self._file.read(n - got)
                    if not more:
                        break
                    buf[got : got + len(more)] = more
                    got += len(more)
                out = memoryview(buf)[:got]
            else:  # unknown size: grow with what arrives, never more than the input holds
                buf = bytearray()
                while len(buf) < n:
                    more = self._file.read(min(n - len(buf), 1 << 24))
                    if not more:
                        break
                    buf += more
                out = memoryview(buf)
        if self.remaining is not None:
            self.remaining -= len(out)
        if len(out) < n:
            raise SnapshotError(
                f"snapshot is truncated: {what} needs {n} bytes but only {len(out)} remain; "
                "the file was cut short (interrupted copy or upload?): take the snapshot again"
            )
        return out

    def at_end(self) -> bool:
        if self._view is not None:
            return self._pos == len(self._view)
        return not self._file.read(1)


def _check_int(value, what: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SnapshotError(f"snapshot header: {what}={value!r} must be an integer in [{lo}, {hi}]")
    return value


def _reject_constant(name: str):
    raise SnapshotError(f"snapshot header holds {name}, which JSON does not allow")


def _parse_header(raw: memoryview) -> dict:
    try:
        header = json.loads(bytes(raw).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"snapshot header is not UTF-8 JSON ({exc}): the file is damaged") from exc
    if not isinstance(header, dict):
        raise SnapshotError("snapshot header must be a JSON object: the file is damaged")
    missing = sorted(_HEADER_KEYS - header.keys())
    if missing:
        raise SnapshotError(
            f"snapshot header lacks {', '.join(missing)}: the file is damaged or not a snapshot"
        )
    if header["format"] != FORMAT_NAME:
        raise SnapshotError(f"snapshot header format={header['format']!r}, expected {FORMAT_NAME!r}")
    return header


def _config_from(header_config) -> MemoryConfig:
    """The header's MemoryConfig (missing fields take their defaults; unknown fields are refused)."""
    if not isinstance(header_config, dict):
        raise SnapshotError("snapshot header: config must be a JSON object")
    known = {f.name: f for f in dataclasses.fields(MemoryConfig)}
    unknown = sorted(header_config.keys() - known.keys())
    if unknown:
        raise SnapshotError(
            f"snapshot config has fields this runtime does not know ({', '.join(unknown)}): it was written "
            "by a newer Mirage; upgrade this runtime to load it"
        )
    defaults = MemoryConfig()
    values = {}
    for name, value in header_config.items():
        default = getattr(defaults, name)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise SnapshotError(f"snapshot header: config.{name}={value!r} must be a string")
            values[name] = value
        elif isinstance(default, int):
            values[name] = _check_int(value, f"config.{name}", -(2**63), 2**63 - 1)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SnapshotError(f"snapshot header: config.{name}={value!r} must be a number")
        else:
            values[name] = float(value)
    config = MemoryConfig(**values)
    try:
        config.validate()
    except ValueError as exc:
        raise SnapshotError(f"snapshot config is invalid: {exc}") from exc
    return config


def _check_layout(header: dict, config: MemoryConfig, major: int) -> tuple[dict, list[dict]]:
    """Counters and section table, checked against the schema and each other."""
    if header["schema"] != _schema_json():
        raise SnapshotError(
            f"snapshot point schema {header['schema']!r} differs from this runtime's {_schema_json()!r}: "
            "load it with the Mirage version that wrote it"
        )
    counters = header["counters"]
    if not isinstance(counters, dict) or sorted(counters) != sorted(_COUNTER_KEYS):
        raise SnapshotError(f"snapshot header: counters must hold exactly {', '.join(_COUNTER_KEYS)}")
    for key in _COUNTER_KEYS:
        _check_int(counters[key], f"counters.{key}")
    later = header.get("counters_1_1", {})
    if not isinstance(later, dict) or not set(later) <= set(_COUNTER_KEYS_1_1):
        raise SnapshotError(f"snapshot header: counters_1_1 may hold only {', '.join(_COUNTER_KEYS_1_1)}")
    for key in _COUNTER_KEYS_1_1:
        counters[key] = _check_int(later.get(key, 0), f"counters_1_1.{key}")
    env = header["environment"]
    texels = config.env_width * config.env_height
    expected_env = {"width": config.env_width, "height": config.env_height, "texels": texels}
    if not isinstance(env, dict) or {k: env.get(k) for k in expected_env} != expected_env:
        raise SnapshotError(
            f"snapshot header: environment {env!r} does not match the config's "
            f"{config.env_width}x{config.env_height} map"
        )
    _check_int(env.get("filled"), "environment.filled", 0, texels)
    trail = _check_int(header["trail"], "trail", 0, MAX_TRAIL)
    keyframes = None  # 1.x: no keyframe sections
    if major >= 2:
        if "keyframes" not in header:
            raise SnapshotError("snapshot header lacks keyframes (format 2.x): the file is damaged")
        keyframes = _check_int(header["keyframes"], "keyframes", 0, MAX_KEYFRAMES)
    if not isinstance(header["created_utc"], str):
        raise SnapshotError("snapshot header: created_utc must be a string")
    packed = None  # full storage: no packed chunks
    if config.storage == "quantised":
        spec = header.get("packed")
        if major < 3 or not isinstance(spec, dict) or sorted(spec) != ["bytes", "chunks", "now"]:
            raise SnapshotError(
                "snapshot header: quantised storage needs format 3.x and packed = {chunks, bytes, now}: "
                "the file is damaged"
            )
        counters["now"] = _check_int(spec["now"], "packed.now")
        packed = (
            _check_int(spec["chunks"], "packed.chunks", 0, 2**40),
            _check_int(spec["bytes"], "packed.bytes"),
        )
    elif "packed" in header:
        raise SnapshotError(
            "snapshot holds packed chunks but its config says storage='full': the file is damaged"
        )
    points = counters["points"]
    expected = _section_table(points, texels, trail, keyframes, packed)
    if header["sections"] != expected:
        raise SnapshotError(
            f"snapshot section table does not match {points} points, a {texels}-texel environment map, "
            f"{trail} trail positions and {keyframes or 0} free-space keyframes "
            f"(dtypes, shapes, offsets and lengths must follow the documented layout): the file is damaged"
        )
    if header["data_length"] != _data_length(expected):
        raise SnapshotError(
            f"snapshot header: data_length={header['data_length']!r}, the sections need "
            f"{_data_length(expected)} bytes: the file is damaged"
        )
    return counters, expected


def _max_points(config: MemoryConfig) -> int:
    """How many points a SpatialMemory with ``config`` may hold (0 when it cannot be built).

    Asks SpatialMemory itself on the meta device (no storage is allocated), so the answer follows
    whatever its budget accounting is (point storage, indexes, environment map).
    """
    try:
        return SpatialMemory(config, device="meta").max_points
    except ValueError:
        return 0


def _budget_needed(config: MemoryConfig, points: int) -> int:
    """The smallest budget (bytes) whose memory holds ``points`` (a lower bound past PROBE_LIMIT_BYTES)."""
    env_bytes = EnvironmentMap.nbytes_for(config.env_width, config.env_height)
    lo = max(2**20, env_bytes + points * _schema_bytes_per_point())  # point arrays + map: never less

    def fits(budget: int) -> bool:
        return _max_points(dataclasses.replace(config, budget_bytes=budget)) >= points

    if fits(lo):
        return lo
    hi = lo
    while not fits(hi):
        lo, hi = hi, 2 * hi
        if hi > PROBE_LIMIT_BYTES:
            return lo
    while hi - lo > 1:  # fits(hi) and not fits(lo)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


def _check_budget(points: int, config: MemoryConfig, budget_bytes: int | None) -> MemoryConfig:
    """The config to load with (``budget_bytes`` replacing the saved budget) once the points fit it."""
    if budget_bytes is not None:
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int):
            raise SnapshotError(f"budget_bytes={budget_bytes!r}: use an int number of bytes (or None)")
        config = dataclasses.replace(config, budget_bytes=budget_bytes)
    env_bytes = EnvironmentMap.nbytes_for(config.env_width, config.env_height)
    lower = env_bytes + points * _schema_bytes_per_point()  # cheap necessary condition first
    if config.budget_bytes < lower or config.budget_bytes < 2**20 or _max_points(config) < points:
        need = _budget_needed(config, points)
        raise SnapshotError(
            f"snapshot does not fit a budget of {config.budget_bytes} bytes: its {points} points and the "
            f"{config.env_width}x{config.env_height} environment map need a memory budget of at least "
            f"{need} bytes; load it with budget_bytes={need} or more"
        )
    return config


def _arrays(data: memoryview, table: list[dict]) -> dict[str, np.ndarray]:
    """Zero-copy little-endian views of every section."""
    out = {}
    for spec in table:
        dtype = _DTYPES[spec["dtype"]][1]
        count = math.prod(spec["shape"])
        a = np.frombuffer(data, dtype=dtype, count=count, offset=spec["offset"])
        out[spec["name"]] = a.reshape(spec["shape"])
    return out


def _check_values(arrays: dict[str, np.ndarray], env_filled: int) -> None:
    """Values the memory relies on (a digest-valid snapshot may still be hand-made)."""
    problems = []
    if not np.isin(arrays["points/provenance"], PROVENANCES).all():
        problems.append(f"provenance outside {PROVENANCES}")
    if not np.isfinite(arrays["points/xyz"]).all():
        problems.append("non-finite positions")
    radius = arrays["points/radius"]
    if not (np.isfinite(radius) & (radius >= 0)).all():
        problems.append("negative or non-finite radii")
    if not np.isfinite(arrays["state/trail"]).all():
        problems.append("non-finite trail positions")
    if "state/keyframes/frame" in arrays:
        k = {name: arrays[f"state/keyframes/{name}"] for name, _, _ in KEYFRAME_FIELDS}
        finite = all(np.isfinite(k[n]).all() for n in ("w2c", "intrinsics", "position", "axis"))
        if not finite or (k["frame"] < 0).any() or (k["size"] <= 0).any():
            problems.append("keyframes with non-finite cameras, negative frames or empty sizes")
        if np.isnan(k["depth"]).any() or (k["depth"] < 0).any():
            problems.append("keyframe depths that are NaN or negative")
    last_seen = arrays["env/last_seen"]
    if (last_seen < -1).any():
        problems.append("environment last_seen below -1")
    elif int((last_seen >= 0).sum()) != env_filled:
        problems.append(f"environment filled texels differ from the header's {env_filled}")
    if problems:
        raise SnapshotError(f"snapshot holds invalid values ({'; '.join(problems)}): refusing to load it")


def load_snapshot(
    source: str | os.PathLike | BinaryIO | bytes | bytearray | memoryview,
    *,
    budget_bytes: int | None = None,
    device: str | torch.device = "cpu",
) -> SpatialMemory:
    """A new SpatialMemory restored bit-exactly from a snapshot (path, binary file or bytes).

    ``budget_bytes`` replaces the saved budget (it must hold the snapshot's points). Everything is
    checked (magic, version, header, layout, budget, size, digest, values) before the memory is
    built; any failure raises SnapshotError saying what is wrong.
    """
    reader = _Reader(source)
    try:
        magic, major, minor, header_len = PREFIX.unpack(reader.read(PREFIX.size, "the fixed prefix"))
        if magic != MAGIC:
            raise SnapshotError(
                f"not a Mirage memory snapshot: it starts with {bytes(magic)!r}, expected {MAGIC!r}"
            )
        if major > FORMAT_MAJOR:
            raise SnapshotError(
                f"snapshot format {major}.{minor} is newer than this runtime reads (format {FORMAT_MAJOR}.x, "
                f"up to {FORMAT_MAJOR}.{FORMAT_MINOR}): upgrade Mirage to load it"
            )
        if major < OLDEST_MAJOR:
            raise SnapshotError(
                f"snapshot format {major}.{minor} is older than this runtime reads (formats "
                f"{OLDEST_MAJOR}.x to {FORMAT_MAJOR}.x)"
            )
        if header_len > MAX_HEADER_BYTES:
            raise SnapshotError(
                f"snapshot header claims {header_len} bytes (at most {MAX_HEADER_BYTES}): the file is damaged"
            )
        raw_header = reader.read(header_len, "the header")
        header = _parse_header(raw_header)
        config = _config_from(header["config"])
        counters, table = _check_layout(header, config, major)
        # packed chunks count as the full-precision points whose bytes they take
        per_point = SpatialMemory.layout(config)[0]
        packed_bytes = header["packed"]["bytes"] if config.storage == "quantised" else 0
        config = _check_budget(counters["points"] + -(-packed_bytes // per_point), config, budget_bytes)
        head_len = PREFIX.size + header_len
        pad = _align(head_len) - head_len
        rest = pad + header["data_length"] + DIGEST_BYTES
        if reader.remaining is not None and reader.remaining != rest:
            state = "truncated" if reader.remaining < rest else "followed by extra bytes"
            raise SnapshotError(
                f"snapshot is {state}: its header says {head_len + rest} bytes in all, the input holds "
                f"{head_len + reader.remaining}; take the snapshot again"
            )
        body = reader.read(rest, "the arrays and digest")
        if not reader.at_end():
            raise SnapshotError("snapshot is followed by extra bytes after its digest: the file is damaged")
    finally:
        reader.close()
    sha = hashlib.sha256(PREFIX.pack(magic, major, minor, header_len))
    sha.update(raw_header)
    sha.update(body[:-DIGEST_BYTES])
    if sha.digest() != bytes(body[-DIGEST_BYTES:]):
        raise SnapshotError(
            "snapshot digest mismatch: the bytes were changed or damaged after it was written; "
            "refusing to load it (use an intact copy)"
        )
    if any(body[:pad]):
        raise SnapshotError("snapshot header padding is not zero: the file is damaged")
    arrays = _arrays(body[pad:-DIGEST_BYTES], table)
    _check_values(arrays, header["environment"]["filled"])
    return _build(config, counters, arrays, device)


def _build(config: MemoryConfig, counters: dict, arrays: dict[str, np.ndarray], device) -> SpatialMemory:
    memory = SpatialMemory(config, device=device)
    memory.reset()
    points = counters["points"]
    if "packed/blobs" in arrays:  # quantised storage: the packed chunks first, then the hot points
        try:
            memory.restore_packed(
                arrays["packed/lengths"], np.ascontiguousarray(arrays["packed/blobs"]), hot_points=points
            )
        except ValueError as exc:
            raise SnapshotError(
                f"snapshot holds an invalid packed chunk ({exc}): refusing to load it"
            ) from exc
        xyz = torch.from_numpy(arrays["points/xyz"].astype(np.float32))
        if points and memory.chunks.existing_rows(xyz).numel():
            raise SnapshotError("snapshot holds points in a chunk it also holds packed: the file is damaged")
    for start in range(0, points, LOAD_BATCH_POINTS):
        end = min(start + LOAD_BATCH_POINTS, points)
        batch = {}
        for name, dtype, _ in SCHEMA:
            native = arrays[f"points/{name}"][start:end].astype(
                _DTYPES[_DTYPE_NAMES[dtype]][1].newbyteorder("=")
            )
            batch[name] = torch.from_numpy(native).to(memory.device)
        memory._append(batch)
    if memory.hot_points != points:
        raise SnapshotError(
            f"restored {memory.hot_points} points of {points}: this runtime's memory refused some"
        )
    env = memory.env
    env.rgb.copy_(torch.from_numpy(arrays["env/rgb"].copy()))
    env.last_seen.copy_(torch.from_numpy(arrays["env/last_seen"].astype(np.int32)))
    env.filled_count = int((env.last_seen >= 0).sum())
    memory.restore_trajectory(torch.from_numpy(arrays["state/trail"].astype(np.float64)))
    if "state/keyframes/frame" in arrays:  # the newest the memory's budget keeps
        total = len(arrays["state/keyframes/frame"])
        first = total - min(total, memory.freespace.capacity)
        memory.freespace.restore(
            {
                name: torch.from_numpy(
                    arrays[f"state/keyframes/{name}"][first:].astype(
                        _DTYPES[_DTYPE_NAMES[dtype]][1].newbyteorder("=")
                    )
                )
                for name, dtype, _ in KEYFRAME_FIELDS
            }
        )
    memory._chunks_evicted_total = counters.get("chunks_evicted_total", 0)
    memory._refined_total = counters.get("points_refined_total", 0)
    memory._pruned_total = counters["points_pruned_total"]
    memory._carved_total = counters["points_carved_total"]
    memory._frames = counters["frames_ingested"]
    memory._now = counters.get("now", 0)
    memory.restore_written()
    return memory


__all__ = [
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "MAGIC",
    "SnapshotError",
    "SnapshotInfo",
    "iter_snapshot_chunks",
    "load_snapshot",
    "save_snapshot",
    "snapshot_bytes",
]
