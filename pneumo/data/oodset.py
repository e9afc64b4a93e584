"""The out-of-distribution (OOD) evaluation set: images that are not pediatric frontal chest X-rays.

What it is for: judging the input gate (the DICOM metadata check and the image-content detector)
on inputs it must reject, and reporting its rejection rate per kind. It is built only from what
ships with the installed packages, from pixels this module draws, and from the *validation*
split of the prepared cache (never train, never test). The hidden acceptance images play no part
in it, so nothing chosen on it is tuned to them.

What it cannot stand in for: adult chest X-rays, other chest pathologies, other X-ray devices,
or real musculoskeletal radiographs (hand, arm, shoulder): none are available offline here. The
DICOM files that claim a hand, a skull or a lateral view carry chest pixels: they test the header
check alone. A gate that passes this set may still accept those images.

Layout (inside `oodset.dir`):
- `images/<kind>/<name>.png`, 8-bit grayscale or RGB, at most 256 px on the long side:
  - `ct`, `mr`, `other_modality`: pixel data of pydicom's bundled test files (CT, MR, SEG,
    RTDOSE, NM, US, OT) and matplotlib's MR sample `s1045.ima.gz`, windowed to 8 bits by
    percentiles, plus mirrored, rotated and cropped copies;
  - `photo`: matplotlib's `grace_hopper.jpg`, scikit-learn's `china.jpg` and `flower.jpg`,
    in colour, in gray and as seeded crops;
  - `logo`: matplotlib's `logo2.png` and `Minduka_Present_Blue_Pack.png`, and logos drawn here;
  - `chart`: matplotlib charts of seeded data; `text`: rendered pages and a table;
  - `noise`: uniform and blurred noise, flat fields, gradients, checkerboards;
  - `xray_inverted`, `xray_rotated`, `xray_cropped`: seeded validation X-rays made negative,
    turned by 90, 180 or 270 degrees, or cut to a third of their side (a corner or the centre).
- `dicom/*.dcm`: real DICOM files the metadata check alone must reject: copies of pydicom test
  files of other modalities, and files written here over validation X-ray pixels whose header
  says HAND, SKULL, a lateral view or mammography.
- `manifest.csv`: one row per file (path, kind, source, license, gate, note), sorted by path.
  `gate` is `content` for the images (the image-content detector must reject them) and
  `metadata` for the DICOM files (kinds `dicom_modality`, `dicom_body_part`, `dicom_view`).

Sources and licences: pydicom's test files ship with pydicom (MIT); its data README says they
may be used this way (most derive from the NEMA WG04 sample sets). matplotlib's sample data ships
with matplotlib (Matplotlib licence); `grace_hopper.jpg` is a U.S. Navy portrait in the public
domain. scikit-learn's sample images are CC BY 2.0 (attribution in
`sklearn/datasets/images/README.txt`). The X-rays are Kermany et al. 2018 (CC BY 4.0), or the
synthetic set when the cache is synthetic. Everything drawn here is CC0.

The build is reproducible (same inputs and seed give byte-identical files: no timestamps in the
PNGs, fixed DICOM UIDs) and atomic (a failed build leaves the previous folder as it was).
"""

from __future__ import annotations

import gzip
import shutil
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import matplotlib.style
import numpy as np
import pandas as pd
import pydicom
from matplotlib import cbook
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
)
from scipy import ndimage
from sklearn.datasets import load_sample_image

from pneumo.core.cache import load_split
from pneumo.core.config import OodsetParams
from pneumo.core.io import atomic_dir, read_json
from pneumo.core.paths import OOD_DICOM_DIR, OOD_IMAGES_DIR, OOD_MANIFEST, PREPARE_SUMMARY

MAX_SIDE = 256  # pixels on the long side of a saved PNG: keeps the folder small; the pipeline resizes
XRAY_KINDS: tuple[str, ...] = ("xray_inverted", "xray_rotated", "xray_cropped")
KINDS: tuple[str, ...] = ("ct", "mr", "other_modality", "photo", "logo", "chart", "text", "noise", *XRAY_KINDS)
DICOM_KINDS: tuple[str, ...] = ("dicom_modality", "dicom_body_part", "dicom_view")
COLUMNS: tuple[str, ...] = ("path", "kind", "source", "license", "gate", "note")

