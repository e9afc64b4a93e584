"""load_image: every readable JPEG/PNG becomes a (size, size) uint8 array; anything else is refused by name."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo.core.images import ImageError, load_image, to_rgb

SIZE = 32


def _gradient(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return ((xx * 255) // max(width - 1, 1)).astype(np.uint8) ^ ((yy * 7) % 256).astype(np.uint8)


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


@pytest.mark.parametrize(
    ("mode", "suffix", "name"),
    [
        ("L", "png", "PNG"),
        ("RGB", "png", "PNG"),
        ("RGBA", "png", "PNG"),
        ("L", "jpeg", "JPEG"),
        ("RGB", "jpeg", "JPEG"),
        ("RGB", "jpg", "JPEG"),
    ],
)
def test_modes_and_formats_decode_to_uint8_square(tmp_path, mode, suffix, name):
    gray = Image.fromarray(_gradient(48, 48), mode="L")
    img = gray.convert(mode)
    path = _save(img, tmp_path / f"x.{suffix}", format=name)
    out = load_image(path, SIZE)
    assert out.shape == (SIZE, SIZE)
    assert out.dtype == np.uint8
    # Same content whatever the mode: luminance of a gray image is the gray image.
    reference = load_image(_save(gray, tmp_path / f"ref.{suffix}", format=name), SIZE)
    assert np.abs(out.astype(int) - reference.astype(int)).max() <= 3


def test_exact_size_png_is_unchanged(tmp_path):
    pixels = _gradient(SIZE, SIZE)
    path = _save(Image.fromarray(pixels, mode="L"), tmp_path / "x.png")
    np.testing.assert_array_equal(load_image(path, SIZE), pixels)


def test_rgb_is_reduced_to_luminance(tmp_path):
    rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
    rgb[..., 1] = 200  # pure green: ITU-R 601 luma is 0.587 * 200
    path = _save(Image.fromarray(rgb, mode="RGB"), tmp_path / "g.png")
    out = load_image(path, SIZE)
    assert np.all(np.abs(out.astype(int) - round(0.587 * 200)) <= 1)


def test_non_square_is_resized_to_square(tmp_path):
    # Left half black, right half white, 120 wide by 40 high.
    pixels = np.zeros((40, 120), np.uint8)
    pixels[:, 60:] = 255
    path = _save(Image.fromarray(pixels, mode="L"), tmp_path / "wide.png")
    out = load_image(path, SIZE)
    assert out.shape == (SIZE, SIZE)
    assert out[:, : SIZE // 2 - 2].max() < 20
    assert out[:, SIZE // 2 + 2 :].min() > 235


def test_upscaling_small_image(tmp_path):
    path = _save(Image.fromarray(np.full((10, 20), 77, np.uint8), mode="L"), tmp_path / "small.jpeg")
    out = load_image(path, 64)
    assert out.shape == (64, 64)
    assert np.abs(out.astype(int) - 77).max() <= 3


def test_sixteen_bit_uses_full_range(tmp_path):
    values = np.linspace(1000, 2000, SIZE * SIZE).reshape(SIZE, SIZE).astype(np.uint16)
    img = Image.fromarray(values)
    path = _save(img, tmp_path / "deep.png")
    with Image.open(path) as check:
        assert check.mode == "I;16"  # really a 16-bit file
    out = load_image(path, SIZE)
    assert out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    expected = np.round((values.astype(float) - 1000) / 1000 * 255)
    assert np.abs(out.astype(float) - expected).max() <= 1


def test_sixteen_bit_constant_image_is_black_not_nan(tmp_path):
    img = Image.fromarray(np.full((SIZE, SIZE), 1234, np.uint16))
    out = load_image(_save(img, tmp_path / "flat.png"), SIZE)
    assert out.dtype == np.uint8 and not out.any()


def _assert_refused(path: Path, *words: str, **kw) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_image(path, SIZE, **kw)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message
    return info.value


def test_empty_file_refused(tmp_path):
    path = tmp_path / "empty.jpeg"
    path.write_bytes(b"")
    _assert_refused(path, "empty")


def test_text_renamed_jpeg_refused(tmp_path):
    path = tmp_path / "notes.jpeg"
    path.write_text("this is not an X-ray\n" * 20)
    _assert_refused(path, "not an image")


def test_truncated_jpeg_refused(tmp_path):
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (128, 128), dtype=np.uint8)  # noise: the bytes are mostly scan data
    whole = _save(Image.fromarray(noisy, mode="L"), tmp_path / "whole.jpeg", quality=95)
    data = whole.read_bytes()
    cut = tmp_path / "cut.jpeg"
    cut.write_bytes(data[: len(data) // 2])
    load_image(whole, SIZE)  # the intact file is fine
    _assert_refused(cut, "truncated")


def _scan_start(data: bytes) -> int:
    """Offset just past the JPEG's first SOS segment: where its entropy-coded scan data begins."""
    sos = data.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")


