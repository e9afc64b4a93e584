"""HTTP(S) downloads: into a `.part` file, retried, resumed with Range where the server allows,
verified (length, optional sha256), and only then moved to their final name."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path

from tqdm import tqdm

from pneumo.fetch.archive import progress_off
from pneumo.fetch.errors import FetchError

log = logging.getLogger(__name__)
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class _Retryable(Exception):
    """A failure worth another try (connection dropped, short body, 5xx)."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _check_sha256(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise FetchError(f"--sha256 {value!r}: expected 64 hexadecimal digits")
    return value


def _attempt(session, url: str, part: Path, timeout: float, progress: bool | None) -> None:
    """One GET; appends to `part` when the server honours our Range request, else restarts."""
    import requests

    have = part.stat().st_size if part.exists() else 0
    # identity: Range offsets must count the file's bytes, not a compressed transfer encoding.
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
    try:
        with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
            if resp.status_code in _RETRY_STATUS:
                raise _Retryable(f"HTTP {resp.status_code}")
            if resp.status_code == 416 and have:
                # Our .part already holds everything (or is garbage): start again cleanly.
                part.unlink()
                raise _Retryable("HTTP 416 on resume; restarting")
            if resp.status_code >= 400:
                raise FetchError(f"{url}: HTTP {resp.status_code} {resp.reason}")
            resumed = resp.status_code == 206 and resp.headers.get("Content-Range", "").startswith(f"bytes {have}-")
            if not resumed:
                have = 0  # the server ignored Range (or sent another range): take the whole body
            # Keep every byte that arrived before a cut (urllib3 would raise and drop its buffer);
            # the length check below notices the cut and the next attempt resumes after those bytes.
            resp.raw.enforce_content_length = False
            length = resp.headers.get("Content-Length")
            expected = have + int(length) if length and length.isdigit() else None
            with open(part, "ab" if resumed else "wb") as out, tqdm(
                    total=expected, initial=have, unit="B", unit_scale=True, desc=f"download {Path(url).name}",
                    disable=progress_off(progress)) as bar:
                for block in resp.iter_content(1 << 16):
                    out.write(block)
                    bar.update(len(block))
            got = part.stat().st_size
            if expected is not None and got != expected:
                raise _Retryable(f"connection closed after {got} of {expected} bytes")
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from None


def download(url: str, dest: Path, *, sha256: str | None = None, retries: int = 4, backoff: float = 1.0,
             timeout: float = 60.0, progress: bool | None = None) -> Path:
    """Download `url` to `dest`; `dest` appears only once the body is complete and verified."""
    import requests

    if not re.match(r"^https?://", url):
        raise FetchError(f"--url {url!r}: expected an http:// or https:// URL")
    if retries < 0:
        raise FetchError(f"--retries {retries}: expected 0 or more")
    pin = _check_sha256(sha256)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with requests.Session() as session:
        session.headers["User-Agent"] = "pneumo-fetch"
        for attempt in range(retries + 1):
            try:
                _attempt(session, url, part, timeout, progress)
                break
            except _Retryable as exc:
                if attempt == retries:
                    part.unlink(missing_ok=True)
                    raise FetchError(f"{url}: download failed after {retries + 1} attempts ({exc})") from None
                wait = backoff * 2**attempt
                log.warning("%s: %s; retrying in %.1f s (resuming from byte %d)", url, exc, wait,
                            part.stat().st_size if part.exists() else 0)
                time.sleep(wait)
    if pin is not None:
        actual = sha256_of(part)
        if actual != pin:
            part.unlink()
            raise FetchError(f"{url}: sha256 mismatch: expected {pin}, got {actual}; the file was discarded")
    os.replace(part, dest)
    return dest
