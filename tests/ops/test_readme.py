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


def _safety_metrics(**overrides) -> dict:
    """A small eval/metrics.json with the decision policy, every figure distinct so each can be found."""
    metrics = {
        "synthetic": False,
        "policy": {
            "threshold": 0.8629,
            "threshold_rule": "highest calibrated probability with validation sensitivity >= 0.95",
            "calibration": {"method": "temperature", "temperature": 0.5124, "fitted_on": "val"},
            "refer": {"coverage": 0.98, "band": [0.5496, 0.9599]},
            "ood": {"threshold": 71.72, "keep": 0.99},
        },
        "calibration": {
            "bins": 10,
            "val": {"ece": 0.0108, "brier": 0.0179, "ece_uncalibrated": 0.0662, "brier_uncalibrated": 0.0226},
            "test": {"ece": 0.0852, "brier": 0.0838, "ece_uncalibrated": 0.0827, "brier_uncalibrated": 0.0767},
        },
        "decisions": {
            "val": {
                "images": 746,
                "answered": {
                    "referral_rate": 0.0710,
                    "rejection_rate": 0.0094,
                    "accuracy": 0.9825,
                    "sensitivity": 0.9800,
                    "specificity": 0.9893,
                },
                "all": {"accuracy": 0.9584},
            },
            "test": {
                "images": 312,
                "answered": {
                    "referral_rate": 0.0673,
                    "rejection_rate": 0.0064,
                    "accuracy": 0.9446,
                    "sensitivity": 0.9840,
                    "specificity": 0.8725,
                },
                "all": {"accuracy": 0.9231},
                "ci95": {
                    "referral_rate": [0.0411, 0.0975],
                    "rejection_rate": [0.0, 0.0171],
                    "accuracy": [0.9167, 0.9703],
                    "sensitivity": [0.9626, 1.0],
                    "specificity": [0.8, 0.9348],
                },
            },
        },
        "ood": {
            "false_rejection": {"val": 0.0094, "test": 0.0064},
            "source": "data/ood",
            "images": 139,
            "rejected": 0.9784,
            "errors": 0,
            "auroc_vs_val": 0.9983,
            "per_kind": {"chart": {"images": 10, "rejected": 1.0}, "xray_inverted": {"images": 12, "rejected": 0.75}},
        },
    }
    return {**metrics, **overrides}


def _safety_root(tmp_path, metrics: dict, card: dict | None = None):
    for rel, data in (("eval/metrics.json", metrics), ("models/model_card.json", card or {})):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(json.dumps(data))
    return tmp_path


def test_safety_block_takes_every_figure_from_the_metrics_and_the_card(tmp_path):
    card = {
        "litert": {
            "files": {
                "float16": {"decision_agreement": 0.9987, "test": {"images": 312, "decision_agreement": 1.0}},
                "int8": {"decision_agreement": 0.9893, "test": {"images": 312, "decision_agreement": 0.9872}},
            }
        }
    }
    text = readme.render_safety(_safety_root(tmp_path, _safety_metrics(), card))
    assert text.startswith(readme.SAFETY_START) and text.endswith(readme.SAFETY_END)
    assert "SYNTHETIC" not in text
    policy = (
        "calibrated by temperature T = 0.512 (fitted on validation); operating threshold 0.863 "
        "(highest calibrated probability with validation sensitivity >= 0.95); refer band 0.550–0.960 at "
        "coverage 0.98 (class-conditional split-conformal prediction on validation); input gate threshold "
        "71.7 on the `ood_score`, keeping 99% of validation X-rays."
    )
    assert policy in text
    assert "| validation | 746 | 7.1% | 0.9% | 0.983 | 0.980 | 0.989 | 0.958 |" in text
    assert (
        "| test (95% CI) | 312 | 6.7% (4.1–9.8%) | 0.6% (0.0–1.7%) | 0.945 (0.917–0.970) | 0.984 (0.963–1.000) "
        "| 0.873 (0.800–0.935) | 0.923 |" in text
    )
    assert "accuracy, all images at 0.863 |" in text
    assert "validation 0.011 / 0.018 (0.066 / 0.023); test 0.085 / 0.084 (0.083 / 0.077)." in text
    assert "(`data/ood`: 139 images that are not frontal chest X-rays): 97.8% rejected" in text
    assert "AUROC of `ood_score` against validation X-rays 0.998" in text
    assert "falsely rejected on validation 0.9%, test 0.6%" in text
    assert "|  | chart | xray_inverted |\n|---|---|---|\n| images | 10 | 12 |\n| rejected | 100% | 75% |" in text
    assert "the 312 test images" in text and "float16 1.000 (0.999), int8 0.987 (0.989)." in text
    assert "what the gate cannot catch: [docs/safety.md](docs/safety.md)." in text


