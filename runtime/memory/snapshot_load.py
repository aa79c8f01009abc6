"""Load a memory snapshot (`runtime.memory.snapshot` writes them; the format is
docs/snapshot_format.md): every length, offset, dtype, shape and value is checked against the format
and the budget before anything is built, and the SHA-256 is verified, so a truncated, corrupt or
hostile file is refused with a SnapshotError saying what is wrong."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
from typing import BinaryIO

import numpy as np
import torch

from runtime.memory.config import PROVENANCE_OBSERVED, PROVENANCES, MemoryConfig
from runtime.memory.environment import EnvironmentMap
from runtime.memory.freespace import KEYFRAME_FIELDS
from runtime.memory.snapshot import (
    _COUNTER_KEYS,
    _COUNTER_KEYS_1_1,
    _DTYPE_NAMES,
    _DTYPES,
    _HEADER_KEYS,
    DIGEST_BYTES,
    FORMAT_MAJOR,
    FORMAT_MINOR,
    FORMAT_NAME,
    LOAD_BATCH_POINTS,
    MAGIC,
    MAX_HEADER_BYTES,
    MAX_KEYFRAMES,
    MAX_TRAIL,
    OLDEST_MAJOR,
    PREFIX,
    PROBE_LIMIT_BYTES,
    SnapshotError,
    _align,
    _data_length,
    _schema_bytes_per_point,
    _schema_json,
    _section_table,
)
from runtime.memory.spatial import SpatialMemory
from runtime.memory.store import SCHEMA


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
                "snapshot header: quantised storage needs format 3.x or later and packed = {chunks, bytes, now}: "
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
    expected = _section_table(points, texels, trail, keyframes, packed, env_provenance=major >= 4)
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
    elif "env/provenance" in arrays:
        provenance, filled = arrays["env/provenance"], last_seen >= 0
        if not np.isin(provenance[filled], PROVENANCES).all() or provenance[~filled].any():
            problems.append(f"environment provenance outside {PROVENANCES} (or set on empty texels)")
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
    if "env/provenance" in arrays:
        env.provenance.copy_(torch.from_numpy(arrays["env/provenance"].copy()))
    else:  # before 4.0 the map kept no provenance: what it holds counts as observed
        env.provenance.copy_((env.last_seen >= 0).to(torch.uint8) * PROVENANCE_OBSERVED)
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
