"""plugin_bridge.codec: image and depth wire formats."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from plugin_bridge.codec import (
    CodecError,
    DepthEncoding,
    FrameEncoding,
    decode_depth,
    decode_instance_ids,
    decode_rgb,
    depth_encoding,
    encode_depth,
    encode_rgb,
    frame_encoding,
    sanitize_depth,
)

W, H = 32, 24


def _noise_rgb(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _smooth_rgb(h: int = 64, w: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / 15.0)
    g = 128 + 100 * np.cos(y / 11.0)
    b = 60 + 1.5 * x
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# --- enums ------------------------------------------------------------------------------------


def test_enum_values_match_wire_numbers():
    assert [int(e) for e in FrameEncoding] == [1, 2, 3]
    assert [int(e) for e in DepthEncoding] == [1, 2, 3]


def test_unspecified_encodings_are_normalised():
    assert frame_encoding(0) is FrameEncoding.RAW_RGB8
    assert depth_encoding(0) is DepthEncoding.FLOAT16_METERS
    assert frame_encoding(3) is FrameEncoding.JPEG
    assert depth_encoding(DepthEncoding.UINT16_MM) is DepthEncoding.UINT16_MM


def test_unknown_encoding_is_codec_error_naming_choices():
    with pytest.raises(CodecError, match=r"unknown frame encoding 7.*PNG=2"):
        frame_encoding(7)
    with pytest.raises(CodecError, match=r"unknown depth encoding 9.*UINT16_MM=2"):
        depth_encoding(9)
    assert issubclass(CodecError, ValueError)


# --- rgb --------------------------------------------------------------------------------------


@pytest.mark.parametrize("enc", [FrameEncoding.RAW_RGB8, FrameEncoding.PNG, 0, 2])
def test_lossless_rgb_round_trip(enc):
    rgb = _noise_rgb()
    out = decode_rgb(encode_rgb(rgb, enc), enc, W, H)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.writeable
    out[0, 0] = 0  # writable copy, not a view into the bytes


def test_raw_layout_is_rows_top_to_bottom_rgb_interleaved():
    rgb = _noise_rgb()
    data = encode_rgb(rgb, FrameEncoding.RAW_RGB8)
    assert data == rgb.tobytes() and len(data) == H * W * 3
    assert data[:3] == bytes(rgb[0, 0]) and data[3 * W : 3 * W + 3] == bytes(rgb[1, 0])


def test_raw_accepts_non_contiguous_input():
    rgb = _noise_rgb(h=H, w=2 * W)[:, ::2]
    assert not rgb.flags.c_contiguous
    np.testing.assert_array_equal(decode_rgb(encode_rgb(rgb, 1), 1, W, H), rgb)
    np.testing.assert_array_equal(decode_rgb(encode_rgb(rgb, 2), 2, W, H), rgb)


def test_jpeg_round_trip_is_close_on_a_smooth_image():
    rgb = _smooth_rgb()
    data = encode_rgb(rgb, FrameEncoding.JPEG, jpeg_quality=90)
    assert data[:2] == b"\xff\xd8"
    out = decode_rgb(data, FrameEncoding.JPEG, 96, 64)
    assert out.shape == (64, 96, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 3
    low = encode_rgb(rgb, FrameEncoding.JPEG, jpeg_quality=20)
    assert len(low) < len(data)


def test_bad_jpeg_quality_and_bad_arrays_rejected():
    with pytest.raises(CodecError, match="jpeg_quality"):
        encode_rgb(_noise_rgb(), FrameEncoding.JPEG, jpeg_quality=0)
    with pytest.raises(CodecError, match=r"\[H, W, 3\] uint8"):
        encode_rgb(np.zeros((H, W, 4), np.uint8), FrameEncoding.RAW_RGB8)
    with pytest.raises(CodecError, match=r"\[H, W, 3\] uint8"):
        encode_rgb(np.zeros((H, W, 3), np.float32), FrameEncoding.PNG)


def test_raw_wrong_size_message():
    with pytest.raises(CodecError) as info:
        decode_rgb(b"\0" * 36000, FrameEncoding.RAW_RGB8, 128, 96)
    msg = str(info.value)
    assert "RAW_RGB8 frame of 128x96 needs 36864 bytes, got 36000" in msg
    assert "height*width*3" in msg


@pytest.mark.parametrize("w,h", [(0, 10), (10, 0), (-1, 5)])
def test_non_positive_dimensions_rejected(w, h):
    with pytest.raises(CodecError, match="positive width and height"):
        decode_rgb(b"", FrameEncoding.RAW_RGB8, w, h)
    with pytest.raises(CodecError, match="positive width and height"):
        decode_depth(b"", DepthEncoding.FLOAT16_METERS, w, h)


@pytest.mark.parametrize("enc", [FrameEncoding.PNG, FrameEncoding.JPEG])
def test_garbage_bytes_rejected(enc):
    with pytest.raises(CodecError, match=f"declared {enc.name}.*not a readable {enc.name}"):
        decode_rgb(b"definitely not an image" * 10, enc, W, H)
    with pytest.raises(CodecError):
        decode_rgb(b"", enc, W, H)


def test_declared_encoding_must_match_the_bytes():
    png = encode_rgb(_noise_rgb(), FrameEncoding.PNG)
    with pytest.raises(CodecError, match="declared JPEG"):
        decode_rgb(png, FrameEncoding.JPEG, W, H)
    jpeg = encode_rgb(_noise_rgb(), FrameEncoding.JPEG)
    with pytest.raises(CodecError, match="declared PNG"):
        decode_rgb(jpeg, FrameEncoding.PNG, W, H)


def test_embedded_png_of_wrong_dimensions():
    png = encode_rgb(_noise_rgb(h=20, w=30), FrameEncoding.PNG)
    with pytest.raises(CodecError) as info:
        decode_rgb(png, FrameEncoding.PNG, W, H)
    msg = str(info.value)
    assert "30x20" in msg and f"{W}x{H}" in msg


def test_truncated_png_rejected():
    png = encode_rgb(_noise_rgb(), FrameEncoding.PNG)
    with pytest.raises(CodecError, match="PNG"):
        decode_rgb(png[: len(png) // 2], FrameEncoding.PNG, W, H)


def test_grayscale_and_rgba_png_converted_to_rgb():
    gray = np.random.default_rng(1).integers(0, 256, size=(H, W), dtype=np.uint8)
    out = decode_rgb(_png_bytes(gray), FrameEncoding.PNG, W, H)
    assert out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))
    rgba = np.concatenate([_noise_rgb(), np.full((H, W, 1), 255, np.uint8)], axis=2)
    out = decode_rgb(_png_bytes(rgba), FrameEncoding.PNG, W, H)
    np.testing.assert_array_equal(out, rgba[..., :3])


def test_16_bit_png_rejected_with_mode_in_message():
    deep = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 50).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(deep).save(buf, format="PNG")
    with pytest.raises(CodecError, match="mode"):
        decode_rgb(buf.getvalue(), FrameEncoding.PNG, W, H)


# --- depth ------------------------------------------------------------------------------------


def _depth(seed: int = 0) -> np.ndarray:
    d = np.random.default_rng(seed).uniform(0.05, 60.0, size=(H, W)).astype(np.float32)
    d[0, :4] = 0.0
    d[1, :4] = np.inf
    return d


def test_float16_depth_round_trip():
    d = _depth()
    data = encode_depth(d, DepthEncoding.FLOAT16_METERS)
    assert len(data) == H * W * 2
    np.testing.assert_array_equal(np.frombuffer(data, "<f2"), d.astype("<f2").ravel())
    out = decode_depth(data, DepthEncoding.FLOAT16_METERS, W, H)
    assert out.dtype == np.float32 and out.shape == (H, W) and out.flags.writeable
    assert np.all(out[0, :4] == 0) and np.all(np.isposinf(out[1, :4]))
    finite = np.isfinite(d) & (d > 0)
    np.testing.assert_allclose(out[finite], d[finite], rtol=2**-11)


def test_float16_depth_beyond_max_becomes_inf():
    d = np.array([[65504.0, 65510.0, 70000.0, 1e30]], np.float32)
    out = decode_depth(encode_depth(d, DepthEncoding.FLOAT16_METERS), DepthEncoding.FLOAT16_METERS, 4, 1)
    assert out[0, 0] == 65504.0
    assert np.all(np.isposinf(out[0, 1:]))


def test_float16_tiny_positive_depth_stays_known():
    d = np.array([[1e-9, 0.0]], np.float32)
    out = decode_depth(encode_depth(d, 0), 0, 2, 1)
    assert out[0, 0] > 0 and out[0, 1] == 0


def test_uint16_mm_depth_round_trip():
    d = _depth(3)
    d[2, 0] = 0.0002  # below 0.5 mm: still known, clipped to 1 mm
    d[2, 1] = 65.534
    d[2, 2] = 100.0
    data = encode_depth(d, DepthEncoding.UINT16_MM)
    mm = np.frombuffer(data, "<u2").reshape(H, W)
    assert np.all(mm[0, :4] == 0) and np.all(mm[1, :4] == 65535)
    assert mm[2, 0] == 1 and mm[2, 1] == 65535 and mm[2, 2] == 65535
    out = decode_depth(data, DepthEncoding.UINT16_MM, W, H)
    assert out.dtype == np.float32 and out.flags.writeable
    assert np.all(out[0, :4] == 0) and np.all(np.isposinf(out[1, :4]))
    ordinary = np.isfinite(d) & (d > 0.001) & (d < 65.0)
    assert np.abs(out[ordinary] - d[ordinary]).max() <= 0.0005 + 1e-6


def test_uint16_mm_largest_finite_value():
    d = np.array([[65.5339, 65.533]], np.float32)
    mm = np.frombuffer(encode_depth(d, DepthEncoding.UINT16_MM), "<u2")
    assert list(mm) == [65534, 65533]


def test_uint16_unrepresentable_values_become_unknown():
    d = np.array([[np.nan, -1.0, -np.inf, 2.0]], np.float32)
    mm = np.frombuffer(encode_depth(d, DepthEncoding.UINT16_MM), "<u2")
    assert list(mm) == [0, 0, 0, 2000]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.0009765625, max_value=65.0, width=32), min_size=1, max_size=50))
def test_uint16_mm_round_trip_property(values):
    d = np.array(values, np.float32)[None, :]
    out = decode_depth(encode_depth(d, DepthEncoding.UINT16_MM), DepthEncoding.UINT16_MM, d.shape[1], 1)
    assert np.abs(out.astype(np.float64) - d).max() <= 0.0005 + 1e-6


def test_depth_wrong_size_and_none():
    with pytest.raises(CodecError, match=r"FLOAT16_METERS depth of 32x24 needs 1536 bytes, got 1535"):
        decode_depth(b"\0" * 1535, DepthEncoding.FLOAT16_METERS, W, H)
    with pytest.raises(CodecError, match="UINT16_MM depth .* got 0"):
        decode_depth(b"", DepthEncoding.UINT16_MM, W, H)
    with pytest.raises(CodecError, match="NONE"):
        decode_depth(b"\0" * 1536, DepthEncoding.NONE, W, H)
    with pytest.raises(CodecError, match="NONE"):
        encode_depth(np.zeros((H, W), np.float32), DepthEncoding.NONE)
    with pytest.raises(CodecError, match=r"\[H, W\]"):
        encode_depth(np.zeros((H, W, 1), np.float32), DepthEncoding.FLOAT16_METERS)


def test_depth_is_little_endian():
    d = np.array([[1.0]], np.float32)
    assert encode_depth(d, DepthEncoding.FLOAT16_METERS) == b"\x00\x3c"
    assert encode_depth(d, DepthEncoding.UINT16_MM) == (1000).to_bytes(2, "little")


def test_sanitize_depth_counts_and_copies():
    d = np.array([[np.nan, -1.0, -np.inf, 0.0], [np.inf, 2.5, -0.5, np.nan]], np.float32)
    clean, masked = sanitize_depth(d)
    assert masked == 5
    np.testing.assert_array_equal(clean, np.array([[0, 0, 0, 0], [np.inf, 2.5, 0, 0]], np.float32))
    assert clean.dtype == np.float32
    assert np.isnan(d[0, 0])  # input untouched
    ok, n = sanitize_depth(np.ones((2, 2), np.float64))
    assert n == 0 and ok.dtype == np.float32


# --- instance ids -----------------------------------------------------------------------------


def test_instance_ids():
    assert decode_instance_ids(b"", W, H) is None
    ids = np.arange(H * W, dtype=np.uint32).reshape(H, W) * 70000
    out = decode_instance_ids(ids.astype("<u4").tobytes(), W, H)
    assert out.dtype == np.uint32 and out.flags.writeable
    np.testing.assert_array_equal(out, ids)
    assert decode_instance_ids((1).to_bytes(4, "little") * (W * H), W, H)[0, 0] == 1
    with pytest.raises(CodecError, match=r"instance_ids of 32x24 needs 3072 bytes, got 3068"):
        decode_instance_ids(b"\0" * 3068, W, H)