PYDICOM_LICENSE = "MIT (pydicom); test file bundled with pydicom, free to use per pydicom/data/test_files/README.txt"
MPL_LICENSE = "Matplotlib licence (matplotlib sample data)"
HOPPER_LICENSE = "public domain (U.S. Navy portrait; matplotlib sample data)"
SKLEARN_LICENSE = "CC BY 2.0 (scikit-learn sample image; attribution in sklearn/datasets/images/README.txt)"
GENERATED_LICENSE = "CC0"
XRAY_LICENSE = "CC BY 4.0 (Kermany et al. 2018 chest X-rays)"
SYNTHETIC_LICENSE = "CC0 (synthetic image from pneumo.data.synthetic)"
RENDERED = "rendered by pneumo.data.oodset"

ArrayOp = Callable[[np.ndarray], np.ndarray]
Variants = dict[str, tuple[str, ArrayOp]]  # file-name suffix: (what the manifest says, the operation)


@dataclass(frozen=True)
class Picture:
    """One image of the set before it is written: its pixels and what the manifest says of it."""

    name: str  # file name inside images/<kind>/, without the suffix
    pixels: np.ndarray  # uint8, (H, W) grayscale or (H, W, 3) RGB
    source: str
    license: str
    note: str


@dataclass(frozen=True)
class Xrays:
    """The validation split of the prepared cache, and what licence its images carry."""

    images: np.ndarray  # (N, S, S) uint8
    paths: list[str]  # each image's path in the raw data, as the cache's manifest names it
    license: str


# --------------------------------------------------------------------------- helpers


def kind_rng(seed: int, kind: str) -> np.random.Generator:
    """A generator per kind, so adding or changing one kind leaves the others' draws alone."""
    return np.random.default_rng([seed, zlib.crc32(kind.encode())])


def window(values: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Map an array to uint8 between two of its percentiles (its min and max if those coincide)."""
    values = np.asarray(values, dtype=np.float64)
    lo, hi = np.percentile(values, [low, high])
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    return np.round(np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def to_uint8_color(rgb: np.ndarray) -> np.ndarray:
    """Colour pixels of any unsigned depth as uint8 RGB (16-bit palette output is scaled down)."""
    if rgb.dtype == np.uint8:
        return rgb
    top = float(rgb.max())
    return np.round(rgb.astype(np.float64) * (255.0 / top)).astype(np.uint8) if top > 0 else rgb.astype(np.uint8)


def centre_crop(pixels: np.ndarray, fraction: float = 0.6) -> np.ndarray:
    h, w = pixels.shape[:2]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    return pixels[top : top + ch, left : left + cw]


def random_crop(pixels: np.ndarray, rng: np.random.Generator, low: float = 0.3, high: float = 0.6) -> np.ndarray:
    """A square crop of `low` to `high` of the short side, at a seeded place."""
    h, w = pixels.shape[:2]
    side = max(1, int(round(min(h, w) * rng.uniform(low, high))))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return pixels[top : top + side, left : left + side]


def gray(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))


def canvas_pixels(fig: Figure) -> np.ndarray:
    """Render a matplotlib figure (Agg) to a uint8 RGB array."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def flatten_alpha(img: Image.Image) -> np.ndarray:
    """An RGBA or palette image composited onto white, as uint8 RGB."""
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))


def save_png(pixels: np.ndarray, path: Path) -> None:
    """Write 8-bit pixels as a PNG, shrunk to MAX_SIDE; no metadata, so the bytes are reproducible."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"{path}: expected uint8 (H, W) or (H, W, 3) pixels, got {pixels.dtype} {pixels.shape}")
    img = Image.fromarray(np.ascontiguousarray(pixels))
    img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)


# --------------------------------------------------------------------------- package sample files


def pydicom_test_file(name: str) -> Path:
    """The path of a test file bundled in pydicom's wheel (never one it would download)."""
    found = get_testdata_file(name, download=False)
    if not isinstance(found, str):
        raise FileNotFoundError(f"pydicom/data/test_files/{name}: not bundled with the installed pydicom")
    return Path(found)


