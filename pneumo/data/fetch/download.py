"""HTTP(S) downloads: into a `.part` file, retried, resumed with Range where the server allows,
bounded (max_bytes, counted while streaming), verified (length, optional sha256), and only then
moved to their final name.

URLs are printed redacted everywhere (user:password@, presigned-query signatures and tokens).
Plain http, or a redirect from https to http, is accepted with a warning unless --sha256 pins
the file: the pin, not the transport, is what proves the archive is the one meant.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tqdm import tqdm

from pneumo.data.fetch.archive import progress_off
from pneumo.data.fetch.errors import FetchError

log = logging.getLogger(__name__)
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
MAX_REDIRECTS = 10
# Query keys that carry credentials: X-Amz-Signature/-Credential/-Security-Token, X-Goog-Signature,
# Azure SAS `sig`, `token`, `access_token`, `api_key`, `key`, `password`...
_SECRET_KEY = re.compile(r"sig|token|key|secret|credential|passw|auth|session", re.IGNORECASE)


class _Retryable(Exception):
    """A failure worth another try (connection dropped, short body, 5xx)."""


def redact_url(url: str) -> str:
    """`url` with its userinfo and credential-like query values replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{k}=***" if sep and _SECRET_KEY.search(k) else f"{k}{sep}{v}"
        for k, sep, v in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, *urls: str) -> str:
    """`text` (an exception's message, say) with every secret of `urls` replaced by ***."""
    for url in urls:
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        text = text.replace(url, redact_url(url))
        if parts.query:  # requests' messages quote the path and query without the host
            redacted = urlsplit(redact_url(url))
            text = text.replace(f"{parts.path}?{parts.query}", f"{redacted.path}?{redacted.query}")
        secrets = [parts.password or "", parts.username or ""]
        secrets += [v for k, _, v in (p.partition("=") for p in parts.query.split("&")) if _SECRET_KEY.search(k)]
        for secret in sorted(secrets, key=len, reverse=True):
            if len(secret) >= 4:  # shorter ones would garble the text, and are no secret anyway
                text = text.replace(secret, "***")
    return text


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


def _warn_insecure(url: str, hops: list[str], pinned: bool, warned: set[str]) -> None:
    """Warn (once) when the archive travels over plain http and no --sha256 pins it."""
    if pinned:
        return
    if url.startswith("http://") and "http" not in warned:
        warned.add("http")
        log.warning(
            "%s: plain http: the archive is neither encrypted nor authenticated, so anyone on the way "
            "can change it; pin it with --sha256",
            redact_url(url),
        )
    downgrade = next((b for a, b in zip(hops, hops[1:]) if a.startswith("https://") and b.startswith("http://")), None)
    if downgrade and "downgrade" not in warned:
        warned.add("downgrade")
        log.warning(
            "%s: redirected from https to plain http (%s): the archive is neither encrypted nor "
            "authenticated, so anyone on the way can change it; pin it with --sha256",
            redact_url(url),
            redact_url(downgrade),
        )


def _attempt(
    session, url: str, part: Path, timeout: float, progress: bool | None, max_bytes: int, pinned: bool, warned: set[str]
) -> None:
    """One GET; appends to `part` when the server honours our Range request, else restarts."""
    import requests  # inside: requests loads slowly, only downloads need it

    shown = redact_url(url)
    have = part.stat().st_size if part.exists() else 0
    # identity: Range offsets must count the file's bytes, not a compressed transfer encoding.
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
    try:
        with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
            _warn_insecure(url, [r.url for r in resp.history] + [resp.url], pinned, warned)
            if resp.status_code in _RETRY_STATUS:
                raise _Retryable(f"HTTP {resp.status_code}")
            if resp.status_code == 416 and have:
                # Our .part already holds everything (or is garbage): start again cleanly.
                part.unlink()
                raise _Retryable("HTTP 416 on resume; restarting")
            if resp.status_code >= 400:
                raise FetchError(f"{shown}: HTTP {resp.status_code} {resp.reason}")
            resumed = resp.status_code == 206 and resp.headers.get("Content-Range", "").startswith(f"bytes {have}-")
            if not resumed:
                have = 0  # the server ignored Range (or sent another range): take the whole body
            # Keep every byte that arrived before a cut (urllib3 would raise and drop its buffer);
            # the length check below notices the cut and the next attempt resumes after those bytes.
            resp.raw.enforce_content_length = False
            length = resp.headers.get("Content-Length")
            expected = have + int(length) if length and length.isdigit() else None
            if expected is not None and expected > max_bytes:
                raise FetchError(
                    f"{shown}: {expected} bytes (Content-Length) exceed the limit of {max_bytes} "
                    "bytes (--max-bytes); refused before downloading"
                )
            size = have
            with (
                open(part, "ab" if resumed else "wb") as out,
                tqdm(
                    total=expected,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    desc=f"download {part.name.removesuffix('.part')}",
                    disable=progress_off(progress),
                ) as bar,
            ):
                # Counted here, not trusted from Content-Length: it may be absent or lie.
                for block in resp.iter_content(1 << 16):
                    size += len(block)
                    if size > max_bytes:
                        raise FetchError(
                            f"{shown}: more than {max_bytes} bytes (--max-bytes); download stopped "
                            "and the partial file deleted"
                        )
                    out.write(block)
                    bar.update(len(block))
            got = part.stat().st_size
            if expected is not None and got != expected:
                raise _Retryable(f"connection closed after {got} of {expected} bytes")
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        raise _Retryable(f"{type(exc).__name__}: {scrub(str(exc), url)}") from None
    except requests.TooManyRedirects:
        raise FetchError(f"{shown}: more than {MAX_REDIRECTS} redirects (a redirect loop?); refused") from None
    except (
        requests.exceptions.InvalidSchema,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidURL,
    ) as exc:
        raise FetchError(
            f"{shown}: redirected to an address that is not http(s) ({scrub(str(exc), url)}); refused"
        ) from None
    except requests.RequestException as exc:  # whatever else requests raises: one line, redacted
        raise FetchError(f"{shown}: download failed ({type(exc).__name__}: {scrub(str(exc), url)})") from None


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool | None = None,
    max_bytes: int = 20 * 10**9,
) -> Path:
    """Download `url` to `dest`; `dest` appears only once the body is complete and verified."""
    import requests  # inside: requests loads slowly, only downloads need it

    shown = redact_url(url)
    if not re.match(r"^https?://", url):
        raise FetchError(f"--url {shown!r}: expected an http:// or https:// URL")
    if retries < 0:
        raise FetchError(f"--retries {retries}: expected 0 or more")
    pin = _check_sha256(sha256)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    warned: set[str] = set()
    try:
        with requests.Session() as session:
            session.headers["User-Agent"] = "pneumo-fetch"
            session.max_redirects = MAX_REDIRECTS
            for attempt in range(retries + 1):
                try:
                    _attempt(session, url, part, timeout, progress, max_bytes, pin is not None, warned)
                    break
                except _Retryable as exc:
                    if attempt == retries:
                        raise FetchError(f"{shown}: download failed after {retries + 1} attempts ({exc})") from None
                    wait = backoff * 2**attempt
                    log.warning(
                        "%s: %s; retrying in %.1f s (resuming from byte %d)",
                        shown,
                        exc,
                        wait,
                        part.stat().st_size if part.exists() else 0,
                    )
                    time.sleep(wait)
        if pin is not None:
            actual = sha256_of(part)
            if actual != pin:
                raise FetchError(f"{shown}: sha256 mismatch: expected {pin}, got {actual}; the file was discarded")
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)  # a refused, failed or interrupted download leaves nothing
    return dest
