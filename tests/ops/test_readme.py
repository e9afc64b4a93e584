"""readme: the generated blocks of README.md and docs/benchmarks.md take every figure from the files the code wrote."""

from __future__ import annotations

import json

import pytest

from pneumo.ops import readme
from support import REPO


def _metrics(acc: float, sens: float, spec: float, auc: float) -> dict:
    at = {"accuracy": acc, "recall": sens, "specificity": spec}
    return {
        "operating_threshold": 0.6123,
        "test": {
            "images": 312,
            "roc_auc": auc,
            "at_operating": at,
            "ci95": {"at_operating": {"accuracy": [acc - 0.03, acc + 0.02], "roc_auc": [auc - 0.02, auc + 0.01]}},
        },
    }


def test_comparison_puts_this_run_with_its_intervals_beside_the_published_figures():
    table = readme.comparison_table(_metrics(0.9213, 0.9571, 0.8412, 0.9734))
    lines = table.splitlines()
    ours = lines[2]
    assert "threshold 0.612" in ours and "| 312 |" in ours
    assert "0.921 (0.891–0.941)" in ours and "0.973 (0.953–0.983)" in ours
    assert "| 0.957 |" in ours and "| 0.841 |" in ours  # no interval given: none shown
    assert len(lines) == 3 + len(readme.PUBLISHED)
    kermany = next(line for line in lines if line.startswith("| Kermany"))
    assert "| 0.928 | 0.932 | 0.901 | 0.968 |" in kermany
    assert "n/a" in lines[3]  # the notebook reported no specificity


def test_accelerator_estimate_follows_the_measured_rates_and_the_epochs():
    bench = {
        "results": [
            {
                "policy": "float32",
                "frozen_img_s": 1000.0,
                "finetune_img_s": 500.0,
                "predict_img_s": 2000.0,
                "frozen_epoch_s": 6.0,
                "finetune_epoch_s": 12.0,
                "frozen_first_step_s": 30.0,
                "finetune_first_step_s": 30.0,
            }
        ]
    }
    row = readme.accelerator_table(bench, frozen_epochs=10, finetune_epochs=5).splitlines()[2]
    # 10 * 6 s + 5 * 12 s + 60 s of compilation = 3 min
    assert row.endswith("| 3.0 min |") and "1000 img/s" in row and "6.0 s / 12.0 s" in row
    longer = readme.accelerator_table(bench, frozen_epochs=20, finetune_epochs=5).splitlines()[2]
    assert longer.endswith("| 4.0 min |")


def _copy(tmp_path, *rels: str) -> None:
    for rel in rels:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((REPO / rel).read_text())


def _record(tmp_path, name: str, **changed) -> dict:
    from pneumo.ops.experiments import default_params

    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    metrics["val_shift"] = {"roc_auc": 0.99, "balanced_accuracy": 0.9}
    return {
        "name": name,
        "rev": "a" * 40,
        "run": name,
        "params": {**default_params(tmp_path), **changed},
        "metrics": metrics,
    }


@pytest.mark.parametrize(
    ("changed", "recipe"),
    [
        ({"train.dropout": 0.5}, "trained with `params.yaml` except `train.dropout=0.5`"),
        ({}, "trained with today's default `params.yaml`"),
    ],
)
def test_render_names_the_chosen_run_and_links_the_experiment_tables(tmp_path, changed, recipe):
    _copy(tmp_path, "eval/metrics.json", "models/model_card.json", "params.yaml")
    without = readme.render(tmp_path)
    assert "experiment runs recorded" not in without and "| ROC-AUC |" in without
    (tmp_path / "experiments").mkdir()
    records = [_record(tmp_path, "try-1", **changed)]
    (tmp_path / "experiments/records.json").write_text(json.dumps({"records": records}))
    text = readme.render(tmp_path)
    assert "Of the 1 experiment runs recorded, validation chose **try-1**, " + recipe in text
    assert "[experiments/README.md](experiments/README.md)" in text
    assert "| run | changes vs default" not in text  # the run table lives in experiments/README.md only
    assert text.startswith(readme.START) and text.endswith(readme.END)


def test_render_keeps_the_benchmarks_out_of_the_readme(tmp_path):
    _copy(tmp_path, "eval/metrics.json", "models/model_card.json", "params.yaml", "benchmarks/results/pipeline.json")
    text = readme.render(tmp_path)
    assert "Wall time and peak memory" not in text and "| Kermany et al., Cell 2018 |" in text
    assert "Wall time and peak memory" in readme.render_benchmarks(tmp_path)


@pytest.mark.parametrize("missing", ["benchmarks/results/pipeline.json", "benchmarks/results/latency.json"])
def test_benchmarks_leave_out_one_that_was_not_run(tmp_path, missing):
    _copy(
        tmp_path,
        *(
            rel
            for rel in ("params.yaml", "benchmarks/results/pipeline.json", "benchmarks/results/latency.json")
            if rel != missing
        ),
    )
    text = readme.render_benchmarks(tmp_path)
    assert ("Wall time and peak memory" in text) == (missing != "benchmarks/results/pipeline.json")
    assert ("Model files on this" in text) == (missing != "benchmarks/results/latency.json")
    assert "nothing measured yet" not in text