def read_dicom(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a DICOM file pydicom can read ({exc})") from None


def dicom_pixels(name: str) -> np.ndarray:
    """A bundled pydicom test file's image as uint8: the middle frame, mono windowed by percentiles."""
    path = pydicom_test_file(name)
    ds = read_dicom(path)
    try:
        arr = ds.pixel_array  # colour comes back as RGB (YBR converted)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            arr = arr[frames // 2]
        photometric = str(ds.get("PhotometricInterpretation", ""))
        if photometric == "PALETTE COLOR":
            return to_uint8_color(apply_color_lut(arr, ds))
        if arr.ndim == 3:
            return to_uint8_color(arr)
        values = apply_modality_lut(arr, ds)
    except (AttributeError, NotImplementedError, RuntimeError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: pydicom cannot decode its pixel data ({exc})") from None
    pixels = window(values)
    return 255 - pixels if photometric == "MONOCHROME1" else pixels


def matplotlib_sample(name: str) -> Path:
    try:
        path = Path(cbook.get_sample_data(name, asfileobj=False))
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"matplotlib sample data {name}: not found ({exc})") from None
    if not path.is_file():
        raise FileNotFoundError(f"{path}: matplotlib sample data missing")
    return path


def matplotlib_image(name: str) -> np.ndarray:
    """A matplotlib sample picture as uint8 RGB (transparency composited onto white)."""
    path = matplotlib_sample(name)
    try:
        with Image.open(path) as img:
            return flatten_alpha(img)
    except OSError as exc:
        raise ValueError(f"{path}: not an image PIL can read ({exc})") from None


def s1045_slice() -> np.ndarray:
    """matplotlib's `s1045.ima.gz`: a sagittal MR head slice, raw 256x256 big-endian uint16 at the end of the file."""
    path = matplotlib_sample("s1045.ima.gz")
    need = 256 * 256 * 2
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable gzip file ({exc})") from None
    if len(raw) < need:
        raise ValueError(f"{path}: {len(raw)} bytes, expected at least {need} (a 256x256 16-bit slice)")
    return window(np.frombuffer(raw[-need:], ">u2").reshape(256, 256))


def sklearn_image(name: str) -> np.ndarray:
    try:
        return np.asarray(load_sample_image(name), dtype=np.uint8)
    except (OSError, AttributeError, ValueError) as exc:
        raise ValueError(f"scikit-learn sample image {name}: unreadable ({exc})") from None


# --------------------------------------------------------------------------- other modalities

VARIANTS: Variants = {
    "": ("", lambda a: a),
    "mirrored": ("mirrored", np.fliplr),
    "rotated90": ("rotated 90 degrees", np.rot90),
    "cropped": ("centre crop", centre_crop),
}

CT_SOURCES: dict[str, str] = {
    "CT_small.dcm": "an axial CT slice of the thorax (128 px)",
    "693_J2KI.dcm": "an axial CT slice of the head (JPEG 2000)",
    "J2K_pixelrep_mismatch.dcm": "an axial CT slice of the skull base (JPEG 2000)",
}
MR_SOURCES: dict[str, str] = {
    "MR_small.dcm": "an MR image (64 px)",
    "examples_overlay.dcm": "an axial MR slice of the abdomen",
}
OTHER_SOURCES: dict[str, str] = {
    "liver_1frame.dcm": "a segmentation mask (SEG) of the liver",
    "rtdose.dcm": "a radiotherapy dose grid (RTDOSE), middle frame",
    "JPEG2000.dcm": "a whole-body bone scan (NM)",
    "examples_palette.dcm": "an obstetric ultrasound (US, palette colour)",
    "examples_rgb_color.dcm": "an ultrasound (US, RGB)",
    "examples_ybr_color.dcm": "an echocardiogram frame (US, YBR colour)",
    "image_dfl.dcm": "a test pattern (OT, deflated)",
}


def variants(pixels: np.ndarray, stem: str, source: str, license: str, note: str, ops: Variants) -> list[Picture]:
    """The picture, and a copy of it per named operation."""
    return [
        Picture(
            name=f"{stem}_{suffix}" if suffix else stem,
            pixels=np.ascontiguousarray(fn(pixels)),
            source=f"{source}, {what}" if what else source,
            license=license,
            note=note,
        )
        for suffix, (what, fn) in ops.items()
    ]


def modality_pictures(sources: dict[str, str], what: str, ops: Variants) -> list[Picture]:
    out: list[Picture] = []
    for name, desc in sources.items():
        note = f"{desc}: {what}, not a chest X-ray"
        out += variants(dicom_pixels(name), Path(name).stem, f"pydicom test file {name}", PYDICOM_LICENSE, note, ops)
    return out


def ct_images() -> list[Picture]:
    return modality_pictures(CT_SOURCES, "another modality (CT)", VARIANTS)


def mr_images() -> list[Picture]:
    pictures = modality_pictures(MR_SOURCES, "another modality (MR)", VARIANTS)
    note = "a sagittal MR slice of the head: another modality (MR), not a chest X-ray"
    pictures += variants(s1045_slice(), "s1045", "matplotlib sample s1045.ima.gz", MPL_LICENSE, note, VARIANTS)
    return pictures


def other_modality_images() -> list[Picture]:
    return modality_pictures(OTHER_SOURCES, "another modality", {k: VARIANTS[k] for k in ("", "mirrored")})


# --------------------------------------------------------------------------- photos and logos


def photo_images(rng: np.random.Generator, crops: int = 3) -> list[Picture]:
    """Each photo in colour and in gray, and `crops` seeded crops of it."""
    photos = [
        ("grace_hopper", matplotlib_image("grace_hopper.jpg"), "matplotlib sample grace_hopper.jpg", HOPPER_LICENSE),
        ("china", sklearn_image("china.jpg"), "scikit-learn sample image china.jpg", SKLEARN_LICENSE),
        ("flower", sklearn_image("flower.jpg"), "scikit-learn sample image flower.jpg", SKLEARN_LICENSE),
    ]
    out: list[Picture] = []
    for stem, rgb, source, license in photos:
        note = "a natural photograph"
        out.append(Picture(stem, rgb, source, license, f"{note} in colour"))
        out.append(Picture(f"{stem}_gray", gray(rgb), f"{source}, grayscale", license, f"{note} in gray"))
        for i in range(crops):
            out.append(
                Picture(f"{stem}_crop{i}", random_crop(rgb, rng), f"{source}, seeded crop", license, f"part of {note}")
            )
    return out


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled default font, so rendering needs no system font."""
    return ImageFont.load_default(size=size)


def drawn_logo(
    index: int, rng: np.random.Generator, shape: str, text: str, size: tuple[int, int] = (256, 160)
) -> np.ndarray:
    """A simple logo: a coloured shape and a word, on a plain background."""
    colours = rng.integers(0, 256, size=(3, 3))
    background = (255, 255, 255) if index % 2 == 0 else tuple(int(c) for c in colours[2] // 4)
    fill, ink = (tuple(int(c) for c in colours[i]) for i in range(2))
    img = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(img)
    w, h = size
    box = (16, h // 2 - 48, 112, h // 2 + 48)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=14)
    elif shape == "square":
        draw.rounded_rectangle(box, radius=18, fill=fill)
    elif shape == "triangle":
        draw.polygon([(64, box[1]), (box[0], box[3]), (box[2], box[3])], fill=fill)
    elif shape == "star":
        angles = np.linspace(-np.pi / 2, 1.5 * np.pi, 11)[:-1]
        radii = np.where(np.arange(10) % 2 == 0, 48, 20)
        draw.polygon(
            [(64 + r * np.cos(a), h / 2 + r * np.sin(a)) for a, r in zip(angles, radii, strict=True)], fill=fill
        )
    else:
        for k in range(4):
            draw.rectangle((16 + 24 * k, box[1], 32 + 24 * k, box[3]), fill=fill)
    draw.text((124, h // 2), text, fill=ink, font=font(30), anchor="lm")
    return np.asarray(img)


LOGO_DESIGNS: tuple[tuple[str, str], ...] = (
    ("circle", "Orbix"),
    ("ring", "Lumen"),
    ("square", "Kubo"),
    ("triangle", "Apex"),
    ("star", "Stella"),
    ("bars", "Tally"),
)


def logo_images(rng: np.random.Generator) -> list[Picture]:
    out = [
        Picture(
            "matplotlib_logo2",
            matplotlib_image("logo2.png"),
            "matplotlib sample logo2.png",
            MPL_LICENSE,
            "a wordmark logo",
        ),
        Picture(
            "minduka_present",
            matplotlib_image("Minduka_Present_Blue_Pack.png"),
            "matplotlib sample Minduka_Present_Blue_Pack.png",
            MPL_LICENSE,
            "an icon (a wrapped present)",
        ),
    ]
    for i, (shape, text) in enumerate(LOGO_DESIGNS):
        pixels = drawn_logo(i, rng, shape, text)
        out.append(Picture(f"drawn_{shape}", pixels, RENDERED, GENERATED_LICENSE, f"a drawn logo: {shape} and a word"))
    return out


# --------------------------------------------------------------------------- charts and text


def _line(ax, rng: np.random.Generator) -> None:
    x = np.arange(50)
    for _ in range(3):
        ax.plot(x, np.cumsum(rng.normal(size=50)))
    ax.set_title("Line chart")


def _bar(ax, rng: np.random.Generator) -> None:
    ax.bar(list("ABCDEF"), rng.integers(3, 20, size=6))
    ax.set_title("Bar chart")


def _scatter(ax, rng: np.random.Generator) -> None:
    x = rng.normal(size=200)
    ax.scatter(x, 0.6 * x + rng.normal(scale=0.5, size=200), s=8, c=rng.uniform(size=200))
    ax.set_title("Scatter plot")


def _histogram(ax, rng: np.random.Generator) -> None:
    ax.hist(rng.normal(size=1000), bins=30)
    ax.set_title("Histogram")


def _pie(ax, rng: np.random.Generator) -> None:
    ax.pie(rng.integers(1, 10, size=5), labels=list("VWXYZ"))
    ax.set_title("Pie chart")


def _heatmap(ax, rng: np.random.Generator) -> None:
    ax.imshow(rng.normal(size=(12, 12)), cmap="viridis")
    ax.set_title("Heat map")


def _heatmap_gray(ax, rng: np.random.Generator) -> None:
    ax.imshow(ndimage.gaussian_filter(rng.normal(size=(40, 40)), 3), cmap="gray")
    ax.set_title("Gray heat map")


def _boxplot(ax, rng: np.random.Generator) -> None:
    ax.boxplot([rng.normal(loc=i, size=60) for i in range(4)])
    ax.set_title("Box plot")


def _area(ax, rng: np.random.Generator) -> None:
    ax.stackplot(np.arange(30), rng.uniform(1, 3, size=(3, 30)))
    ax.set_title("Stacked area")


def _errorbar(ax, rng: np.random.Generator) -> None:
    ax.errorbar(np.arange(8), rng.normal(size=8), yerr=rng.uniform(0.1, 0.5, size=8), fmt="o-", capsize=3)
    ax.grid(True)
    ax.set_title("Error bars")


CHARTS: dict[str, Callable[..., None]] = {
    "line": _line,
    "bar": _bar,
    "scatter": _scatter,
    "histogram": _histogram,
    "pie": _pie,
    "heatmap": _heatmap,
    "heatmap_gray": _heatmap_gray,
    "boxplot": _boxplot,
    "area": _area,
    "errorbar": _errorbar,
}


def chart_images(rng: np.random.Generator) -> list[Picture]:
    """One matplotlib chart of seeded data per entry of CHARTS, in matplotlib's default style."""
    out: list[Picture] = []
    with matplotlib.style.context("default"):  # a user's matplotlibrc must not change the bytes
        for name, draw in CHARTS.items():
            fig = Figure(figsize=(3.2, 2.4), dpi=80, layout="tight")
            draw(fig.add_subplot(), rng)
            out.append(Picture(name, canvas_pixels(fig), RENDERED, GENERATED_LICENSE, f"a {name} chart"))
    return out


WORDS = (
    "the patient was seen in clinic today and reported a mild cough for three days with no fever "
    "results of the laboratory panel are within normal limits please review the attached summary "
    "follow up in two weeks or sooner if symptoms worsen the next appointment is on monday morning"
).split()


def paragraph(rng: np.random.Generator, lines: int, words_per_line: int = 5) -> str:
    return "\n".join(" ".join(rng.choice(WORDS, size=words_per_line)) for _ in range(lines))


def text_page(rng: np.random.Generator, ink: int, paper: int, size: tuple[int, int] = (240, 256)) -> np.ndarray:
    img = Image.new("L", size, paper)
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), "Report", fill=ink, font=font(20))
    draw.multiline_text((10, 40), paragraph(rng, 12), fill=ink, font=font(11), spacing=5)
    return np.asarray(img)


