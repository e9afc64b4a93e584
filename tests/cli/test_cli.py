"""The command line: fast help, clear refusals, the demo workspace and the README's generated part."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from pneumo.cli.app import app
from support import REPO, write_params

runner = CliRunner()


def test_help_lists_every_stage_without_loading_tensorflow():
    code = (
        "import sys; from typer.testing import CliRunner; from pneumo.cli.app import app; "
        "r = CliRunner().invoke(app, ['--help']); print(r.output); "
        "print('TF_LOADED' if 'tensorflow' in sys.modules else 'TF_NOT_LOADED')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for stage in ("fetch", "prepare", "train", "evaluate", "export", "report", "predict", "diff"):
        assert stage in out
    assert "TF_NOT_LOADED" in out


def test_bad_params_are_refused_with_key_value_and_allowed(tmp_path):
    bad = write_params(tmp_path / "params.yaml", train__batch_size=0)
    result = runner.invoke(app, ["prepare", "--params", str(bad)])
    assert result.exit_code == 2
    assert "train.batch_size" in result.output and "0" in result.output and "1 to 1024" in result.output


def test_prepare_on_a_missing_folder_names_it(tmp_path):
    params = write_params(
        tmp_path / "params.yaml", data__raw_dir=str(tmp_path / "nowhere"), data__prepared_dir=str(tmp_path / "prep")
    )
    result = runner.invoke(app, ["prepare", "--params", str(params)])
    assert result.exit_code == 1 and "nowhere" in result.output


@pytest.mark.skipif(not (REPO / "eval" / "metrics.json").exists(), reason="no committed real-data metrics yet")
def test_readme_results_are_generated_from_the_committed_metrics():
    from pneumo.ops.readme import stale_blocks

    assert stale_blocks(REPO) == [], "generated blocks (README.md, docs/benchmarks.md) are stale: run `pneumo readme`"


def test_stage_order_follows_the_dag():
    import yaml

    from pneumo.ops.workspace import stages

    order = stages(REPO)
    dag = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(order) == set(dag)
    # Every stage comes after the stages whose outputs it depends on.
    outs = {
        name: [o if isinstance(o, str) else next(iter(o)) for o in spec.get("outs", []) + spec.get("metrics", [])]
        for name, spec in dag.items()
    }
    for i, name in enumerate(order):
        for dep in dag[name].get("deps", []):
            for other, produced in outs.items():
                if any(dep == o or dep.startswith(o + "/") for o in produced):
                    assert order.index(other) < i, f"{name} needs {other}"


# --------------------------------------------------------------------------- help at 80 columns


def _command_paths(command: typer.main.TyperGroup, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name in getattr(command, "commands", {}):
        paths += _command_paths(command.commands[name], (*prefix, name))
    return paths


def _assert_readable_at_80(typer_app: typer.Typer, path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(typer_app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    out = result.output
    assert result.exit_code == 0, out
    where = " ".join(path) or "(top)"
    assert max(map(len, out.splitlines())) <= 80, f"{where}: a line is over 80 columns"
    assert "<bool>" not in out, f"{where}: a flag is labelled <bool>"
    assert "\u2026" not in out, f"{where}: something is cut with an ellipsis"
    for line in out.splitlines():  # a metavar such as <kaggle|gdrive|url> never wraps mid-word
        assert not re.search(r"<[^<>\s]*$", line) and not re.match(r"^[\s│]*[^<>\s]*>", line), f"{where}: {line!r}"
    return out


def test_every_help_is_readable_at_80_columns():
    root = typer.main.get_command(app)
    paths = _command_paths(root)
    assert ("fetch",) in paths and ("remote", "add") in paths and ("prepare",) in paths
    for path in paths:
        out = _assert_readable_at_80(app, path)
        if path:  # the command's whole first sentence is shown, not cut with "..."
            first = (root.commands[path[0]] if len(path) == 1 else root.commands[path[0]].commands[path[1]]).help
            sentence = " ".join(first.split("\n\n")[0].split())
            sentence = sentence[: sentence.index(". ") + 1] if ". " in sentence else sentence
            assert sentence in " ".join(out.split()), f"{path}: {sentence!r}"
    fetch = _assert_readable_at_80(app, ("fetch",))
    assert "<kaggle|gdrive|url|local|synthetic>" in fetch
    assert "--dvc / --no-dvc" in fetch and "[default: data/fetch_manifest.csv]" in " ".join(fetch.split())


def test_top_help_lists_commands_whole_and_names_the_flows():
    out = " ".join(_assert_readable_at_80(app, ()).split())
    for command in typer.main.get_command(app).commands.values():
        first = " ".join(command.help.split("\n\n")[0].split())
        sentence = first[: first.index(". ") + 1] if ". " in first else first
        assert sentence in out, sentence
    assert "python -m flows run" in out and "python -m flows serve" in out and "pneumo-flow" in out


def test_flow_help_is_readable_at_80_columns():
    from flows.__main__ import app as flow_app

    root = typer.main.get_command(flow_app)
    for path in _command_paths(root):
        out = _assert_readable_at_80(flow_app, path)
        if path:
            first = " ".join(root.commands[path[0]].help.split("\n\n")[0].split())
            sentence = first[: first.index(". ") + 1] if ". " in first else first
            assert sentence in " ".join(out.split()), sentence


# --------------------------------------------------------------------------- outputs apart from inputs


@pytest.fixture
def data_dirs(tmp_path):
    """A params file with tmp data folders, each holding a file that must survive every refusal."""
    raw, prepared = tmp_path / "data" / "raw", tmp_path / "data" / "prepared"
    for folder in (raw, prepared):
        folder.mkdir(parents=True)
        (folder / "keep.txt").write_text("earlier output\n")
    params = write_params(tmp_path / "params.yaml", data__raw_dir=str(raw), data__prepared_dir=str(prepared))
    yield {"params": params, "raw": raw, "prepared": prepared, "root": tmp_path}
    for folder in (raw, prepared):
        assert (folder / "keep.txt").read_text() == "earlier output\n"
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]


def _refused_overlap(args: list[str], *names: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "overlaps" in result.output or "export writes" in result.output, result.output
    for name in names:
        assert name in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    return result.output


def test_prepare_refuses_prepared_dir_equal_to_raw_dir(data_dirs, tmp_path):
    params = write_params(
        tmp_path / "same.yaml", data__raw_dir=str(data_dirs["raw"]), data__prepared_dir=str(data_dirs["raw"])
    )
    result = runner.invoke(app, ["prepare", "--params", str(params)])
    assert result.exit_code == 2
    assert "data.prepared_dir" in result.output and "data.raw_dir" in result.output


@pytest.mark.parametrize("where", ["prepared", "raw", "root"])
def test_train_out_overlapping_the_data_refused(data_dirs, where):
    out = data_dirs[where] / ("" if where != "raw" else "models")
    _refused_overlap(["train", "--params", str(data_dirs["params"]), "--out", str(out)], str(out))


def test_evaluate_out_holding_the_model_refused(data_dirs):
    model_dir = data_dirs["root"] / "models" / "train"
    model_dir.mkdir(parents=True)
    (model_dir / "model.keras").write_text("a model\n")
    _refused_overlap(
        [
            "evaluate",
            "--params",
            str(data_dirs["params"]),
            "--model",
            str(model_dir / "model.keras"),
            "--out",
            str(model_dir),
        ],
        "--model",
    )
    assert (model_dir / "model.keras").read_text() == "a model\n"
    _refused_overlap(
        ["evaluate", "--params", str(data_dirs["params"]), "--out", str(data_dirs["prepared"])], "data.prepared_dir"
    )


def test_export_out_in_the_data_or_over_its_inputs_refused(data_dirs):
    _refused_overlap(["export", "--params", str(data_dirs["params"]), "--out", str(data_dirs["raw"])], "data.raw_dir")
    models = data_dirs["root"] / "models"
    _refused_overlap(
        ["export", "--params", str(data_dirs["params"]), "--model", str(models / "model.h5"), "--out", str(models)],
        "--model",
    )


def test_evaluate_out_inside_the_ood_set_refused(data_dirs):
    ood = data_dirs["root"] / "ood"
    ood.mkdir()
    (ood / "manifest.csv").write_text("path,kind,source,license,gate,note\n")
    args = ["evaluate", "--params", str(data_dirs["params"]), "--ood", str(ood), "--out", str(ood / "eval")]
    _refused_overlap(args, "--ood", str(ood))
    assert (ood / "manifest.csv").read_text().startswith("path,kind") and not (ood / "eval").exists()


def test_export_out_over_the_gate_statistics_refused(data_dirs):
    models = data_dirs["root"] / "models"
    _refused_overlap(
        [
            "export",
            "--params",
            str(data_dirs["params"]),
            "--ood-stats",
            str(models / "ood_stats.npz"),
            "--out",
            str(models),
        ],
        "--ood-stats",
    )


@pytest.mark.parametrize("inside", ["raw", "prepared"])
def test_an_ood_set_inside_the_data_is_refused(data_dirs, inside):
    params = write_params(
        data_dirs["root"] / "ood.yaml",
        data__raw_dir=str(data_dirs["raw"]),
        data__prepared_dir=str(data_dirs["prepared"]),
        oodset__dir=str(data_dirs[inside] / "ood"),
    )
    result = runner.invoke(app, ["oodset", "--params", str(params)])
    assert result.exit_code == 2, result.output
    assert "oodset.dir" in result.output and f"data.{inside}_dir" in result.output
    assert not (data_dirs[inside] / "ood").exists()


def test_report_out_holding_its_inputs_refused(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text("{}\n")
    _refused_overlap(
        ["report", "--metrics", str(tmp_path / "eval" / "metrics.json"), "--out", str(tmp_path)], "--metrics"
    )
    assert (tmp_path / "eval" / "metrics.json").read_text() == "{}\n"


def test_prepare_full_disk_is_one_line(tmp_path, monkeypatch):
    import errno

    import pneumo.stages.prepare as prepare_mod
    from pneumo.data.synthetic import synthesize

    raw = tmp_path / "raw"
    synthesize(raw, train_per_class=12, test_per_class=4, size=64)
    params = write_params(
        tmp_path / "params.yaml",
        data__raw_dir=str(raw),
        data__prepared_dir=str(tmp_path / "prepared"),
        data__image_size=64,
    )

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prepare_mod, "write_json", full)
    result = runner.invoke(app, ["prepare", "--params", str(params)])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "prepared" in errors[0]
    assert "Traceback" not in result.output and not (tmp_path / "prepared").exists()


def test_train_out_around_the_weights_file_refused(data_dirs):
    weights = data_dirs["root"] / "models" / "train" / "no_top.h5"
    params = write_params(
        data_dirs["root"] / "weights.yaml",
        train__weights=str(weights),
        data__raw_dir=str(data_dirs["raw"]),
        data__prepared_dir=str(data_dirs["prepared"]),
    )
    _refused_overlap(["train", "--params", str(params), "--out", str(weights.parent)], "train.weights")
