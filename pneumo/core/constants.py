"""The facts every layer shares: labels, splits, file kinds, the package version."""

__version__ = "0.1.0"

LABELS: tuple[str, str] = ("NORMAL", "PNEUMONIA")  # index = class id; PNEUMONIA is the positive class
SPLITS: tuple[str, str, str] = ("train", "val", "test")
IMAGE_SUFFIXES: tuple[str, ...] = (".jpeg", ".jpg", ".png")
# A file at the top of a raw data folder that marks it as generated demo data, not X-rays.
SYNTHETIC_MARKER = "SYNTHETIC.txt"