def table_screenshot(rng: np.random.Generator, size: tuple[int, int] = (256, 192)) -> np.ndarray:
    """A spreadsheet-like screenshot: a title bar, a header row and a grid of numbers."""
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, size[0], 18), fill=(40, 70, 140))
    draw.text((6, 3), "results.xlsx", fill=(255, 255, 255), font=font(11))
    cols, rows, cw, rh = 4, 9, size[0] // 4, 18
    for r in range(rows):
        y = 22 + r * rh
        if r == 0:
            draw.rectangle((0, y, size[0], y + rh), fill=(225, 230, 240))
        for c in range(cols):
            draw.rectangle((c * cw, y, (c + 1) * cw, y + rh), outline=(180, 180, 180))
            cell = ("ID", "Age", "Score", "Flag")[c] if r == 0 else f"{rng.uniform(0, 100):.1f}"
            draw.text((c * cw + 4, y + 3), cell, fill=(0, 0, 0), font=font(11))
    return np.asarray(img)


def code_listing(rng: np.random.Generator, size: tuple[int, int] = (256, 200)) -> np.ndarray:
    img = Image.new("RGB", size, (30, 30, 30))
    draw = ImageDraw.Draw(img)
    for i in range(11):
        name = str(rng.choice(WORDS))
        draw.text((8, 6 + 17 * i), f"{i + 1:2d}  {name} = compute({i})", fill=(180, 220, 150), font=font(11))
    return np.asarray(img)


