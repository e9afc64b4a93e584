"""Where the images come from. Each source leaves a folder (or an archive, then safely
extracted) inside our temporary work folder; clients are imported only when used.

Kaggle goes through kagglehub, Google Drive through pydrive2, URLs through requests; a local
folder is copied, a local archive extracted. Credentials are read from their usual places and
never printed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import webbrowser
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pneumo.data.fetch import archive
from pneumo.data.fetch.archive import Limits
from pneumo.data.fetch.download import redact_url
from pneumo.data.fetch.errors import FetchError
from pneumo.data.fetch.layout import is_junk

log = logging.getLogger(__name__)
DEFAULT_KAGGLE_HANDLE = "paultimothymooney/chest-xray-pneumonia"
GDRIVE_CREDENTIALS_ENV = "PNEUMO_GDRIVE_CREDENTIALS"
FOLDER_MIME = "application/vnd.google-apps.folder"


@dataclass(frozen=True)
class KaggleSource:
    handle: str = DEFAULT_KAGGLE_HANDLE
    force_download: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[\w.-]+/[\w.-]+(/versions/\d+)?", self.handle):
            raise FetchError(f"--handle {self.handle!r}: expected owner/dataset (optionally /versions/N)")


@dataclass(frozen=True)
class GDriveSource:
    drive_id: str  # a file id (an archive) or a folder id (downloaded recursively)
    credentials: Path | None = None  # service account key, OAuth client JSON, or pydrive2 settings YAML

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[\w-]{10,}", self.drive_id):
            raise FetchError(
                f"--drive-id {self.drive_id!r}: expected a Google Drive file or folder id "
                "(the long token in its sharing link)"
            )


@dataclass(frozen=True)
class UrlSource:
    url: str
    sha256: str | None = None
    retries: int = 4
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    timeout: float = 60.0


@dataclass(frozen=True)
class LocalSource:
    path: Path
    follow_symlinks: bool = False  # copy what links out of the folder point to (refused by default)


@dataclass(frozen=True)
class SyntheticSource:
    train_per_class: int = 80
    test_per_class: int = 24
    size: int = 224
    seed: int = 0


Source = KaggleSource | GDriveSource | UrlSource | LocalSource | SyntheticSource


# --- Kaggle -------------------------------------------------------------------------------


def kaggle_credentials_hint() -> str:
    return (
        "no Kaggle credentials found: set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN), or put "
        "kaggle.json in ~/.kaggle/ (or in $KAGGLE_CONFIG_DIR), or run kagglehub.login(); create a token at "
        "https://www.kaggle.com/settings (API section)"
    )


def from_kaggle(src: KaggleSource, work: Path) -> Path:
    """Download a Kaggle data set with kagglehub straight into `work` (no second cache copy)."""
    import kagglehub  # inside: each client loads only for its own source (start-up)
    from kagglehub.config import get_kaggle_credentials

    try:
        creds = get_kaggle_credentials()
    except ValueError as exc:  # a kaggle.json without username/key: kagglehub names the file, not the key
        raise FetchError(f"Kaggle credentials: {exc}") from None
    if creds is None:
        raise FetchError(kaggle_credentials_hint())
    out = work / "kaggle"
    try:
        got = kagglehub.dataset_download(src.handle, force_download=src.force_download, output_dir=str(out))
    except Exception as exc:  # kagglehub raises its own and requests' errors; name the handle
        raise FetchError(f"kaggle {src.handle}: download failed ({type(exc).__name__}: {exc})") from None
    return Path(got)


# --- Google Drive -------------------------------------------------------------------------


def _secret_values(path: Path) -> list[str]:
    """Values in a credentials file that must never reach a message."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    found: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            for key, value in obj.items():
                if isinstance(value, str) and any(s in key for s in ("private_key", "secret", "token")):
                    found.append(value)
                walk(value)

    walk(data)
    return [s for s in found if len(s) >= 6]


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def gdrive_credentials_path(given: Path | None) -> Path:
    """The credentials file from the option, $PNEUMO_GDRIVE_CREDENTIALS or $GOOGLE_APPLICATION_CREDENTIALS."""
    for candidate in (given, os.environ.get(GDRIVE_CREDENTIALS_ENV), os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_file():
                raise FetchError(f"{path}: Google Drive credentials file not found")
            return path
    raise FetchError(
        "no Google Drive credentials: pass --credentials with a service account key (JSON) or "
        f"your OAuth client (client_secrets JSON or a pydrive2 settings YAML), or set "
        f"{GDRIVE_CREDENTIALS_ENV} or GOOGLE_APPLICATION_CREDENTIALS to its path"
    )


def no_browser() -> str | None:
    """Why the OAuth sign-in could not open a browser here (a headless machine), or None."""
    if sys.platform.startswith("linux") and not any(
        os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER")
    ):
        return "no DISPLAY or WAYLAND_DISPLAY (a headless machine)"
    try:
        webbrowser.get()
    except webbrowser.Error:
        return "no usable web browser"
    return None


def _require_browser(path: Path, token: Path | None) -> None:
    """Fail at once where the OAuth sign-in would wait forever for a browser that never opens."""
    if token is not None and token.is_file():
        return  # a cached token: pydrive2 refreshes it without a browser
    reason = no_browser()
    if reason:
        raise FetchError(
            f"{path}: an OAuth client signs in through a web browser, and there is none here "
            f"({reason}); use a service account key instead: --credentials KEY.json (or "
            f'{GDRIVE_CREDENTIALS_ENV}) with "type": "service_account", or sign in once on a '
            f"machine with a browser and copy {token or 'the saved credentials file'} here"
        )


def make_drive(credentials: Path | None) -> Any:
    """An authenticated pydrive2 GoogleDrive; the kind of credentials is read from the file."""
    from pydrive2.auth import GoogleAuth  # inside: each client loads only for its own source (start-up)
    from pydrive2.drive import GoogleDrive

    path = gdrive_credentials_path(credentials)
    secrets = _secret_values(path)
    scope = ["https://www.googleapis.com/auth/drive.readonly"]
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            gauth = GoogleAuth(settings_file=str(path))
            if gauth.settings.get("client_config_backend") == "service":
                gauth.ServiceAuth()
            else:
                saved = gauth.settings.get("save_credentials_file")
                _require_browser(path, Path(saved).expanduser() if saved else None)
                gauth.LocalWebserverAuth()
        else:
            try:
                info = json.loads(path.read_text())
            except ValueError:
                raise FetchError(
                    f"{path}: not valid JSON (expected a service account key or an OAuth client file)"
                ) from None
            if info.get("type") == "service_account":
                gauth = GoogleAuth(
                    settings={
                        "client_config_backend": "service",
                        "oauth_scope": scope,
                        "service_config": {"client_json_file_path": str(path)},
                    }
                )
                gauth.ServiceAuth()
            elif "installed" in info or "web" in info:
                token = Path.home() / ".cache" / "pneumo" / "gdrive-token.json"
                _require_browser(path, token)
                token.parent.mkdir(parents=True, exist_ok=True)
                gauth = GoogleAuth(
                    settings={
                        "client_config_backend": "file",
                        "client_config_file": str(path),
                        "oauth_scope": scope,
                        "save_credentials": True,
                        "save_credentials_backend": "file",
                        "save_credentials_file": str(token),
                        "get_refresh_token": True,
                    }
                )
                gauth.LocalWebserverAuth()
                token.chmod(0o600)
            else:
                raise FetchError(
                    f'{path}: neither a service account key ("type": "service_account") nor an '
                    'OAuth client file ("installed" or "web")'
                )
    except FetchError:
        raise
    except Exception as exc:  # auth libraries raise many types; their text may quote the key
        raise FetchError(
            f"{path}: Google Drive authentication failed ({type(exc).__name__}: {_redact(str(exc), secrets)[:300]})"
        ) from None
    return GoogleDrive(gauth)


def _safe_title(title: str) -> str:
    """A Drive title as a single safe file name (titles may hold '/' or be '..')."""
    name = title.replace("/", "_").replace("\\", "_").replace("\x00", "")
    if name in ("", ".", ".."):
        raise FetchError(f"Google Drive item titled {title!r}: not usable as a file name")
    return name


def _drive_folder(drive: Any, folder_id: str, dest: Path, budget: list[int]) -> None:
    """Download a Drive folder recursively into `dest` (Shared Drives included)."""
    dest.mkdir(parents=True, exist_ok=True)
    query = {
        "q": f"'{folder_id}' in parents and trashed=false",
        "supportsAllDrives": True,
        "includeItemsFromAllDrives": True,
    }
    for item in drive.ListFile(query).GetList():
        name = _safe_title(item["title"])
        if item["mimeType"] == FOLDER_MIME:
            _drive_folder(drive, item["id"], dest / name, budget)
        elif item["mimeType"].startswith("application/vnd.google-apps."):
            log.warning("Google Drive %s (%s): a Google Docs item, not a file; skipped", name, item["id"])
        else:
            budget[0] -= 1
            if budget[0] < 0:
                raise FetchError(f"Google Drive folder {folder_id}: more files than the member limit; refused")
            item.GetContentFile(str(dest / name))


def from_gdrive(src: GDriveSource, work: Path, drive: Any = None, limits: Limits = Limits()) -> Path:
    """Download a Drive file (an archive) or folder into `work`; returns the file or folder."""
    drive = drive if drive is not None else make_drive(src.credentials)
    try:
        item = drive.CreateFile({"id": src.drive_id})
        title, mime = item["title"], item["mimeType"]
        if mime == FOLDER_MIME:
            out = work / "gdrive" / _safe_title(title)
            _drive_folder(drive, src.drive_id, out, [limits.max_members])
            return out
        out = work / "gdrive" / _safe_title(title)
        out.parent.mkdir(parents=True, exist_ok=True)
        item.GetContentFile(str(out))
        return out
    except FetchError:
        raise
    except Exception as exc:  # pydrive2 wraps HTTP errors in ApiRequestError, FileNotDownloadableError...
        raise FetchError(f"Google Drive {src.drive_id}: download failed ({type(exc).__name__}: {exc})") from None


# --- URL, local, synthetic ----------------------------------------------------------------


def from_url(src: UrlSource, work: Path, progress: bool | None = None, limits: Limits = Limits()) -> Path:
    from pneumo.data.fetch.download import download  # inside: requests loads only for a URL source

    name = Path(unquote(urlparse(src.url).path)).name or "download"
    name = re.sub(r"[^\w.+-]", "_", name)
    return download(
        src.url,
        work / "download" / name,
        sha256=src.sha256,
        retries=src.retries,
        backoff=src.backoff,
        timeout=src.timeout,
        progress=progress,
        max_bytes=limits.max_bytes,
    )


def from_synthetic(src: SyntheticSource, work: Path) -> Path:
    from pneumo.data.synthetic import synthesize  # numpy + PIL: only for this source

    out = work / "synthetic"
    synthesize(
        out, train_per_class=src.train_per_class, test_per_class=src.test_per_class, size=src.size, seed=src.seed
    )
    return out


def describe(src: Source) -> str:
    """How messages name the source."""
    if isinstance(src, LocalSource):
        return str(src.path)
    if isinstance(src, UrlSource):
        return redact_url(src.url)
    if isinstance(src, KaggleSource):
        return f"kaggle:{src.handle}"
    if isinstance(src, GDriveSource):
        return f"gdrive:{src.drive_id}"
    return "synthetic"


def _single_archive(folder: Path) -> Path | None:
    """The one archive in a downloaded folder that holds nothing else (Drive folders, Kaggle)."""
    kids = [k for k in folder.iterdir() if not is_junk(k)]
    if len(kids) == 1 and kids[0].is_file() and archive.is_archive_name(kids[0].name):
        return kids[0]
    return None


def acquire(
    src: Source, work: Path, limits: Limits = Limits(), progress: bool | None = None, drive: Any = None
) -> tuple[Path, bool]:
    """Bring the source into `work`; returns (folder to read, whether its files are ours to move)."""
    if isinstance(src, LocalSource):
        path = Path(src.path).expanduser()
        if not path.exists():
            raise FetchError(f"{path}: no such file or folder (--path)")
        got, ours = path, False
    elif isinstance(src, KaggleSource):
        got, ours = from_kaggle(src, work), True
    elif isinstance(src, GDriveSource):
        got, ours = from_gdrive(src, work, drive, limits), True
    elif isinstance(src, UrlSource):
        got, ours = from_url(src, work, progress, limits), True
    elif isinstance(src, SyntheticSource):
        got, ours = from_synthetic(src, work), True
    else:  # pragma: no cover - the CLI builds only the types above
        raise TypeError(f"unknown source {src!r}")
    if got.is_dir() and (inner := _single_archive(got)) is not None:
        got = inner
    if got.is_file():
        return archive.extract(got, work / "extracted", limits, progress), True
    if not got.is_dir():
        raise FetchError(f"{got}: the source produced neither a folder nor an archive")
    return got, ours
