"""Image and depth encode/decode shared by client and server (numpy; Pillow only for PNG/JPEG).

No protobuf here: the encodings are plain ints whose values equal the mirage.v1 wire enums
(FrameEncoding, DepthEncoding). All multi-byte wire formats are little-endian.
Depth convention: float32 metres, 0 = unknown, +inf = at infinity (sky).
"""

from __future__ import annotations

import io
from enum import IntEnum

import numpy as np

FLOAT16_MAX = 65504.0
UINT16_MM_MAX = 65534  # largest finite millimetre value; 65535 means +inf
UINT16_MM_INF = 65535
_PIL_MODES = {"RGB", "RGBA", "L", "LA", "P", "PA", "1"}  # 8-bit modes converted to RGB on decode


class FrameEncoding(IntEnum):
    RAW_RGB8 = 1
    PNG = 2
    JPEG = 3


class DepthEncoding(IntEnum):
    FLOAT16_METERS = 1
    UINT16_MM = 2
    NONE = 3


class CodecError(ValueError):
    """Bytes or arrays that do not match their declared encoding; the message says how to fix it."""


def frame_encoding(value: int) -> FrameEncoding:
    """Wire value -> FrameEncoding; 0 (unspecified) means RAW_RGB8."""
    try:
        return FrameEncoding(int(value) or FrameEncoding.RAW_RGB8)
    except ValueError:
        names = ", ".join(f"{e.name}={e.value}" for e in FrameEncoding)
        raise CodecError(f"unknown frame encoding {value}; use one of {names} (0 means RAW_RGB8)") from None


def depth_encoding(value: int) -> DepthEncoding:
    """Wire value -> DepthEncoding; 0 (unspecified) means FLOAT16_METERS."""
    try:
        return DepthEncoding(int(value) or DepthEncoding.FLOAT16_METERS)
    except ValueError:
        names = ", ".join(f"{e.name}={e.value}" for e in DepthEncoding)
        raise CodecError(
            f"unknown depth encoding {value}; use one of {names} (0 means FLOAT16_METERS)"
        ) from None


def _check_dims(width: int, height: int, what: str) -> tuple[int, int]:
    w, h = int(width), int(height)
    if w <= 0 or h <= 0:
        raise CodecError(f"{what} needs a positive width and height, got {w}x{h}")
    return w, h


def _check_size(data: bytes, expected: int, what: str, fix: str) -> None:
    if len(data) != expected:
        raise CodecError(f"{what} needs {expected} bytes, got {len(data)}: {fix}")


def encode_rgb(rgb: np.ndarray, encoding: int, jpeg_quality: int = 90) -> bytes:
    """[H, W, 3] uint8 -> bytes in `encoding` (RAW_RGB8: rows top to bottom, RGB interleaved)."""
    enc = frame_encoding(encoding)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise CodecError(f"encode_rgb needs a [H, W, 3] uint8 array, got {rgb.shape} {rgb.dtype}")
    if enc == FrameEncoding.RAW_RGB8:
        return np.ascontiguousarray(rgb).tobytes()
    from PIL import Image

    buf = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(rgb))
    if enc == FrameEncoding.PNG:
        image.save(buf, format="PNG", compress_level=1)
    else:
        if not 1 <= int(jpeg_quality) <= 100:
            raise CodecError(f"jpeg_quality must be 1..100, got {jpeg_quality}")
        image.save(buf, format="JPEG", quality=int(jpeg_quality))
    return buf.getvalue()


