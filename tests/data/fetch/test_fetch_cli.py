"""The Typer commands, through CliRunner on an app built from pneumo.cli.fetch (not pneumo/cli/app.py),
and `python -m pneumo.data.fetch` in a subprocess for start-up time and imports."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fetch_helpers import layout_files, tree_hashes, write_tree, zip_bytes
from typer.testing import CliRunner

from pneumo.cli import fetch as fetch_cli

runner = CliRunner()
app = fetch_cli.make_app()


def test_synthetic_fetch_into_dvc_repo(repo: Path) -> None:
    result = runner.invoke(app, ["fetch", "--source", "synthetic", "--repo", str(repo), "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["synthetic"] is True
    assert summary["counts"] == {"train": {"NORMAL": 80, "PNEUMONIA": 80}, "test": {"NORMAL": 24, "PNEUMONIA": 24}}
    assert (repo / "data" / "raw" / "SYNTHETIC.txt").exists() and (repo / "data.dvc").exists()
    manifest = (repo / "data" / "fetch_manifest.csv").read_text().splitlines()
    assert manifest[0] == "file,split,label,sha256,bytes" and len(manifest) == 209


def test_local_archive_and_text_summary(tmp_path: Path) -> None:
    archive = tmp_path / "chest_xray.zip"
    archive.write_bytes(zip_bytes(layout_files("chest_xray/")))
    result = runner.invoke(
        app,
        [
            "fetch",
            "--source",
            "local",
            "--path",
            str(archive),
            "--repo",
            str(tmp_path / "ws"),
            "--no-dvc",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "train NORMAL 3  PNEUMONIA 4" in result.stdout and "duplicates: 0 groups" in result.stdout
    assert len(tree_hashes(tmp_path / "ws" / "data" / "raw")) == 11


def test_error_is_one_line_naming_the_file_and_nonzero(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "flat", {"a.jpeg": b"x"})
    result = runner.invoke(
        app, ["fetch", "--source", "local", "--path", str(src), "--repo", str(tmp_path / "ws"), "--no-dvc"]
    )
    assert result.exit_code == 1
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and str(src) in lines[0] and "no split folders found" in lines[0]
    assert "left unchanged" in lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "url"], "--url is required with --source url"),
        (["--source", "local", "--path", ".", "--url", "http://x/y.zip"], "--url do(es) not apply to --source local"),
        (["--source", "synthetic", "--max-ratio", "0"], "max_ratio = 0.0: expected a number >= 1"),
    ],
)
def test_bad_options_refused(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["fetch", *args, "--repo", str(tmp_path), "--no-dvc"])
    assert result.exit_code == 2 and message in result.output


def test_remote_add_push_pull_commands(repo: Path, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", layout_files())
    added = runner.invoke(app, ["remote", "add", "--repo", str(repo)])  # the offline default
    assert added.exit_code == 0, added.output
    assert "dvc remote add -f -d storage ../pneumo-dvc-storage" in added.stdout
    assert (repo.parent / "pneumo-dvc-storage").is_dir()
    assert (
        runner.invoke(
            app, ["fetch", "--source", "local", "--path", str(src), "--repo", str(repo), "--no-progress"]
        ).exit_code
        == 0
    )
    assert runner.invoke(app, ["remote", "push", "--repo", str(repo)]).exit_code == 0
    assert any(p.is_file() for p in (repo.parent / "pneumo-dvc-storage").rglob("*"))
    secret = runner.invoke(
        app,
        [
            "remote",
            "add",
            "--kind",
            "gdrive",
            "--url",
            "someFolderId",
            "--name",
            "gd",
            "--no-default",
            "--gdrive-client-id",
            "cid",
            "--repo",
            str(repo),
        ],
        env={"PNEUMO_GDRIVE_CLIENT_SECRET": "very-secret-value"},
    )
    assert secret.exit_code == 0 and "very-secret-value" not in secret.output
    assert "gdrive_client_secret = very-secret-value" in (repo / ".dvc" / "config.local").read_text()


def test_module_starts_fast_without_heavy_imports() -> None:
    code = (
        "import sys, time; t = time.time(); import pneumo.cli.fetch; "
        "print(time.time() - t, sorted(m for m in ('tensorflow', 'dvc', 'kagglehub', 'pydrive2', 'pandas', "
        "'requests', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(
        maxsplit=1
    )
    assert float(out[0]) < 1.0 and out[1].strip() == "[]"
    start = time.time()
    help_out = subprocess.run([sys.executable, "-m", "pneumo", "fetch", "--help"], capture_output=True, text=True)
    assert help_out.returncode == 0 and "--source" in help_out.stdout and time.time() - start < 3
