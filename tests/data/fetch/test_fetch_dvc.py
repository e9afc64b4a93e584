"""Real git + DVC repositories: data.dvc at the root, push/pull round trip through a local
remote, remotes of every kind written where they belong, and a failed `dvc add` rolled back."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from fetch_helpers import layout_files, tree_hashes, write_tree

from pneumo.data.fetch import FetchError, LocalSource, dvc, fetch


def test_fetch_push_delete_pull_round_trip(repo: Path, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", layout_files("chest_xray/"))
    storage = tmp_path / "storage"
    dvc.remote_add(repo, dvc.remote_spec("local", str(storage)))
    summary = fetch(LocalSource(src), repo=repo, progress=False)
    data_dvc = yaml.safe_load((repo / "data.dvc").read_text())
    assert data_dvc["outs"][0]["path"] == "data/raw" and data_dvc["outs"][0]["md5"] == summary["dvc_md5"]
    assert data_dvc["outs"][0]["nfiles"] == 11 and not (repo / "data" / "raw.dvc").exists()
    assert "/raw" in (repo / "data" / ".gitignore").read_text()
    assert "fetch_manifest.csv" not in (repo / "data" / ".gitignore").read_text()
    before = tree_hashes(repo / "data" / "raw")
    dvc.push(repo, ["data.dvc"])
    assert any(p.is_file() for p in storage.rglob("*"))
    shutil.rmtree(repo / "data" / "raw")
    shutil.rmtree(repo / ".dvc" / "cache")
    dvc.pull(repo, ["data.dvc"])
    assert tree_hashes(repo / "data" / "raw") == before


def test_refetch_updates_the_same_data_dvc(repo: Path, tmp_path: Path) -> None:
    first = fetch(LocalSource(write_tree(tmp_path / "a", layout_files())), repo=repo, progress=False)
    second = fetch(LocalSource(write_tree(tmp_path / "b", layout_files(start=50))), repo=repo, progress=False)
    assert first["dvc_md5"] != second["dvc_md5"]
    assert yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["md5"] == second["dvc_md5"]
    assert sorted(p.name for p in repo.iterdir() if p.suffix == ".dvc") == ["data.dvc"]


def test_failed_dvc_add_restores_previous_tree_and_data_dvc(repo: Path, tmp_path: Path) -> None:
    fetch(LocalSource(write_tree(tmp_path / "a", layout_files())), repo=repo, progress=False)
    before = tree_hashes(repo / "data" / "raw")
    data_dvc, gitignore = (repo / "data.dvc").read_bytes(), (repo / "data" / ".gitignore").read_bytes()
    # git tracking a file inside data/raw makes `dvc add data/raw` fail (a real DVC refusal).
    subprocess.run(["git", "add", "-f", "data/raw/train/NORMAL/img000.jpeg"], cwd=repo, check=True)
    with pytest.raises(FetchError, match=r"`dvc add -q data/raw` failed"):
        fetch(LocalSource(write_tree(tmp_path / "b", layout_files(start=50))), repo=repo, progress=False)
    assert tree_hashes(repo / "data" / "raw") == before
    assert (repo / "data.dvc").read_bytes() == data_dvc and (repo / "data" / ".gitignore").read_bytes() == gitignore
    assert [p.name for p in (repo / "data").iterdir() if p.name.startswith(".raw")] == []


def test_fetch_refuses_a_folder_without_dvc(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"not a DVC repository \(no .dvc/\); run `git init && dvc init`"):
        fetch(LocalSource(tmp_path), repo=tmp_path, progress=False)


def _config(repo: Path, local: bool) -> str:
    return (repo / ".dvc" / ("config.local" if local else "config")).read_text()


@pytest.mark.slow
def test_remote_kinds_configured(repo: Path, tmp_path: Path) -> None:
    key = tmp_path / "sa.json"
    key.write_text("{}")
    dvc.remote_add(repo, dvc.remote_spec("gdrive", "1AbCdEfGhIjK", "gd", service_account=key))
    assert "url = gdrive://1AbCdEfGhIjK" in _config(repo, False)
    assert "gdrive_use_service_account = true" in _config(repo, False)
    assert f"gdrive_service_account_json_file_path = {key}" in _config(repo, True)
    assert "core" in _config(repo, False) and "remote = gd" in _config(repo, False)

    shown = dvc.remote_add(
        repo, dvc.remote_spec("gdrive", "gdrive://folder", "gd", client_id="cid.apps", client_secret="s3cr3t-value")
    )
    assert "s3cr3t-value" not in "\n".join(shown) and "***" in "\n".join(shown)
    assert "gdrive_client_id = cid.apps" in _config(repo, False)
    assert "gdrive_client_secret = s3cr3t-value" in _config(repo, True)
    assert "s3cr3t-value" not in _config(repo, False)
    assert "gdrive_service_account_json_file_path" not in _config(repo, True)  # stale local section dropped

    dvc.remote_add(
        repo,
        dvc.remote_spec(
            "s3",
            "s3://bucket/pneumo",
            "s3r",
            default=False,
            endpoint_url="http://127.0.0.1:9000",
            region="eu-west-1",
            profile="me",
        ),
    )
    dvc.remote_add(
        repo, dvc.remote_spec("gcs", "gs://bucket/pneumo", "gcs", default=False, credentials=key, project="proj")
    )
    cfg = _config(repo, False)
    assert (
        "url = s3://bucket/pneumo" in cfg
        and "endpointurl = http://127.0.0.1:9000" in cfg
        and "region = eu-west-1" in cfg
    )
    assert "url = gs://bucket/pneumo" in cfg and "projectname = proj" in cfg and "remote = gd" in cfg
    assert "profile = me" in _config(repo, True) and f"credentialpath = {key}" in _config(repo, True)
    listed = dvc.remotes(repo)
    assert {line.split()[0] for line in listed.splitlines()} == {"gd", "s3r", "gcs"}


@pytest.mark.parametrize(
    "kind, url, kwargs, message",
    [
        ("s3", "gs://b", {}, "a s3 remote needs a s3://... URL"),
        ("local", "s3://b", {}, "a local remote is a folder path"),
        ("gdrive", "gdrive://x", {}, "needs --gdrive-service-account KEY.json or --gdrive-client-id"),
        ("gdrive", "gdrive://x", {"client_id": "a"}, "go together"),
        ("s3", "s3://b", {"project": "p"}, "--project: not an option of a s3 remote"),
        ("gcs", None, {}, "--url: required for a gcs remote"),
    ],
)
def test_remote_options_validated(kind: str, url, kwargs: dict, message: str) -> None:
    with pytest.raises(FetchError, match=message):
        dvc.remote_spec(kind, url, **kwargs)
