"""Reading one image the way every stage does: decode, check, turn to luminance, resize.

Training, evaluation and prediction all call `load_image`, so the model sees the same pixels
whichever way an image reaches it. X-rays are grayscale: images are read as luminance and fed
to the network as three equal channels.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# What libjpeg decodes a block with no data into (a zero DCT block, level-shifted).
_JPEG_FILL = 128


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and the problem."""


def require_nonempty(path: Path) -> None:
    """Refuse a missing or zero-byte file before any decoder sees it."""
    try:
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: empty file (0 bytes)")
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None


def resize_square(gray: np.ndarray, size: int) -> np.ndarray:
    """(H, W) uint8 to (size, size), without keeping the aspect ratio (as the data set's copy was made)."""
    if gray.shape == (size, size):
        return gray
    img = Image.fromarray(gray, mode="L").resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)


def load_image(path: str | Path, size: int, max_pixels: int = 50_000_000) -> np.ndarray:
    """Decode `path` into a (size, size) uint8 luminance array.

    Refuses empty files, non-images, truncated or corrupt data (the whole image is decoded,
    and a JPEG whose scan data ran out or is garbage is caught from its pixels), and images
    whose declared dimensions exceed `max_pixels` (checked from the header, before decoding).
    """
    path = Path(path)
    require_nonempty(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"{path}: declared size {width}x{height} exceeds the limit of "
                        f"{max_pixels} pixels (prepare.max_image_pixels)"
                    )
                img.load()
                jpeg = img.format == "JPEG"
                gray = img.convert("L") if img.mode not in ("I;16", "I;16B", "I") else _sixteen_to_l(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image PIL can read (JPEG or PNG expected)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{path}: refused as a decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: corrupt or truncated image data ({exc})") from None
    pixels = np.asarray(gray, dtype=np.uint8)
    if jpeg and _ends_in_decoder_fill(pixels):
        raise ImageError(
            f"{path}: corrupt JPEG data: the image data ends early or is garbage "
            "(its last rows decode to the decoder's flat grey fill)"
        )
    return resize_square(pixels, size)


def _ends_in_decoder_fill(gray: np.ndarray) -> bool:
    """True when the last row of 8x8 blocks is exactly mid-grey.

    libjpeg completes a scan whose data runs out, or hits a stray marker in garbage, with
    all-zero blocks (flat 128) and only warns; Pillow drops the warning. A radiograph's last
    block row is not exactly 128 throughout (in none of the real set's 5,528 images). Garbage
    that decodes to the end without running out is not caught here.
    """
    tail = gray[-8:]
    return tail.size > 0 and bool((tail == _JPEG_FILL).all())


def _sixteen_to_l(img: Image.Image) -> Image.Image:
    """16-bit grayscale to 8-bit by its full range (PIL's convert('L') clips instead)."""
    arr = np.asarray(img, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")


def to_rgb(gray: np.ndarray) -> np.ndarray:
    """(…, H, W) uint8 luminance to (…, H, W, 3) float32 RGB in [0, 255], the model's input."""
    return np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)


def predict_gray(predict: Callable[[np.ndarray], np.ndarray], gray: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Probabilities (N,) of (N, S, S) uint8 luminance images, batch by batch through `predict`
    (an RGB float batch -> its probabilities: a Keras model's `predict_on_batch`, a LiteRT runtime's `predict`)."""
    out = np.zeros(len(gray), np.float32)
    for start in range(0, len(gray), batch_size):
        out[start : start + batch_size] = np.asarray(predict(to_rgb(gray[start : start + batch_size]))).reshape(-1)
    return out
