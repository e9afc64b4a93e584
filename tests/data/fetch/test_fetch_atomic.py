"""A fetch is one transaction: a full disk at any of its writes leaves data/raw, data.dvc,
data/.gitignore and the manifest byte for byte as they were, with a one-line error; and two
fetches in one repository take turns on a lock (real processes)."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fetch_helpers import layout_files, tree_hashes, write_tree

from conftest import git_dvc_repo
from pneumo.data.fetch import FetchError, LocalSource, core, dvc, fetch, manifest


def _enospc(path: object = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *([str(path)] if path else []))


def _fail_tree_copy(monkeypatch) -> None:
    """The third image copied into the new tree meets a full disk."""
    real, calls = shutil.copyfile, []

    def copyfile(src, dst, *a, **k):
        if ".fetch" in str(dst):
            calls.append(dst)
            if len(calls) == 3:
                raise _enospc(dst)
        return real(src, dst, *a, **k)

    monkeypatch.setattr(shutil, "copyfile", copyfile)


def _fail_manifest(monkeypatch) -> None:
    """Half the manifest is written, then the disk is full (a write() error names no file)."""
    real = manifest.write_rows

    def write_rows(rows, path):
        real(rows[: len(rows) // 2], path)
        raise _enospc()

    monkeypatch.setattr(manifest, "write_rows", write_rows)


def _fail_backup(monkeypatch) -> None:
    """Copying data.dvc aside before `dvc add` fails (after the new tree was swapped in)."""
    real = shutil.copy2

    def copy2(src, dst, *a, **k):
        if str(dst).endswith(".bak"):
            raise _enospc(dst)
        return real(src, dst, *a, **k)

    monkeypatch.setattr(shutil, "copy2", copy2)


def _fail_after_dvc_add(monkeypatch) -> None:
    """`dvc add` really runs (new data.dvc, .gitignore, cache objects), then the disk is full."""
    real = dvc.run

    def run(args, repo, secrets=()):
        out = real(args, repo, secrets)
        if args[0] == "add":
            raise _enospc()
        return out

    monkeypatch.setattr(dvc, "run", run)


def _fail_manifest_rename(monkeypatch) -> None:
    """The very last step, renaming the manifest into place, fails."""
    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst).name == "fetch_manifest.csv":
            raise _enospc(dst)
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)


WRITES = {
    "tree": _fail_tree_copy,
    "manifest": _fail_manifest,
    "dvc-backup": _fail_backup,
    "dvc-add": _fail_after_dvc_add,
    "manifest-rename": _fail_manifest_rename,
}


@pytest.fixture(scope="module")
def fetched(tmp_path_factory) -> Path:
    """A repository after one good fetch (copied for each test: `dvc add` takes seconds)."""
    root = tmp_path_factory.mktemp("fetched")
    repo = git_dvc_repo(root / "repo")
    fetch(LocalSource(write_tree(root / "a", layout_files())), repo=repo, progress=False)
    return repo


def _state(repo: Path) -> dict:
    # DVC's cache may keep objects of the refused data (harmless; `dvc gc` drops them): not compared.
    listing = sorted(
        rel.as_posix()
        for rel in (p.relative_to(repo) for p in repo.rglob("*"))
        if rel.parts[0] != ".git" and rel.parts[:2] not in ((".dvc", "cache"), (".dvc", "tmp"))
    )
    assert "data/raw/train/NORMAL/img000.jpeg" in listing and "data.dvc" in listing
    return {
        "raw": tree_hashes(repo / "data" / "raw"),
        "listing": listing,
        **{name: (repo / name).read_bytes() for name in ("data.dvc", "data/.gitignore", "data/fetch_manifest.csv")},
    }


@pytest.mark.parametrize("write", list(WRITES))
def test_full_disk_at_any_write_changes_nothing(fetched: Path, tmp_path: Path, monkeypatch, write: str) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(fetched, repo, symlinks=True)
    before = _state(repo)
    src = write_tree(tmp_path / "b", layout_files(start=50))
    WRITES[write](monkeypatch)
    with pytest.raises(FetchError) as err:
        fetch(LocalSource(src), repo=repo, progress=False)
    monkeypatch.undo()
    message = str(err.value)
    assert "\n" not in message and "No space left on device; free some space and fetch again" in message
    assert message.startswith(str(repo))  # names the file (or, for a write() error, the one being written)
    assert _state(repo) == before  # tree, data.dvc, .gitignore, manifest, and no temporaries left
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "data.dvc"], cwd=repo, capture_output=True, text=True, check=True
    )
    assert "up to date" in status.stdout  # data.dvc describes data/raw, and its cache is whole


def test_cli_reports_a_full_disk_in_one_line(fetched: Path, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from pneumo.cli import fetch as fetch_cli

    repo = tmp_path / "repo"
    shutil.copytree(fetched, repo, symlinks=True)
    _fail_manifest(monkeypatch)
    result = CliRunner().invoke(
        fetch_cli.make_app(),
        [
            "fetch",
            "--source",
            "local",
            "--path",
            str(write_tree(tmp_path / "b", layout_files(start=50))),
            "--repo",
            str(repo),
            "--no-progress",
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {repo / 'data' / 'fetch_manifest.csv'}: No space left "
        "on device; free some space and fetch again (previous data/raw "
        "left unchanged)"
    )


def _wait_for(path: Path, text: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while text not in path.read_text():
        assert time.time() < deadline, f"{text!r} never appeared in {path}: {path.read_text()}"
        time.sleep(0.2)


def test_concurrent_fetches_take_turns(repo: Path, tmp_path: Path) -> None:
    """Two real `pneumo fetch` processes at once: both wait while the lock is held, then run one
    after the other, so the manifest, data/raw and data.dvc agree, each naming its own md5."""
    from filelock import FileLock

    sources = {name: write_tree(tmp_path / name, layout_files(start=start)) for name, start in (("a", 0), ("b", 50))}
    lock = FileLock(str(core.lock_path(repo, repo / "data" / "raw")))
    procs, logs = {}, {}
    with lock:  # both start while a fetch "runs", so they surely overlap
        for name, src in sources.items():
            logs[name] = (tmp_path / f"{name}.out", tmp_path / f"{name}.err")
            procs[name] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pneumo",
                    "fetch",
                    "--source",
                    "local",
                    "--path",
                    str(src),
                    "--repo",
                    str(repo),
                    "--no-progress",
                    "--json",
                ],
                stdout=logs[name][0].open("w"),
                stderr=logs[name][1].open("w"),
            )
        for name in procs:
            _wait_for(logs[name][1], "another `pneumo fetch` is running", 60)
    assert [procs[n].wait(timeout=300) for n in procs] == [0, 0]
    rows = list(csv.DictReader((repo / "data" / "fetch_manifest.csv").open()))
    raw = tree_hashes(repo / "data" / "raw")
    assert {r["file"]: r["sha256"] for r in rows} == raw
    expected = {
        name: {k: hashlib.sha256(v).hexdigest() for k, v in layout_files(start=s).items()}
        for name, s in (("a", 0), ("b", 50))
    }
    assert raw in expected.values()
    md5 = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["md5"]
    printed = {name: json.loads(logs[name][0].read_text())["dvc_md5"] for name in procs}
    winner = next(n for n in procs if expected[n] == raw)
    assert printed[winner] == md5 and printed["a"] != printed["b"]
