"""`pneumo fetch`: bring the chest X-ray set into data/raw (Kaggle layout) from Kaggle, Google
Drive, a URL, a local folder or archive, or the synthetic generator, and version it with DVC.

Nothing here imports TensorFlow (or DVC, kagglehub, pydrive2 before they are needed), so the
command starts fast.
"""

from pneumo.data.fetch.archive import Limits
from pneumo.data.fetch.core import fetch, format_summary
from pneumo.data.fetch.errors import FetchError
from pneumo.data.fetch.sources import (
    DEFAULT_KAGGLE_HANDLE,
    GDriveSource,
    KaggleSource,
    LocalSource,
    Source,
    SyntheticSource,
    UrlSource,
)

__all__ = [
    "DEFAULT_KAGGLE_HANDLE",
    "FetchError",
    "GDriveSource",
    "KaggleSource",
    "Limits",
    "LocalSource",
    "Source",
    "SyntheticSource",
    "UrlSource",
    "fetch",
    "format_summary",
]
