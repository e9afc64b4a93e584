"""`fetch` from a real HTTP server on 127.0.0.1: good archives, and every failure leaves the
previous data/raw (and data.dvc, manifest) exactly as it was."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest

from pneumo.fetch import FetchError, Limits, UrlSource, fetch

from fetch_helpers import jpeg_bytes, layout_files, targz_bytes, tree_hashes, zip_bytes

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
    assert sorted(p.name for p in (ws / "data").iterdir()) == ["fetch_manifest.csv", "raw"]  # no temporaries left


@pytest.mark.parametrize("name, maker", [("good.zip", zip_bytes), ("good.tar.gz", targz_bytes)])
def test_good_archive_replaces_data_and_writes_manifest(previous, http_server, name: str, maker) -> None:
    ws, before, _ = previous
    base, handler = http_server
    handler.files[f"/{name}"] = maker(GOOD)
    summary = fetch(_url(base, name, sha256=hashlib.sha256(handler.files[f"/{name}"]).hexdigest()),
                    repo=ws, use_dvc=False, progress=False)
    after = tree_hashes(ws / "data" / "raw")
    assert after == {k.removeprefix("chest_xray/"): hashlib.sha256(v).hexdigest() for k, v in GOOD.items()}
    assert after != before
    assert summary["counts"] == {"train": {"NORMAL": 3, "PNEUMONIA": 4}, "test": {"NORMAL": 2, "PNEUMONIA": 2}}
    rows = list(csv.DictReader((ws / "data" / "fetch_manifest.csv").open()))
    assert [r["file"] for r in rows] == sorted(after)
    assert all(after[r["file"]] == r["sha256"] and int(r["bytes"]) > 0 for r in rows)
    assert {(r["split"], r["label"]) for r in rows} == {(s, l) for s in ("train", "test") for l in ("NORMAL", "PNEUMONIA")}


def test_truncated_download_resumes_with_range(previous, http_server) -> None:
    ws, _, _ = previous
    base, handler = http_server
    handler.files["/cut.zip"] = zip_bytes(GOOD)
    handler.cut["/cut.zip"] = "once"
    summary = fetch(_url(base, "cut.zip", sha256=hashlib.sha256(handler.files["/cut.zip"]).hexdigest()),
                    repo=ws, use_dvc=False, progress=False)
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
        "layout.zip": (zip_bytes({"pics/a.jpeg": jpeg_bytes(1), "pics/b.jpeg": jpeg_bytes(2)}),
                       "layout.zip/pics: no split folders found; found pics/a.jpeg, pics/b.jpeg; expected train/"),
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
    with pytest.raises(FetchError, match=r"short.zip: download failed after 3 attempts \(connection closed after|"
                                         r"short.zip: download failed after 3 attempts \(ChunkedEncodingError"):
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
    files = layout_files() | {"train/NORMAL/broken.jpeg": jpeg_bytes(50)[:40],
                              "test/NORMAL/copy.jpeg": layout_files()["train/NORMAL/img000.jpeg"]}
    handler.files["/mixed.tar.gz"] = targz_bytes(files)
    summary = fetch(_url(base, "mixed.tar.gz"), repo=tmp_path, use_dvc=False, progress=False)
    assert [u["file"] for u in summary["unreadable"]] == ["train/NORMAL/broken.jpeg"]
    assert summary["duplicate_groups"] == 1 and summary["duplicate_groups_across_splits"] == 1
    assert sorted(summary["duplicate_examples"][0]) == ["test/NORMAL/copy.jpeg", "train/NORMAL/img000.jpeg"]
