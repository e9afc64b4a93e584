"""The real copy in ../shared/data/chest_xray (CI has it): counts after a local fetch."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pneumo.cli import fetch as fetch_cli
from support import REAL_DATA as SHARED

# Copies and hashes the whole real set (5,856 X-rays) into DVC: the slow tier.
pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent (real data set; CI provides it)")
def test_local_shared_copy_counts(repo: Path) -> None:
    result = CliRunner().invoke(
        fetch_cli.make_app(),
        ["fetch", "--source", "local", "--path", str(SHARED), "--repo", str(repo), "--json", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    import json

    summary = json.loads(result.stdout)
    assert summary["counts"] == {
        "train": {"NORMAL": 1341, "PNEUMONIA": 3875},
        "test": {"NORMAL": 117, "PNEUMONIA": 195},
    }
    assert summary["unreadable"] == [] and summary["synthetic"] is False
    assert summary["duplicate_groups"] == 26  # 24 in train, 2 in test (README)
    assert sorted(summary["ignored"]) == ["MANIFEST.csv", "README.md"]
    assert (repo / "data.dvc").exists() and not (repo / "data" / "raw" / "README.md").exists()
