"""`fetch` from a real HTTP server on 127.0.0.1: good archives, and every failure leaves the
previous data/raw (and data.dvc, manifest) exactly as it was."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
from fetch_helpers import jpeg_bytes, layout_files, targz_bytes, tree_hashes, zip_bytes

from pneumo.data.fetch import FetchError, Limits, UrlSource, fetch

GOOD = layout_files("chest_xray/")


def _url(base: str, name: str, **kw) -> UrlSource:
    return UrlSource(f"{base}/{name}", backoff=0.01, timeout=10, **kw)


@pytest.fixture
def previous(tmp_path: Path, http_server) -> tuple[Path, dict[str, str], bytes]:
    """A workspace that already holds a fetched data/raw (other images) and its manifest."""
    base, handler = http_server
    handler.files["/old.zip"] = zip_bytes(layout_files(start=100))
    ws = tmp_path / "ws"
    fetch(_url(base, "old.zip"), repo=ws, use_dvc=False, progress=False)
    return ws, tree_hashes(ws / "data" / "raw"), (ws / "data" / "fetch_manifest.csv").read_bytes()


def _intact(ws: Path, before: dict[str, str], manifest: bytes) -> None:
    assert tree_hashes(ws / "data" / "raw") == before
    assert (ws / "data" / "fetch_manifest.csv").read_bytes() == manifest
    # No temporaries left; the lock file of a fetch without DVC stays (removing it would race).
    assert sorted(p.name for p in (ws / "data").iterdir()) == [".raw.fetch.lock", "fetch_manifest.csv", "raw"]


@pytest.mark.parametrize("name, maker", [("good.zip", zip_bytes), ("good.tar.gz", targz_bytes)])
def test_good_archive_replaces_data_and_writes_manifest(previous, http_server, name: str, maker) -> None:
    ws, before, _ = previous
    base, handler = http_server
    handler.files[f"/{name}"] = maker(GOOD)
    summary = fetch(
        _url(base, name, sha256=hashlib.sha256(handler.files[f"/{name}"]).hexdigest()),
        repo=ws,
        use_dvc=False,
        progress=False,
    )
    after = tree_hashes(ws / "data" / "raw")
    assert after == {k.removeprefix("chest_xray/"): hashlib.sha256(v).hexdigest() for k, v in GOOD.items()}
    assert after != before
    assert summary["counts"] == {"train": {"NORMAL": 3, "PNEUMONIA": 4}, "test": {"NORMAL": 2, "PNEUMONIA": 2}}
    rows = list(csv.DictReader((ws / "data" / "fetch_manifest.csv").open()))
    assert [r["file"] for r in rows] == sorted(after)
    assert all(after[r["file"]] == r["sha256"] and int(r["bytes"]) > 0 for r in rows)
    assert {(r["split"], r["label"]) for r in rows} == {
        (s, label) for s in ("train", "test") for label in ("NORMAL", "PNEUMONIA")
    }


def test_truncated_download_resumes_with_range(previous, http_server) -> None:
    ws, _, _ = previous
    base, handler = http_server
    handler.files["/cut.zip"] = zip_bytes(GOOD)
    handler.cut["/cut.zip"] = "once"
    summary = fetch(
        _url(base, "cut.zip", sha256=hashlib.sha256(handler.files["/cut.zip"]).hexdigest()),
        repo=ws,
        use_dvc=False,
        progress=False,
    )
    assert summary["total"] == len(GOOD)
    ranges = [rng for path, rng in handler.requests if path == "/cut.zip"]
    assert ranges[0] is None and ranges[1] == f"bytes={len(handler.files['/cut.zip']) // 2}-"


def test_server_without_range_restarts_whole_body(previous, http_server) -> None:
    ws, _, _ = previous
    base, handler = http_server
    handler.files["/norange.zip"] = zip_bytes(GOOD)
    handler.cut["/norange.zip"] = "once"
    handler.no_range.add("/norange.zip")
    assert fetch(_url(base, "norange.zip"), repo=ws, use_dvc=False, progress=False)["total"] == len(GOOD)


def _bad_archives() -> dict[str, tuple[bytes, str]]:
    good = zip_bytes(GOOD)
    return {
        "corrupt.zip": (b"PK\x03\x04" + bytes(range(256)) * 4, "corrupt.zip: corrupt or truncated zip"),
        "slip.zip": (zip_bytes(GOOD | {"../../evil.jpeg": b"evil"}), "slip.zip: member '../../evil.jpeg' escapes"),
        "bomb.zip": (zip_bytes(GOOD | {"pad.bin": b"\0" * 3_000_000}), "bomb.zip: declared compression ratio"),
        "layout.zip": (
            zip_bytes({"pics/a.jpeg": jpeg_bytes(1), "pics/b.jpeg": jpeg_bytes(2)}),
            "layout.zip/pics: no split folders found; found pics/a.jpeg, pics/b.jpeg; expected train/",
        ),
        "page.zip": (b"<html>login</html>", "page.zip: not a zip or tar archive"),
        "good.zip": (good, ""),
    }


@pytest.mark.parametrize("name", ["corrupt.zip", "slip.zip", "bomb.zip", "layout.zip", "page.zip"])
def test_bad_archive_refused_and_previous_kept(previous, http_server, name: str) -> None:
    ws, before, manifest = previous
    base, handler = http_server
    data, message = _bad_archives()[name]
    handler.files[f"/{name}"] = data
    with pytest.raises(FetchError) as err:
        fetch(_url(base, name), repo=ws, use_dvc=False, progress=False, limits=Limits(max_ratio=50))
    assert message in str(err.value)
    _intact(ws, before, manifest)
    assert not (ws.parent / "evil.jpeg").exists() and not (ws / "evil.jpeg").exists()


def test_wrong_sha256_refused_and_previous_kept(previous, http_server) -> None:
    ws, before, manifest = previous
    base, handler = http_server
    handler.files["/good.zip"] = zip_bytes(GOOD)
    with pytest.raises(FetchError, match=f"{base}/good.zip: sha256 mismatch: expected {'0' * 64}, got "):
        fetch(_url(base, "good.zip", sha256="0" * 64), repo=ws, use_dvc=False, progress=False)
    _intact(ws, before, manifest)


def test_always_truncated_fails_after_retries(previous, http_server) -> None:
    ws, before, manifest = previous
    base, handler = http_server
    handler.files["/short.zip"] = zip_bytes(GOOD)
    handler.cut["/short.zip"] = "always"
    handler.no_range.add("/short.zip")
    with pytest.raises(
        FetchError,
        match=r"short.zip: download failed after 3 attempts \(connection closed after|"
        r"short.zip: download failed after 3 attempts \(ChunkedEncodingError",
    ):
        fetch(_url(base, "short.zip", retries=2), repo=ws, use_dvc=False, progress=False)
    assert len([p for p, _ in handler.requests if p == "/short.zip"]) == 3
    _intact(ws, before, manifest)


def test_http_404_named(previous, http_server) -> None:
    ws, before, manifest = previous
    base, _ = http_server
    with pytest.raises(FetchError, match=f"{base}/missing.zip: HTTP 404"):
        fetch(_url(base, "missing.zip"), repo=ws, use_dvc=False, progress=False)
    _intact(ws, before, manifest)


def test_unreadable_and_duplicate_images_reported(tmp_path: Path, http_server) -> None:
    base, handler = http_server
    files = layout_files() | {
        "train/NORMAL/broken.jpeg": jpeg_bytes(50)[:40],
        "test/NORMAL/copy.jpeg": layout_files()["train/NORMAL/img000.jpeg"],
    }
    handler.files["/mixed.tar.gz"] = targz_bytes(files)
    summary = fetch(_url(base, "mixed.tar.gz"), repo=tmp_path, use_dvc=False, progress=False)
    assert [u["file"] for u in summary["unreadable"]] == ["train/NORMAL/broken.jpeg"]
    assert summary["duplicate_groups"] == 1 and summary["duplicate_groups_across_splits"] == 1
    assert sorted(summary["duplicate_examples"][0]) == ["test/NORMAL/copy.jpeg", "train/NORMAL/img000.jpeg"]


# --- limits, redirects, plain http and secrets in URLs ---------------------------------------


@pytest.mark.parametrize("declared", [False, True])
def test_max_bytes_bounds_the_download(previous, http_server, declared: bool) -> None:
    """Without Content-Length the stream is cut at the limit; a declared length over it is
    refused before the body is read. Either way the partial file goes and nothing changes."""
    ws, before, manifest = previous
    base, handler = http_server
    handler.files["/big.zip"] = b"PK" + b"\0" * 40_000_000
    if not declared:
        handler.no_length.add("/big.zip")
    with pytest.raises(FetchError) as err:
        fetch(_url(base, "big.zip"), repo=ws, use_dvc=False, progress=False, limits=Limits(max_bytes=1_000_000))
    assert "(--max-bytes)" in str(err.value) and "1000000 bytes" in str(err.value)
    assert ("refused before downloading" in str(err.value)) == declared
    if not declared:
        # The client hung up near the limit (socket buffers hold a few MB more), not after 40 MB.
        assert handler.sent["/big.zip"] < 20_000_000
    _intact(ws, before, manifest)


def test_plain_http_warns_unless_pinned(tmp_path: Path, http_server, caplog) -> None:
    base, handler = http_server
    handler.files["/good.zip"] = zip_bytes(GOOD)
    fetch(_url(base, "good.zip"), repo=tmp_path / "a", use_dvc=False, progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"{base}/good.zip: plain http: the archive is neither encrypted nor authenticated, so "
        "anyone on the way can change it; pin it with --sha256"
    ]
    caplog.clear()
    fetch(
        _url(base, "good.zip", sha256=hashlib.sha256(handler.files["/good.zip"]).hexdigest()),
        repo=tmp_path / "b",
        use_dvc=False,
        progress=False,
    )
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []


def test_https_redirect_to_http_warns(tmp_path: Path, https_server, http_server, caplog) -> None:
    secure, tls_handler = https_server
    plain, handler = http_server
    handler.files["/good.zip"] = zip_bytes(GOOD)
    tls_handler.redirects["/good.zip"] = f"{plain}/good.zip"
    assert fetch(_url(secure, "good.zip"), repo=tmp_path, use_dvc=False, progress=False)["total"] == len(GOOD)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"{secure}/good.zip: redirected from https to plain http ({plain}/good.zip): the archive "
        "is neither encrypted nor authenticated, so anyone on the way can change it; pin it with "
        "--sha256"
    ]


@pytest.mark.parametrize(
    "location, message",
    [
        ("file:///etc/passwd", "redirected to an address that is not http(s)"),
        ("/loop.zip", "more than 10 redirects (a redirect loop?); refused"),
    ],
)
def test_bad_redirect_is_one_clean_error(previous, http_server, location: str, message: str) -> None:
    ws, before, manifest = previous
    base, handler = http_server
    handler.redirects["/loop.zip"] = location
    with pytest.raises(FetchError) as err:
        fetch(_url(base, "loop.zip"), repo=ws, use_dvc=False, progress=False)
    assert str(err.value).startswith(f"{base}/loop.zip: ") and message in str(err.value)
    assert "\n" not in str(err.value)
    _intact(ws, before, manifest)


SECRETS = ("hunter2pass", "SIGNATUREVALUE", "TOKENVALUE", "CREDVALUE")


@pytest.mark.parametrize("case", ["404", "retries", "refused", "layout"])
def test_credentials_in_url_never_shown(tmp_path: Path, http_server, caplog, capsys, case: str) -> None:
    """userinfo and presigned-query values appear in no error, log line or output."""
    import socket

    base, handler = http_server
    handler.files["/cut.zip"] = zip_bytes(GOOD)
    handler.cut["/cut.zip"] = "always"
    handler.files["/pics.zip"] = zip_bytes({"pics/a.jpeg": jpeg_bytes(1)})
    if case == "refused":
        with socket.socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    name = {"404": "missing.zip", "retries": "cut.zip", "refused": "x.zip", "layout": "pics.zip"}[case]
    url = (
        f"http://alice:hunter2pass@{base.removeprefix('http://')}/{name}?X-Amz-Credential=CREDVALUE"
        "&X-Amz-Signature=SIGNATUREVALUE&token=TOKENVALUE&part=1"
    )
    with pytest.raises(FetchError) as err:
        fetch(UrlSource(url, retries=1, backoff=0.01, timeout=5), repo=tmp_path, use_dvc=False, progress=False)
    out = capsys.readouterr()
    for text in (str(err.value), caplog.text, out.out, out.err):
        assert not [s for s in SECRETS if s in text], text
    assert f"/{name}?X-Amz-Credential=***&X-Amz-Signature=***&token=***&part=1" in str(err.value)
    assert "***@127.0.0.1" in str(err.value)