def decode_rgb(data: bytes, encoding: int, width: int, height: int) -> np.ndarray:
    """Bytes -> writable [height, width, 3] uint8; raises CodecError on any mismatch."""
    enc = frame_encoding(encoding)
    w, h = _check_dims(width, height, f"{enc.name} frame")
    if enc == FrameEncoding.RAW_RGB8:
        _check_size(
            data, h * w * 3, f"RAW_RGB8 frame of {w}x{h}", "send height*width*3 bytes, rows top to bottom"
        )
        return np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3).copy()
    from PIL import Image, UnidentifiedImageError

    try:  # restricting formats means only the declared decoder ever parses the bytes
        image = Image.open(io.BytesIO(data), formats=[enc.name])
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        why = f"starts {bytes(data[:8])!r}" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise CodecError(
            f"frame declared {enc.name} but its {len(data)} bytes are not a readable {enc.name} image "
            f"({why}); encode the frame as {enc.name} or declare the encoding it really has"
        ) from None
    with image:
        if image.size != (w, h):  # checked before decoding the pixels
            got = f"{image.size[0]}x{image.size[1]}"
            raise CodecError(f"{enc.name} image is {got} but the frame declares {w}x{h}: send {w}x{h} images")
        if image.mode not in _PIL_MODES:
            raise CodecError(
                f"{enc.name} image has mode {image.mode!r}; send 8-bit RGB (RGBA or grayscale are converted)"
            )
        try:
            image.load()
            if image.mode != "RGB":
                image = image.convert("RGB")
            out = np.array(image, dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise CodecError(
                f"{enc.name} frame of {w}x{h} could not be decoded ({exc}); send a complete image"
            ) from None
    return out.reshape(h, w, 3)


def encode_depth(depth: np.ndarray, encoding: int) -> bytes:
    """[H, W] float metres -> bytes. 0 (unknown) and +inf are preserved in both encodings.

    FLOAT16_METERS: values above 65504 become +inf; other values pass unchanged (the server
    sanitizes NaN/negative). UINT16_MM: round(mm) clipped to [1, 65534], >= 65.534 m and +inf ->
    65535, and NaN/negative (unrepresentable) -> 0 unknown.
    """
    enc = depth_encoding(encoding)
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise CodecError(f"encode_depth needs a [H, W] array of metres, got shape {d.shape}")
    if enc == DepthEncoding.FLOAT16_METERS:
        with np.errstate(over="ignore"):
            h16 = d.astype("<f2")
        h16[d > FLOAT16_MAX] = np.inf
        h16[(d > 0) & (h16 == 0)] = np.float16(6e-8)  # keep tiny known depths known (smallest subnormal)
        return h16.tobytes()
    if enc == DepthEncoding.UINT16_MM:
        with np.errstate(invalid="ignore", over="ignore"):
            mm = np.clip(np.rint(d.astype(np.float64) * 1000.0), 1, UINT16_MM_MAX)
        out = np.where(d > 0, mm, 0).astype("<u2")
        out[d >= UINT16_MM_MAX / 1000.0] = UINT16_MM_INF
        return out.tobytes()
    raise CodecError("depth encoding NONE carries no depth: choose FLOAT16_METERS or UINT16_MM to send depth")


def decode_depth(data: bytes, encoding: int, width: int, height: int) -> np.ndarray:
    """Bytes -> writable [height, width] float32 metres (0 unknown, +inf at infinity)."""
    enc = depth_encoding(encoding)
    if enc == DepthEncoding.NONE:
        raise CodecError("depth encoding NONE carries no depth: there is nothing to decode")
    w, h = _check_dims(width, height, f"{enc.name} depth")
    _check_size(
        data, h * w * 2, f"{enc.name} depth of {w}x{h}", "send height*width little-endian 2-byte values"
    )
    if enc == DepthEncoding.FLOAT16_METERS:
        return np.frombuffer(data, dtype="<f2").reshape(h, w).astype(np.float32)
    mm = np.frombuffer(data, dtype="<u2").reshape(h, w)
    out = mm.astype(np.float32) / np.float32(1000.0)
    out[mm == UINT16_MM_INF] = np.inf
    return out


def sanitize_depth(depth: np.ndarray) -> tuple[np.ndarray, int]:
    """NaN, negative and -inf -> 0 (unknown). Returns (clean float32 copy, number of values masked)."""
    out = np.array(depth, dtype=np.float32, copy=True)
    bad = ~(out >= 0)  # NaN compares False, so it is caught here too
    out[bad] = 0.0
    return out, int(np.count_nonzero(bad))


MAX_INSTANCE_ID = 2**31 - 1
"""Largest object id (memory keeps ids as int32; 0 is no object)."""


def encode_instance_ids(ids: np.ndarray) -> bytes:
    """Signed integer object ids [H, W] (0 or negative: no object) -> little-endian uint32 per pixel.
    Ids above MAX_INSTANCE_ID, and non-integer arrays, raise CodecError."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise CodecError(f"instance_ids must be a 2-D integer array, not {ids.dtype} {ids.shape}")
    if ids.size and int(ids.max()) > MAX_INSTANCE_ID:
        raise CodecError(f"instance id {int(ids.max())} is above {MAX_INSTANCE_ID}: renumber the objects")
    return np.ascontiguousarray(np.maximum(ids, 0), dtype="<u4").tobytes()


def decode_instance_ids(data: bytes, width: int, height: int) -> np.ndarray | None:
    """Optional little-endian uint32 per pixel (0: no object) -> [height, width] uint32; empty -> None.
    Values above MAX_INSTANCE_ID (a negative id written as uint32, for one) raise CodecError."""
    if not data:
        return None
    w, h = _check_dims(width, height, "instance_ids")
    _check_size(
        data, h * w * 4, f"instance_ids of {w}x{h}", "send height*width little-endian uint32, or nothing"
    )
    ids = np.frombuffer(data, dtype="<u4").reshape(h, w).astype(np.uint32)
    if ids.size and int(ids.max()) > MAX_INSTANCE_ID:
        raise CodecError(
            f"instance id {int(ids.max())} is above {MAX_INSTANCE_ID} (a negative id sent as uint32?): "
            "send 0 for no object and ids from 1 to 2^31 - 1"
        )
    return ids