def test_safety_block_says_what_is_off_and_leaves_out_what_was_not_measured(tmp_path):
    metrics = _safety_metrics(ood={"false_rejection": {"val": 0.0, "test": 0.0032}})
    metrics["policy"] = {
        **metrics["policy"],
        "calibration": {"method": "none", "temperature": 1.0},
        "refer": {"coverage": 0, "band": None},
    }
    text = readme.render_safety(_safety_root(tmp_path, metrics))
    assert "the probability is not calibrated (`evaluate.calibration: none`)" in text
    assert "no refer band (`evaluate.refer_coverage: 0`)" in text
    assert "falsely rejected on validation 0.0%, test 0.3% (no out-of-distribution set evaluated)" in text
    assert "Same answers on every path" not in text  # a card from before the decision check
    del metrics["ood"]
    metrics["policy"] = {**metrics["policy"], "ood": None}
    text = readme.render_safety(_safety_root(tmp_path, metrics))
    assert "; no input gate." in text and "falsely rejected" not in text


def test_safety_block_warns_on_synthetic_numbers(tmp_path):
    text = readme.render_safety(_safety_root(tmp_path, _safety_metrics(synthetic=True)))
    assert readme.SYNTHETIC_WARNING in text
    assert text.index(readme.SYNTHETIC_WARNING) < text.index("Every answer follows a policy")


def test_safety_block_of_metrics_from_before_the_policy_asks_for_a_rerun(tmp_path, monkeypatch):
    metrics = _safety_metrics()
    del metrics["policy"]
    root = _safety_root(tmp_path, metrics)
    (root / "models/model_card.json").unlink()  # not read: an old run may lack what the block needs
    text = readme.render_safety(root)
    assert text == f"{readme.SAFETY_START}\n{readme.SAFETY_MISSING}\n{readme.SAFETY_END}"
    assert "re-run `dvc repro`" in readme.SAFETY_MISSING
    monkeypatch.setattr(
        readme, "BLOCKS", (readme.Block(readme.README, readme.SAFETY_START, readme.SAFETY_END, readme.render_safety),)
    )
    (root / "README.md").write_text(f"intro\n{readme.SAFETY_START}\nold figures\n{readme.SAFETY_END}\n")
    assert readme.stale_blocks(root) == [readme.SAFETY_START]
    assert readme.update_readme(root) and readme.stale_blocks(root) == []
    assert (root / "README.md").read_text() == f"intro\n{text}\n"


def _serve_row(model: str, workers: int, clients: int, req_s: float, p99: float, **extra) -> dict:
    backend = "keras" if model.endswith(".h5") else "litert"
    return {
        "model": model,
        "backend": backend,
        "workers": workers,
        "clients": clients,
        "requests": int(req_s * 20),
        "req_s": req_s,
        "p50_ms": p99 / 3,
        "p95_ms": p99 / 1.5,
        "p99_ms": p99,
        "errors": 0,
        "errors_5xx": 0,
        "errors_by_status": {},
        **extra,
    }