def test_benchmarks_say_when_nothing_was_measured(tmp_path):
    text = readme.render_benchmarks(tmp_path)
    assert (
        text == f"{readme.BENCH_START}\n\n(nothing measured yet: run the scripts in `benchmarks/`)\n\n"
        f"{readme.BENCH_END}"
    )


def test_timing_says_when_it_was_measured_with_other_params(tmp_path):
    from pneumo.ops.experiments import default_params

    (tmp_path / "params.yaml").write_text("train:\n  finetune:\n    layers: 100\n  seed: 42\nreport:\n  x: 1\n")
    today = default_params(tmp_path)
    assert readme.timed_params_note({"params": today}, tmp_path) == ""
    assert readme.timed_params_note({"params": {**today, "report.x": 2}}, tmp_path) == ""  # trains nothing
    note = readme.timed_params_note({"params": {**today, "train.finetune.layers": 160}}, tmp_path)
    assert "`finetune.layers` (160 then)" in note and "seed" not in note
    assert "before the benchmark recorded" in readme.timed_params_note({}, tmp_path)


def test_first_run_block_is_rendered_from_the_benchmark(tmp_path):
    bench = {
        "machine": {"cpus": 2, "python": "3.11.7"},
        "command": "python benchmarks/first_run.py --load 2",
        "commit": "abc1234",
        "load": 2,
        "venv_gb": 3.14,
        "install": {"seconds": 125.0, "exit_code": 0},
        "main_job": {"seconds": 390.0, "exit_code": 0, "noise_lines": []},
    }
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "first_run.json").write_text(json.dumps(bench))
    block = readme.render_first_run(tmp_path)
    assert "with 2 other CPU-bound processes running" in block and "3.1 GB" in block
    assert "| set up (venv + `pip install`, pip cache warm) | 2.1 min | yes |" in block
    assert "| main job (`python -m flows run`) | 6.5 min | yes |" in block
    assert "printed no TensorFlow, CUDA or absl start-up line" in block
    bench["main_job"] = {"seconds": 30.0, "exit_code": 1, "noise_lines": ["cuInit"]}
    (tmp_path / "benchmarks" / "results" / "first_run.json").write_text(json.dumps(bench))
    block = readme.render_first_run(tmp_path)
    assert "| 0.5 min | no |" in block and "printed 1 start-up noise line(s)" in block


def test_every_block_is_replaced_in_place_in_its_own_file(tmp_path, monkeypatch):
    def fixed(start: str, end: str, body: str):
        return lambda root: f"{start}\n{body}\n{end}"

    monkeypatch.setattr(
        readme,
        "BLOCKS",
        (
            readme.Block(readme.README, readme.START, readme.END, fixed(readme.START, readme.END, "new")),
            readme.Block(
                readme.README,
                readme.FIRST_RUN_START,
                readme.FIRST_RUN_END,
                fixed(readme.FIRST_RUN_START, readme.FIRST_RUN_END, "cost"),
            ),
            readme.Block(
                readme.BENCHMARKS,
                readme.BENCH_START,
                readme.BENCH_END,
                fixed(readme.BENCH_START, readme.BENCH_END, "timed"),
            ),
        ),
    )
    readme_md, bench = tmp_path / "README.md", tmp_path / "docs" / "benchmarks.md"
    readme_md.write_text(
        f"intro\n{readme.FIRST_RUN_START}\nold\n{readme.FIRST_RUN_END}\nmiddle\n"
        f"{readme.START}\nold\n{readme.END}\nend\n"
    )
    bench.parent.mkdir()
    bench.write_text(f"# Benchmarks\n{readme.BENCH_START}\nold\n{readme.BENCH_END}\n")
    assert readme.stale_blocks(tmp_path) == [readme.START, readme.FIRST_RUN_START, readme.BENCH_START]
    assert readme.update_readme(tmp_path)
    assert readme.stale_blocks(tmp_path) == []
    assert not readme.update_readme(tmp_path)  # nothing left to change
    text = readme_md.read_text()
    assert text.startswith("intro\n") and "\nmiddle\n" in text and text.endswith("end\n") and "old" not in text
    assert f"{readme.START}\nnew\n{readme.END}" in text and f"{readme.FIRST_RUN_START}\ncost\n" in text
    assert bench.read_text() == f"# Benchmarks\n{readme.BENCH_START}\ntimed\n{readme.BENCH_END}\n"


def test_a_file_without_its_markers_is_refused_by_name(tmp_path):
    (tmp_path / "README.md").write_text("no markers here\n")
    with pytest.raises(ValueError, match="README.md: markers .*results:start"):
        readme.update_readme(tmp_path)
    assert (tmp_path / "README.md").read_text() == "no markers here\n"