def text_images(rng: np.random.Generator) -> list[Picture]:
    pages = [
        ("page_dark_on_light", text_page(rng, ink=20, paper=245), "a text page, dark on light"),
        ("page_light_on_dark", text_page(rng, ink=235, paper=15), "a text page, light on dark"),
        ("page_gray", text_page(rng, ink=90, paper=170), "a low-contrast text page"),
        ("table_screenshot", table_screenshot(rng), "a screenshot of a table"),
        ("code_listing", code_listing(rng), "a screenshot of code, light on dark"),
    ]
    return [Picture(name, pixels, RENDERED, GENERATED_LICENSE, note) for name, pixels, note in pages]


# --------------------------------------------------------------------------- noise


def noise_images(rng: np.random.Generator, side: int = 256) -> list[Picture]:
    """Noise, flat fields, gradients and checkerboards: images with no anatomy at all."""
    ramp = np.linspace(0.0, 1.0, side)
    yy, xx = np.mgrid[0:side, 0:side]
    radius = np.hypot(yy - side / 2, xx - side / 2)
    fields: dict[str, tuple[np.ndarray, str]] = {
        "uniform": (rng.uniform(size=(side, side)), "uniform white noise"),
        "uniform_rgb": (rng.uniform(size=(side, side, 3)), "uniform colour noise"),
    }
    for sigma in (1, 2, 4, 8, 16):
        blurred = ndimage.gaussian_filter(rng.normal(size=(side, side)), sigma)
        fields[f"blurred_sigma{sigma}"] = (blurred, f"Gaussian noise blurred with sigma {sigma} px")
    fields |= {
        "flat_black": (np.zeros((side, side)), "a flat black image"),
        "flat_gray": (np.full((side, side), 0.5), "a flat gray image"),
        "flat_white": (np.ones((side, side)), "a flat white image"),
        "gradient_horizontal": (np.tile(ramp, (side, 1)), "a horizontal gradient"),
        "gradient_vertical": (np.tile(ramp[:, None], (1, side)), "a vertical gradient"),
        "gradient_radial": (radius / radius.max(), "a radial gradient"),
        "checkerboard_8": (((yy // 8 + xx // 8) % 2).astype(float), "a checkerboard of 8 px squares"),
        "checkerboard_32": (((yy // 32 + xx // 32) % 2).astype(float), "a checkerboard of 32 px squares"),
    }
    out = []
    for name, (values, note) in fields.items():
        pixels = window(values, 0.0, 100.0) if name.startswith("blurred") else np.round(values * 255).astype(np.uint8)
        out.append(Picture(name, pixels, RENDERED, GENERATED_LICENSE, note))
    return out


# --------------------------------------------------------------------------- transformed X-rays


def load_xrays(prepared_dir: Path) -> Xrays:
    """The validation split only: train is what the gate is fitted on, test is what it is judged on."""
    images, _, rows = load_split(prepared_dir, "val")
    if len(images) == 0:
        raise ValueError(f"{prepared_dir}: the validation split is empty; the oodset stage needs validation X-rays")
    synthetic = bool(read_json(prepared_dir / PREPARE_SUMMARY).get("synthetic", False))
    return Xrays(images, [str(p) for p in rows["path"]], SYNTHETIC_LICENSE if synthetic else XRAY_LICENSE)


def pick(xrays: Xrays, count: int, rng: np.random.Generator) -> list[int]:
    """`count` seeded validation indices, in draw order (distinct while the split is large enough)."""
    n = len(xrays.images)
    return [int(i) for i in rng.choice(n, size=count, replace=count > n)]


def xray_picture(xrays: Xrays, position: int, index: int, op: str, pixels: np.ndarray, note: str) -> Picture:
    path = xrays.paths[index]
    stem = PurePosixPath(path).stem
    return Picture(
        f"{position:02d}_{stem}_{op.replace(' ', '_')}", pixels, f"validation X-ray {path}, {op}", xrays.license, note
    )


def xray_inverted(xrays: Xrays, count: int, rng: np.random.Generator) -> list[Picture]:
    note = "a chest X-ray with inverted gray levels (a negative)"
    return [
        xray_picture(xrays, k, i, "inverted", 255 - xrays.images[i], note)
        for k, i in enumerate(pick(xrays, count, rng))
    ]


ROTATIONS: tuple[int, ...] = (90, 270, 180)  # degrees counter-clockwise, taken in turn


def xray_rotated(xrays: Xrays, count: int, rng: np.random.Generator) -> list[Picture]:
    out = []
    for k, i in enumerate(pick(xrays, count, rng)):
        angle = ROTATIONS[k % len(ROTATIONS)]
        pixels = np.rot90(xrays.images[i], angle // 90)
        out.append(xray_picture(xrays, k, i, f"rotated {angle}", pixels, f"a chest X-ray turned {angle} degrees"))
    return out


CROPS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right", "centre")


def third_crop(pixels: np.ndarray, where: str) -> np.ndarray:
    """A square of a third of the side, at a corner or in the centre."""
    side = pixels.shape[0] // 3
    last = pixels.shape[0] - side
    top = {"top": 0, "bottom": last}.get(where.split()[0], last // 2)
    left = {"left": 0, "right": last}.get(where.split()[-1], last // 2)
    return pixels[top : top + side, left : left + side]


def xray_cropped(xrays: Xrays, count: int, rng: np.random.Generator) -> list[Picture]:
    out = []
    for k, i in enumerate(pick(xrays, count, rng)):
        where = CROPS[k % len(CROPS)]
        pixels = third_crop(xrays.images[i], where)
        note = f"a heavy crop of a chest X-ray: a third of its side, {where}"
        out.append(xray_picture(xrays, k, i, f"cropped {where}", pixels, note))
    return out


# --------------------------------------------------------------------------- DICOM metadata files

COPIED_DICOM: dict[str, str] = {
    "CT_small.dcm": "Modality CT: another modality",
    "MR_small.dcm": "Modality MR: another modality",
    "rtdose_1frame.dcm": "Modality RTDOSE: a dose grid, not an image of a patient",
    "SC_rgb_rle.dcm": "Modality OT: an RGB secondary capture",
    "JPEG2000.dcm": "Modality NM, BodyPartExamined WHOLE BODY: a bone scan",
    "liver_1frame.dcm": "Modality SEG: a segmentation object",
}


@dataclass(frozen=True)
class Header:
    """The metadata a written DICOM file carries, and why the gate must reject it."""

    name: str
    kind: str
    modality: str
    body_part: str
    view_position: str
    lateral_code: bool  # a ViewCodeSequence item saying "lateral"
    note: str


WRITTEN_DICOM: tuple[Header, ...] = (
    Header("cr_hand", "dicom_body_part", "CR", "HAND", "PA", False, "BodyPartExamined HAND (chest pixels)"),
    Header("cr_skull", "dicom_body_part", "CR", "SKULL", "AP", False, "BodyPartExamined SKULL (chest pixels)"),
    Header("dx_lateral_ll", "dicom_view", "DX", "CHEST", "LL", False, "ViewPosition LL: a left lateral view"),
    Header("dx_lateral_rl", "dicom_view", "DX", "CHEST", "RL", False, "ViewPosition RL: a right lateral view"),
    Header("dx_lateral_code", "dicom_view", "DX", "CHEST", "", True, "ViewCodeSequence says lateral (SCT 399067008)"),
    Header("mg_breast", "dicom_modality", "MG", "BREAST", "CC", False, "Modality MG: mammography"),
)
UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "pneumo.data.oodset")
SOP_CLASSES = {
    "CR": ComputedRadiographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
    "MG": DigitalMammographyXRayImageStorageForPresentation,
}


def fixed_uid(*parts: str) -> str:
    """A UID derived from `parts` alone, so a rebuild writes the same bytes.

    A name-based UUID (version 5) under the 2.25 root, as DICOM PS3.5 B.2 allows. (pydicom's
    generate_uid ignores its entropy sources when the prefix is 2.25 and draws a random UUID.)
    """
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, '/'.join(parts)).int}"


def lateral_code() -> Dataset:
    item = Dataset()
    item.CodeValue = "399067008"
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = "lateral"
    return item


def xray_dicom(header: Header, number: int, pixels: np.ndarray, source: str) -> Dataset:
    """An uncompressed 8-bit MONOCHROME2 DICOM image with `header`'s metadata; no patient data."""
    sop_class = SOP_CLASSES[header.modality]
    instance = fixed_uid("instance", header.name, source)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = instance
    ds.StudyInstanceUID = fixed_uid("study")
    ds.SeriesInstanceUID = fixed_uid("series", header.name)
    ds.PatientName = "OOD^TEST"
    ds.PatientID = f"OOD-{number}"
    ds.Modality = header.modality
    ds.BodyPartExamined = header.body_part
    ds.ViewPosition = header.view_position
    if header.lateral_code:
        ds.ViewCodeSequence = [lateral_code()]
    ds.ImageType = ["DERIVED", "SECONDARY"]
    if header.modality != "CR":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SeriesNumber = number
    ds.InstanceNumber = 1
    ds.SeriesDescription = f"pneumo OOD set: {header.note}"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return ds


def write_dicom(out_dir: Path, xrays: Xrays, rng: np.random.Generator) -> list[dict[str, str]]:
    """Copy the other-modality test files and write the header-only cases; their manifest rows."""
    folder = out_dir / OOD_DICOM_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, note in COPIED_DICOM.items():
        source = pydicom_test_file(name)
        read_dicom(source)  # refuse a copy pydicom cannot read
        shutil.copyfile(source, folder / name)
        rows.append(
            manifest_row(
                out_dir, folder / name, "dicom_modality", f"pydicom test file {name}", PYDICOM_LICENSE, "metadata", note
            )
        )
    for number, (header, index) in enumerate(zip(WRITTEN_DICOM, pick(xrays, len(WRITTEN_DICOM), rng), strict=True), 1):
        path = folder / f"{header.name}.dcm"
        xray_path = xrays.paths[index]
        xray_dicom(header, number, xrays.images[index], xray_path).save_as(path, enforce_file_format=True)
        source = f"validation X-ray {xray_path} in a DICOM file written by pneumo.data.oodset"
        rows.append(manifest_row(out_dir, path, header.kind, source, xrays.license, "metadata", header.note))
    return rows


# --------------------------------------------------------------------------- build


def manifest_row(
    out_dir: Path, path: Path, kind: str, source: str, license: str, gate: str, note: str
) -> dict[str, str]:
    return {
        "path": path.relative_to(out_dir).as_posix(),
        "kind": kind,
        "source": source,
        "license": license,
        "gate": gate,
        "note": note,
    }


def pictures_by_kind(xrays: Xrays, params: OodsetParams) -> dict[str, list[Picture]]:
    """Every image of the set, by kind (each kind with its own seeded generator)."""
    seed, count = params.seed, params.xrays
    return {
        "ct": ct_images(),
        "mr": mr_images(),
        "other_modality": other_modality_images(),
        "photo": photo_images(kind_rng(seed, "photo")),
        "logo": logo_images(kind_rng(seed, "logo")),
        "chart": chart_images(kind_rng(seed, "chart")),
        "text": text_images(kind_rng(seed, "text")),
        "noise": noise_images(kind_rng(seed, "noise")),
        "xray_inverted": xray_inverted(xrays, count, kind_rng(seed, "xray_inverted")),
        "xray_rotated": xray_rotated(xrays, count, kind_rng(seed, "xray_rotated")),
        "xray_cropped": xray_cropped(xrays, count, kind_rng(seed, "xray_cropped")),
    }


def write_pictures(out_dir: Path, pictures: dict[str, list[Picture]]) -> list[dict[str, str]]:
    rows = []
    for kind, items in pictures.items():
        names = [p.name for p in items]
        if len(set(names)) != len(names):
            raise ValueError(
                f"oodset kind {kind}: duplicate image names {sorted(n for n in names if names.count(n) > 1)}"
            )
        for picture in items:
            path = out_dir / OOD_IMAGES_DIR / kind / f"{picture.name}.png"
            save_png(picture.pixels, path)
            rows.append(manifest_row(out_dir, path, kind, picture.source, picture.license, "content", picture.note))
    return rows


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    table = pd.DataFrame(rows, columns=list(COLUMNS)).sort_values("path", kind="stable")
    table.to_csv(path, index=False, lineterminator="\n")


def build(prepared_dir: str | Path, out_dir: str | Path, params: OodsetParams) -> dict:
    """Write the OOD set into `out_dir` (replaced whole, atomically); return its counts."""
    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    xrays = load_xrays(prepared_dir)
    pictures = pictures_by_kind(xrays, params)
    with atomic_dir(out_dir) as tmp:
        rows = write_pictures(tmp, pictures)
        rows += write_dicom(tmp, xrays, kind_rng(params.seed, "dicom"))
        write_manifest(tmp / OOD_MANIFEST, rows)
    per_kind = Counter(row["kind"] for row in rows)
    return {
        "images": sum(len(items) for items in pictures.values()),
        "dicom": sum(per_kind[k] for k in DICOM_KINDS),
        "per_kind": {kind: per_kind[kind] for kind in (*KINDS, *DICOM_KINDS) if per_kind[kind]},
        "dir": str(out_dir),
    }
