"""Kaggle (kagglehub) and Google Drive (pydrive2): fakes at the client library's interface,
since neither service is reachable here; credential handling runs the real libraries."""

from __future__ import annotations

import json
from pathlib import Path

import kagglehub
import pytest
from fetch_helpers import jpeg_bytes, layout_files, tree_hashes, write_tree, zip_bytes

from pneumo.data.fetch import FetchError, GDriveSource, KaggleSource, fetch, sources


@pytest.fixture
def no_kaggle_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_kaggle_downloads_through_kagglehub(tmp_path: Path, monkeypatch, no_kaggle_credentials) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "k" * 32)
    calls = []

    def fake_download(handle, path=None, *, force_download=False, output_dir=None):
        calls.append({"handle": handle, "path": path, "force_download": force_download, "output_dir": output_dir})
        # The Kaggle copy: chest_xray/ with the nested duplicate and __MACOSX junk.
        write_tree(
            Path(output_dir),
            layout_files("chest_xray/") | layout_files("chest_xray/chest_xray/") | {"chest_xray/__MACOSX/._x": b"junk"},
        )
        return output_dir

    monkeypatch.setattr(kagglehub, "dataset_download", fake_download)
    summary = fetch(KaggleSource("owner/some-set"), repo=tmp_path / "ws", use_dvc=False, progress=False)
    assert len(calls) == 1 and calls[0]["handle"] == "owner/some-set" and calls[0]["force_download"] is False
    assert Path(calls[0]["output_dir"]).name == "kaggle" and not Path(calls[0]["output_dir"]).exists()  # temp removed
    assert summary["counts"]["train"] == {"NORMAL": 3, "PNEUMONIA": 4}
    assert any("chest_xray/chest_xray" in s for s in summary["ignored"])
    assert sorted(tree_hashes(tmp_path / "ws" / "data" / "raw"))[0] == "test/NORMAL/img007.jpeg"


def test_kaggle_default_handle_and_zip_result(tmp_path: Path, monkeypatch, no_kaggle_credentials) -> None:
    kaggle_dir = tmp_path / "home" / ".kaggle"
    kaggle_dir.mkdir(parents=True)
    (kaggle_dir / "kaggle.json").write_text(json.dumps({"username": "u", "key": "k"}))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(kaggle_dir))
    seen = []

    def fake_download(handle, path=None, *, force_download=False, output_dir=None):
        seen.append(handle)
        Path(output_dir).mkdir(parents=True)
        (Path(output_dir) / "chest-xray-pneumonia.zip").write_bytes(zip_bytes(layout_files("chest_xray/")))
        return output_dir

    monkeypatch.setattr(kagglehub, "dataset_download", fake_download)
    summary = fetch(KaggleSource(), repo=tmp_path / "ws", use_dvc=False, progress=False)
    assert seen == ["paultimothymooney/chest-xray-pneumonia"] and summary["total"] == 11


def test_kaggle_without_credentials_names_the_places(tmp_path: Path, monkeypatch, no_kaggle_credentials) -> None:
    monkeypatch.setattr(kagglehub, "dataset_download", lambda *a, **k: pytest.fail("must not download"))
    with pytest.raises(FetchError) as err:
        fetch(KaggleSource(), repo=tmp_path / "ws", use_dvc=False, progress=False)
    for place in ("KAGGLE_USERNAME", "KAGGLE_KEY", "~/.kaggle/", "kaggle.json", "kagglehub.login()"):
        assert place in str(err.value)
    assert not (tmp_path / "ws" / "data" / "raw").exists()


class FakeFile(dict):
    """pydrive2.files.GoogleDriveFile's surface: metadata by key, GetContentFile."""

    def __init__(self, drive: FakeDrive, meta: dict) -> None:
        super().__init__(meta)
        self.drive = drive

    def GetContentFile(self, filename: str, **kwargs) -> None:
        self.drive.downloads.append((self["id"], filename))
        Path(filename).write_bytes(self.drive.blobs[self["id"]])


class FakeList:
    def __init__(self, items: list[FakeFile]) -> None:
        self.items = items

    def GetList(self) -> list[FakeFile]:
        return self.items