def _photo_like(side: int, seed: int) -> np.ndarray:
    """Smooth content plus mild noise: no flat grey anywhere, like a radiograph."""
    noise = np.random.default_rng(seed).integers(0, 40, (side, side), dtype=np.uint8)
    return (_gradient(side, side) // 2 + noise).astype(np.uint8)


def _garbage(n: int) -> bytes:
    # Seed 1: random bytes that Pillow decodes without a word (most random scans it does refuse).
    return bytes(np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8))


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize(
    "scan",
    [
        pytest.param(lambda real: b"", id="no-scan-data"),
        pytest.param(lambda real: _garbage(len(real)), id="random"),
        pytest.param(lambda real: real[: len(real) // 2] + _garbage(len(real) - len(real) // 2), id="half-random"),
        pytest.param(lambda real: _garbage(40).replace(b"\xff", b"\x00"), id="short-random"),
    ],
)
def test_jpeg_with_garbage_scan_data_refused(tmp_path, mode, scan):
    """Header intact, scan data gone or garbage: Pillow decodes it (libjpeg fills grey) and says nothing."""
    pixels = _photo_like(100, 5)  # 100 rows: the last block row is a partial one
    good = _save(Image.fromarray(pixels, mode="L").convert(mode), tmp_path / "good.jpeg", quality=90)
    data = good.read_bytes()
    start = _scan_start(data)
    bad = tmp_path / "bad.jpeg"
    bad.write_bytes(data[:start] + scan(data[start:-2]) + b"\xff\xd9")
    with Image.open(bad) as img:
        img.load()  # the premise: a full decode raises nothing
    load_image(good, SIZE)  # the intact file is fine
    _assert_refused(bad, "corrupt JPEG")


def test_flat_mid_grey_png_is_not_taken_for_a_broken_jpeg(tmp_path):
    path = _save(Image.new("L", (64, 64), 128), tmp_path / "grey.png")
    assert (load_image(path, SIZE) == 128).all()


def test_truncated_png_refused(tmp_path):
    rng = np.random.default_rng(1)
    noisy = rng.integers(0, 256, (128, 128), dtype=np.uint8)
    data = _save(Image.fromarray(noisy, mode="L"), tmp_path / "whole.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    _assert_refused(cut)


def test_real_image_over_max_pixels_refused(tmp_path):
    path = _save(Image.fromarray(_gradient(200, 200), mode="L"), tmp_path / "big.png")
    err = _assert_refused(path, "200x200", "1000", max_pixels=1000)
    assert "exceeds" in str(err)
    assert load_image(path, SIZE, max_pixels=200 * 200).shape == (SIZE, SIZE)  # exactly at the limit


def _png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height (8-bit gray) but whose data is a few bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def test_declared_size_checked_before_decoding(tmp_path):
    path = tmp_path / "liar.png"
    path.write_bytes(_png_with_header(5000, 4000))
    assert path.stat().st_size < 200
    _assert_refused(path, "5000x4000", max_pixels=1_000_000)


def test_decompression_bomb_header_refused(tmp_path):
    # Far beyond PIL's own bomb limit: refused as an ImageError, not a PIL exception.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with_header(60000, 60000))
    _assert_refused(path, max_pixels=10**10)


def test_missing_file_refused(tmp_path):
    _assert_refused(tmp_path / "ghost.jpeg", "no such file")


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)


def test_to_rgb_repeats_channels():
    gray = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    rgb = to_rgb(gray)
    assert rgb.shape == (1, 3, 4, 3)
    assert rgb.dtype == np.float32
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], gray.astype(np.float32))