def _serve_root(tmp_path, rows: list[dict], soak: dict | None = None):
    bench: dict = {
        "load": {
            "machine": {"cpus": 2, "python": "3.11.7", "platform": "Linux"},
            "command": "python benchmarks/serve_load.py --seconds 20",
            "seconds": 20,
            "warmup_seconds": 3,
            "results": rows,
        }
    }
    if soak:
        bench["soak"] = soak
    (tmp_path / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (tmp_path / "benchmarks" / "results" / "serve.json").write_text(json.dumps(bench))
    return tmp_path


def test_serving_block_renders_every_row_and_says_which_level_int8_met(tmp_path):
    rows = [
        _serve_row("model_int8.tflite", 1, 1, 41.26, 30.0),
        _serve_row("model_int8.tflite", 2, 8, 153.44, 212.0),
        _serve_row("model.h5", 2, 32, 12.5, 2400.0, errors=7, errors_5xx=3, errors_by_status={"503": 3, "413": 4}),
    ]
    text = readme.render_serving(_serve_root(tmp_path, rows))
    assert text.startswith(readme.SERVING_START) and text.endswith(readme.SERVING_END)
    assert "on a 2-core CPU machine" in text and "Python 3.11.7" in text
    assert "`python benchmarks/serve_load.py --seconds 20`" in text and "20 s per row after 3 s of warm-up" in text
    assert "| backend | workers | clients | req/s | p50 | p95 | p99 | errors | 5xx |" in text
    assert "| int8 (`model_int8.tflite`) | 1 | 1 | 41.3 | 10 ms | 20 ms | 30 ms | 0 | 0 |" in text
    assert "| int8 (`model_int8.tflite`) | 2 | 8 | 153.4 | 71 ms | 141 ms | 212 ms | 0 | 0 |" in text
    assert "| keras (`model.h5`) | 2 | 32 | 12.5 | 800 ms | 1600 ms | 2400 ms | 7 | 3 |" in text
    assert "For int8 on 2 workers with 8 clients (153.4 req/s, p99 212 ms, 0 5xx)" in text
    assert "the acceptance level (100 req/s or more, p99 under 250 ms, no 5xx) is met" in text
    assert "the goal (200 req/s or more, p99 under 100 ms, no 5xx) is not met" in text
    assert "no soak run yet" in text


@pytest.mark.parametrize(
    ("req_s", "p99", "fives", "acceptance", "goal"),
    [
        (240.0, 80.0, 0, "is met", "is met"),
        (240.0, 80.0, 1, "is not met", "is not met"),  # a 5xx under 8 clients fails both
        (99.9, 80.0, 0, "is not met", "is not met"),
        (150.0, 250.0, 0, "is not met", "is not met"),  # p99 must be strictly under
    ],
)
def test_serving_levels_follow_the_measured_figures(tmp_path, req_s, p99, fives, acceptance, goal):
    rows = [_serve_row("model_int8.tflite", 2, 8, req_s, p99, errors=fives, errors_5xx=fives)]
    text = readme.render_serving(_serve_root(tmp_path, rows))
    assert f"the acceptance level (100 req/s or more, p99 under 250 ms, no 5xx) {acceptance}" in text
    assert f"the goal (200 req/s or more, p99 under 100 ms, no 5xx) {goal}" in text


def test_serving_block_says_when_int8_on_two_workers_was_not_measured(tmp_path):
    rows = [_serve_row("model_int8.tflite", 1, 8, 300.0, 20.0), _serve_row("model.h5", 2, 8, 300.0, 20.0)]
    text = readme.render_serving(_serve_root(tmp_path, rows))
    assert "int8 on 2 workers with 8 clients was not measured, so no level is checked." in text
    assert "is met" not in text


def test_serving_block_gives_the_soak(tmp_path):
    soak = {
        "command": "python benchmarks/serve_load.py --soak 300",
        "model": "model_int8.tflite",
        "workers": 2,
        "clients": 8,
        "seconds": 300,
        "requests": 41234,
        "errors": 2,
        "errors_5xx": 0,
        "sample_s": 10,
        "rss_mib": [812.4, 830.0, 815.9],
        "growth_mib": 3.5,
    }
    text = readme.render_serving(_serve_root(tmp_path, [_serve_row("model_int8.tflite", 2, 8, 150.0, 90.0)], soak))
    assert (
        "Soak: model_int8.tflite on 2 workers with 8 clients for 300 s (`python benchmarks/serve_load.py --soak 300`): "
        "41234 requests, 0 5xx, 2 errors in all;" in text
    )
    assert "every 10 s after warm-up) 812 MiB first, 816 MiB last, 830 MiB at most: growth +4 MiB." in text
    assert text.index("| backend |") < text.index("Soak:")


def test_serving_block_says_when_nothing_was_measured(tmp_path):
    text = readme.render_serving(tmp_path)
    assert text == (
        f"{readme.SERVING_START}\n(not measured yet: `python benchmarks/serve_load.py`, then "
        f"`python benchmarks/serve_load.py --soak 300`)\n{readme.SERVING_END}"
    )
    assert any(b.render is readme.render_serving and b.file == readme.README for b in readme.BLOCKS)