class FakeDrive:
    """pydrive2.drive.GoogleDrive's surface: CreateFile({'id'}), ListFile({'q'}).GetList()."""

    def __init__(self) -> None:
        self.meta: dict[str, dict] = {}
        self.children: dict[str, list[str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.queries: list[dict] = []
        self.downloads: list[tuple[str, str]] = []

    def add(
        self,
        fid: str,
        title: str,
        parent: str | None,
        data: bytes | None = None,
        mime: str = "application/octet-stream",
    ) -> None:
        self.meta[fid] = {"id": fid, "title": title, "mimeType": mime if data is not None else sources.FOLDER_MIME}
        if data is not None:
            self.blobs[fid] = data
        if parent:
            self.children.setdefault(parent, []).append(fid)

    def CreateFile(self, metadata: dict) -> FakeFile:
        return FakeFile(self, self.meta[metadata["id"]])

    def ListFile(self, param: dict) -> FakeList:
        self.queries.append(param)
        parent = param["q"].split("'")[1]
        return FakeList([FakeFile(self, self.meta[c]) for c in self.children.get(parent, [])])


def test_gdrive_folder_downloaded_recursively(tmp_path: Path) -> None:
    drive = FakeDrive()
    drive.add("rootfolder0001", "chest_xray", None)
    n = 0
    for split in ("train", "test"):
        drive.add(f"{split}-folder-id", split, "rootfolder0001")
        for label in ("NORMAL", "PNEUMONIA"):
            drive.add(f"{split}-{label}-id", label, f"{split}-folder-id")
            for _ in range(2):
                drive.add(f"file-{n:04d}-id", f"im{n}.jpeg", f"{split}-{label}-id", jpeg_bytes(n), "image/jpeg")
                n += 1
    drive.add("gdoc-000000-id", "notes", "rootfolder0001", b"", "application/vnd.google-apps.document")
    summary = fetch(GDriveSource("rootfolder0001"), repo=tmp_path / "ws", use_dvc=False, progress=False, drive=drive)
    assert summary["counts"] == {"train": {"NORMAL": 2, "PNEUMONIA": 2}, "test": {"NORMAL": 2, "PNEUMONIA": 2}}
    assert len(drive.downloads) == 8 and all(q["supportsAllDrives"] for q in drive.queries)
    assert {q["q"] for q in drive.queries} >= {"'rootfolder0001' in parents and trashed=false"}
    assert (tmp_path / "ws" / "data" / "raw" / "train" / "PNEUMONIA" / "im3.jpeg").read_bytes() == jpeg_bytes(3)


def test_gdrive_file_id_of_a_zip(tmp_path: Path) -> None:
    drive = FakeDrive()
    drive.add("zipfileid0001", "chest_xray.zip", None, zip_bytes(layout_files("chest_xray/")), "application/zip")
    summary = fetch(GDriveSource("zipfileid0001"), repo=tmp_path / "ws", use_dvc=False, progress=False, drive=drive)
    assert [d[0] for d in drive.downloads] == ["zipfileid0001"] and summary["total"] == 11


def test_gdrive_hostile_title_refused(tmp_path: Path) -> None:
    drive = FakeDrive()
    drive.add("folder00000001", "top", None)
    drive.add("evil00000001", "..", "folder00000001", b"x")
    with pytest.raises(FetchError, match=r"titled '\.\.': not usable as a file name"):
        fetch(GDriveSource("folder00000001"), repo=tmp_path / "ws", use_dvc=False, progress=False, drive=drive)


def test_gdrive_missing_credentials_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(sources.GDRIVE_CREDENTIALS_ENV, raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with pytest.raises(FetchError) as err:
        fetch(GDriveSource("folder00000001"), repo=tmp_path / "ws", use_dvc=False, progress=False)
    for name in (
        "--credentials",
        "service account",
        "OAuth client",
        "PNEUMO_GDRIVE_CREDENTIALS",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ):
        assert name in str(err.value)


def test_gdrive_bad_service_account_never_shows_the_key(tmp_path: Path, capsys, caplog) -> None:
    """Real pydrive2/oauth2client parse a key that is not a valid RSA key: the message names the
    file, and the private key text appears nowhere (message, stdout, stderr, logs)."""
    secret = "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYMATERIAL0123456789\n-----END PRIVATE KEY-----\n"
    key = tmp_path / "sa.json"
    key.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "p",
                "private_key_id": "abcdef123456",
                "private_key": secret,
                "client_email": "sa@p.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    with pytest.raises(FetchError) as err:
        fetch(GDriveSource("folder00000001", key), repo=tmp_path / "ws", use_dvc=False, progress=False)
    assert str(key) in str(err.value) and "authentication failed" in str(err.value)
    out = capsys.readouterr()
    for text in (str(err.value), out.out, out.err, caplog.text):
        assert "TOPSECRETKEYMATERIAL" not in text and "abcdef123456" not in text


def test_gdrive_unknown_credentials_kind(tmp_path: Path) -> None:
    creds = tmp_path / "what.json"
    creds.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(FetchError, match=r"what.json: neither a service account key"):
        sources.make_drive(creds)


def test_gdrive_oauth_on_a_headless_machine_fails_at_once(tmp_path: Path) -> None:
    """With an OAuth client, no display and no cached token, `pneumo fetch` does not wait for a
    browser that never opens: it exits with one line naming the service-account setting."""
    import os
    import subprocess
    import sys

    client = tmp_path / "client_secrets.json"
    client.write_text(
        json.dumps(
            {
                "installed": {
                    "client_id": "id.apps.googleusercontent.com",
                    "client_secret": "not-a-real-secret",
                    "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                    "token_uri": "https://oauth2.googleapis.com/token",
                    "redirect_uris": ["http://localhost"],
                }
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER")}
    env["HOME"] = str(tmp_path / "home")  # no cached token
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pneumo",
            "fetch",
            "--source",
            "gdrive",
            "--drive-id",
            "folder00000001",
            "--credentials",
            str(client),
            "--repo",
            str(tmp_path / "ws"),
            "--no-dvc",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"error: {client}: an OAuth client signs in through a web browser, and there is none "
        "here (no DISPLAY or WAYLAND_DISPLAY (a headless machine))"
    )
    for setting in ("service account", "--credentials KEY.json", sources.GDRIVE_CREDENTIALS_ENV, "gdrive-token.json"):
        assert setting in line
    assert "not-a-real-secret" not in proc.stderr + proc.stdout
    assert not (tmp_path / "home" / ".cache" / "pneumo" / "gdrive-token.json").exists()
