"""results: the README's generated section takes every figure from the files the code wrote."""

from __future__ import annotations

import json

import pytest

from pneumo import results


def _metrics(acc: float, sens: float, spec: float, auc: float) -> dict:
    at = {"accuracy": acc, "recall": sens, "specificity": spec}
    return {"operating_threshold": 0.6123, "test": {
        "images": 312, "roc_auc": auc, "at_operating": at,
        "ci95": {"at_operating": {"accuracy": [acc - 0.03, acc + 0.02], "roc_auc": [auc - 0.02, auc + 0.01]}}}}


def test_comparison_puts_this_run_with_its_intervals_beside_the_published_figures():
    table = results.comparison_table(_metrics(0.9213, 0.9571, 0.8412, 0.9734))
    lines = table.splitlines()
    ours = lines[2]
    assert "threshold 0.612" in ours and "| 312 |" in ours
    assert "0.921 (0.891–0.941)" in ours and "0.973 (0.953–0.983)" in ours
    assert "| 0.957 |" in ours and "| 0.841 |" in ours  # no interval given: none shown
    assert len(lines) == 3 + len(results.PUBLISHED)
    kermany = next(line for line in lines if line.startswith("| Kermany"))
    assert "| 0.928 | 0.932 | 0.901 | 0.968 |" in kermany
    assert "n/a" in lines[3]  # the notebook reported no specificity


def test_accelerator_estimate_follows_the_measured_rates_and_the_epochs():
    bench = {"results": [{"policy": "float32", "frozen_img_s": 1000.0, "finetune_img_s": 500.0,
                          "predict_img_s": 2000.0, "frozen_epoch_s": 6.0, "finetune_epoch_s": 12.0,
                          "frozen_first_step_s": 30.0, "finetune_first_step_s": 30.0}]}
    row = results.accelerator_table(bench, frozen_epochs=10, finetune_epochs=5).splitlines()[2]
    # 10 * 6 s + 5 * 12 s + 60 s of compilation = 3 min
    assert row.endswith("| 3.0 min |") and "1000 img/s" in row and "6.0 s / 12.0 s" in row
    longer = results.accelerator_table(bench, frozen_epochs=20, finetune_epochs=5).splitlines()[2]
    assert longer.endswith("| 4.0 min |")


def test_render_includes_the_experiment_table_when_there_is_a_record(tmp_path):
    from support import REPO

    for rel in ("eval/metrics.json", "models/model_card.json", "params.yaml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((REPO / rel).read_text())
    without = results.render(tmp_path)
    assert "Every experiment run through the pipeline" not in without
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    metrics["val_shift"] = {"roc_auc": 0.99, "balanced_accuracy": 0.9}
    from pneumo.experiments import default_params

    params = {**default_params(tmp_path), "train.dropout": 0.5}
    record = {"name": "try-1", "rev": "a" * 40, "run": "r", "params": params, "metrics": metrics}
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments/records.json").write_text(json.dumps({"records": [record]}))
    text = results.render(tmp_path)
    assert "(1 runs;" in text and "| try-1 **(chosen)** | `dropout=0.5`" in text
    assert f"{metrics['test']['roc_auc']:.3f}" in text.split("| try-1")[1]
    assert "No two runs differ in one lever alone yet." in text
    assert "No recipe has 3 scored runs yet: the single-run rule decides." in text


@pytest.mark.parametrize("missing", ["benchmarks/results/pipeline.json", "benchmarks/results/latency.json"])
def test_render_leaves_out_a_benchmark_that_was_not_run(tmp_path, missing):
    from support import REPO

    for rel in ("eval/metrics.json", "models/model_card.json", "params.yaml", "benchmarks/results/pipeline.json",
                "benchmarks/results/latency.json"):
        if rel != missing:
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text((REPO / rel).read_text())
    text = results.render(tmp_path)
    assert ("Wall time and peak memory" in text) == (missing != "benchmarks/results/pipeline.json")
    assert ("Model files on this" in text) == (missing != "benchmarks/results/latency.json")


def test_timing_says_when_it_was_measured_with_other_params(tmp_path):
    from pneumo.experiments import default_params

    (tmp_path / "params.yaml").write_text("train:\n  finetune:\n    layers: 100\n  seed: 42\nreport:\n  x: 1\n")
    today = default_params(tmp_path)
    assert results.timed_params_note({"params": today}, tmp_path) == ""
    assert results.timed_params_note({"params": {**today, "report.x": 2}}, tmp_path) == ""  # trains nothing
    note = results.timed_params_note({"params": {**today, "train.finetune.layers": 160}}, tmp_path)
    assert "`finetune.layers` (160 then)" in note and "seed" not in note
    assert "before the benchmark recorded" in results.timed_params_note({}, tmp_path)


def test_first_run_block_is_rendered_from_the_benchmark_and_replaced_in_place(tmp_path, monkeypatch):
    bench = {"machine": {"cpus": 2, "python": "3.11.7"}, "command": "python benchmarks/first_run.py --load 2",
             "commit": "abc1234", "load": 2, "venv_gb": 3.14,
             "install": {"seconds": 125.0, "exit_code": 0},
             "main_job": {"seconds": 390.0, "exit_code": 0, "noise_lines": []}}
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "first_run.json").write_text(json.dumps(bench))
    block = results.render_first_run(tmp_path)
    assert "with 2 other CPU-bound processes running" in block and "3.1 GB" in block
    assert "| set up (venv + `pip install`, pip cache warm) | 2.1 min | yes |" in block
    assert "| main job (`python -m flows run`) | 6.5 min | yes |" in block
    assert "printed no TensorFlow, CUDA or absl start-up line" in block
    bench["main_job"] = {"seconds": 30.0, "exit_code": 1, "noise_lines": ["cuInit"]}
    (tmp_path / "benchmarks" / "results" / "first_run.json").write_text(json.dumps(bench))
    block = results.render_first_run(tmp_path)
    assert "| 0.5 min | no |" in block and "printed 1 start-up noise line(s)" in block
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{results.FIRST_RUN_START}\nold\n{results.FIRST_RUN_END}\nmiddle\n"
                      f"{results.START}\nold\n{results.END}\nend\n")
    monkeypatch.setattr(results, "BLOCKS", ((results.START, results.END,
                                             lambda root: f"{results.START}\nnew\n{results.END}"),
                                            results.BLOCKS[1]))
    assert results.stale_blocks(tmp_path) == [results.START, results.FIRST_RUN_START]
    assert results.update_readme(tmp_path)
    assert results.stale_blocks(tmp_path) == []
    text = readme.read_text()
    assert text.startswith("intro\n") and "\nmiddle\n" in text and text.endswith("end\n") and "old" not in text
    assert block in text
