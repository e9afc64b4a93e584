"""The command line: fast help, clear refusals, the demo workspace and the README's generated part."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from support import REPO
from pneumo.cli import app

runner = CliRunner()


def test_help_lists_every_stage_without_loading_tensorflow():
    code = ("import sys; from typer.testing import CliRunner; from pneumo.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); print(r.output); "
            "print('TF_LOADED' if 'tensorflow' in sys.modules else 'TF_NOT_LOADED')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for stage in ("fetch", "prepare", "train", "evaluate", "export", "report", "predict", "diff"):
        assert stage in out
    assert "TF_NOT_LOADED" in out


def test_bad_params_are_refused_with_key_value_and_allowed(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  batch_size: 0\n")
    result = runner.invoke(app, ["prepare", "--params", str(bad)])
    assert result.exit_code == 2
    assert "train.batch_size" in result.output and "0" in result.output and "1 to 1024" in result.output


def test_prepare_on_a_missing_folder_names_it(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  raw_dir: {tmp_path / 'nowhere'}\n  prepared_dir: {tmp_path / 'prep'}\n")
    result = runner.invoke(app, ["prepare", "--params", str(params)])
    assert result.exit_code == 1 and "nowhere" in result.output


@pytest.mark.skipif(not (REPO / "eval" / "metrics.json").exists(), reason="no committed real-data metrics yet")
def test_readme_results_are_generated_from_the_committed_metrics():
    from pneumo.results import generated_section, render

    assert generated_section((REPO / "README.md").read_text()) == render(REPO), \
        "README.md's results section is stale: run `pneumo readme`"


def test_stage_order_follows_the_dag():
    import yaml

    from pneumo.workspace import stages

    order = stages(REPO)
    dag = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(order) == set(dag)
    # Every stage comes after the stages whose outputs it depends on.
    outs = {name: [o if isinstance(o, str) else next(iter(o)) for o in spec.get("outs", [])
                   + spec.get("metrics", [])] for name, spec in dag.items()}
    for i, name in enumerate(order):
        for dep in dag[name].get("deps", []):
            for other, produced in outs.items():
                if any(dep == o or dep.startswith(o + "/") for o in produced):
                    assert order.index(other) < i, f"{name} needs {other}"
