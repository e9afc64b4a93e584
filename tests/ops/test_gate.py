"""pneumo.ops.gate: validation-only, non-inferiority on a paired patient bootstrap, and the champion folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as skm

from pneumo.core.config import GateParams, ParamsError, load_params
from pneumo.core.metrics import binary_metrics
from pneumo.core.paths import SHIFT_COLUMN
from pneumo.ops import gate
from support import REPO


def metrics(roc=0.95, pr=0.96, shift_roc=0.93, shift_bal=0.9, brier=0.1, test_roc=0.9) -> dict:
    return {
        "operating_threshold": 0.5,
        "val": {
            "roc_auc": roc,
            "pr_auc": pr,
            "brier": brier,
            "at_operating": {"recall": 0.95, "specificity": 0.7, "accuracy": 0.8},
        },
        "val_shift": {"roc_auc": shift_roc, "balanced_accuracy": shift_bal},
        "test": {"roc_auc": test_roc, "pr_auc": 0.9, "at_operating": {"recall": 0.97, "specificity": 0.6}},
    }


def scored(y, p, patients=None, shifted=None, threshold=0.5, paths=None) -> gate.Scored:
    n = len(y)
    return gate.Scored(
        paths or tuple(f"val/{i:04d}.jpeg" for i in range(n)),
        np.asarray(y),
        np.asarray(patients if patients is not None else [str(i) for i in range(n)]),
        np.asarray(p, float),
        shifted or {},
        threshold,
    )


def noisy_pair(seed: int, n_patients: int, per_patient: int, noise: float):
    """A champion's validation scores and a challenger's: the same images, scores moved by `noise`."""
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(n_patients), per_patient).astype(str)
    y = np.repeat(rng.random(n_patients) < 0.6, per_patient).astype(int)
    champion = np.clip(rng.normal(0.35 + 0.3 * y, 0.18), 0, 1)
    challenger = np.clip(champion + rng.normal(0, noise, len(y)), 0, 1)
    return scored(y, challenger, patients), scored(y, champion, patients)


def params_file(tmp_path: Path, section: str, changes: dict) -> Path:
    """The project's params.yaml with some keys of one section changed."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw[section].update(changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def auc(s: gate.Scored) -> float:
    return float(skm.roc_auc_score(s.y, s.clean))


# ---------------------------------------------------------------- defaults and settings


def test_defaults_gate_on_validation_and_params_yaml_agrees():
    assert all(m.startswith(("val.", "val_shift.")) for m in gate.DEFAULT_METRICS)
    assert load_params(REPO / "params.yaml").gate == GateParams()  # code defaults match params.yaml


@pytest.mark.parametrize(
    "section, value, key",
    [
        ({"metrics": ["val.roc_acu"]}, "val.roc_acu", "gate.metrics[0]"),
        ({"metrics": ["val.roc_auc", "test.roc_auc"]}, "test is reported, never gated", "gate.metrics[1]"),
        ({"metrics": []}, "[]", "gate.metrics"),
        ({"tolerance": -0.1}, "-0.1", "gate.tolerance"),
        ({"bootstrap": 5}, "5", "gate.bootstrap"),
    ],
)
def test_bad_gate_params_fail_at_load_naming_the_key(tmp_path, section, value, key):
    path = params_file(tmp_path, "gate", section)
    with pytest.raises(ParamsError) as exc:
        load_params(path)
    message = str(exc.value)
    assert str(path) in message and key in message and value in message and "\n" not in message


@pytest.mark.parametrize(
    "section, key",
    [
        ({"timezone": "Mars/Olympus_Mons"}, "schedule.timezone"),
        ({"cron": "61 3 * * 1"}, "schedule.cron"),
        ({"cron": "0 3 * *"}, "schedule.cron"),
        ({"cron": "0 3 * * funday"}, "schedule.cron"),
        ({"source": "ftp"}, "schedule.source"),
        ({"source": "local"}, "schedule.path"),
        ({"source": "url"}, "schedule.url"),
        ({"source": "url", "url": "https://x.org/a.zip", "sha256": "abc"}, "schedule.sha256"),
    ],
)
def test_bad_schedule_params_fail_at_load_naming_the_key(tmp_path, section, key):
    path = params_file(tmp_path, "schedule", section)
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        load_params(path)


def test_good_schedule_params_load(tmp_path):
    path = params_file(
        tmp_path,
        "schedule",
        {
            "cron": "30 2 * * mon-fri",
            "timezone": "Europe/Berlin",
            "source": "url",
            "url": "https://x.org/a.zip",
            "sha256": "ab" * 32,
        },
    )
    assert load_params(path).schedule.timezone == "Europe/Berlin"


# ---------------------------------------------------------------- the weighted figures the bootstrap resamples


@pytest.mark.parametrize("seed", range(3))
def test_weighted_figures_match_sklearn_with_patient_weights(seed):
    rng = np.random.default_rng(seed)
    n = 300
    y = (rng.random(n) < 0.7).astype(int)
    p = np.round(np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1), 2)  # rounded: ties
    weights = gate.patient_weights(rng.integers(0, 120, n).astype(str), 4, seed)
    for w in weights:
        assert gate.weighted_auc(y, p, w[None])[0] == pytest.approx(skm.roc_auc_score(y, p, sample_weight=w))
        assert gate.weighted_average_precision(y, p, w[None])[0] == pytest.approx(
            skm.average_precision_score(y, p, sample_weight=w)
        )
        rates = gate.weighted_rates(y, p, 0.6, w[None])
        idx = np.repeat(np.arange(n), w.astype(int))  # weights are multiplicities: expand them
        plain = binary_metrics(y[idx], p[idx], 0.6)
        for key in ("accuracy", "precision", "recall", "specificity", "f1"):
            assert rates[key][0] == pytest.approx(plain[key]), key


def test_patient_bootstrap_moves_a_patients_images_together():
    patients = np.array(["a", "a", "a", "b", "c", "c"])
    w = gate.patient_weights(patients, 200, 0)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 1] == w[:, 2]).all() and (w[:, 4] == w[:, 5]).all()
    assert set(np.unique(w[:, 3])) <= {0, 1, 2, 3} and len(np.unique(w[:, 0])) > 1


# ---------------------------------------------------------------- the decision


def test_no_champion_promotes_the_first_model_and_shows_test_as_information():
    decision = gate.compare(metrics(), None)
    assert decision.promote and "no champion" in decision.reason
    assert [r.metric for r in decision.rows if r.gated] == list(gate.DEFAULT_METRICS)
    assert [r.metric for r in decision.rows if not r.gated] == list(gate.INFO_METRICS)
    assert "| test.roc_auc | - | 0.9000 | - | not gated (test: information only) |" in decision.markdown()


def test_a_null_validation_auc_refuses_even_the_first_model():
    # Item 19: a model that never saw NORMAL has no validation AUC; its test figures looked fine.
    challenger = metrics()
    challenger["val"]["roc_auc"] = None
    refused = gate.compare(challenger, None)
    assert not refused.promote and "val.roc_auc" in refused.reason
    challenger["val"]["roc_auc"] = float("nan")
    assert not gate.compare(challenger, None).promote
    assert not gate.compare(challenger, metrics()).promote


def test_a_much_worse_test_figure_is_shown_but_never_refuses():
    decision = gate.compare(metrics(test_roc=0.5), metrics(test_roc=0.99))
    assert decision.promote
    row = next(r for r in decision.rows if r.metric == "test.roc_auc")
    assert not row.gated and row.change == pytest.approx(-0.49)


def test_without_predictions_the_point_values_are_compared_and_the_reason_says_so():
    assert gate.compare(metrics(roc=0.935), metrics(roc=0.95), tolerance=0.02).promote
    refused = gate.compare(metrics(shift_bal=0.85), metrics(shift_bal=0.9), tolerance=0.02)
    assert not refused.promote and [r.metric for r in refused.failures] == ["val_shift.balanced_accuracy"]
    assert "point comparison: the champion keeps no validation predictions" in refused.reason
    assert "val_shift.balanced_accuracy 0.9000 -> 0.8500" in refused.reason
    assert "worse by 0.0500 > 0.02" in refused.markdown()


def test_lower_is_better_for_brier():
    assert not gate.compare(metrics(brier=0.2), metrics(brier=0.1), ["val.brier"], 0.01).promote
    assert gate.compare(metrics(brier=0.05), metrics(brier=0.1), ["val.brier"], 0.01).promote


def test_a_metric_whose_key_holds_a_dot_is_read_and_gated():
    # `at_0.5` is one key of metrics.json, not "at_0" then "5".
    new, old = metrics(), metrics()
    new["val"]["at_0.5"] = {"recall": 0.80}
    old["val"]["at_0.5"] = {"recall": 0.90}
    decision = gate.compare(new, old, ["val.at_0.5.recall"], 0.02)
    assert not decision.promote and "val.at_0.5.recall 0.9000 -> 0.8000" in decision.reason
    assert decision.rows[0].challenger == 0.80 and decision.rows[0].change == pytest.approx(-0.10)


def test_the_verdict_table_names_left_and_numbers_right():
    lines = gate.compare(metrics(brier=0.2), metrics(brier=0.1), ["val.brier"], 0.01).markdown().splitlines()
    assert lines[2:5] == [
        "| metric | champion | challenger | change | verdict |",
        "|---|---:|---:|---:|---|",
        "| val.brier (lower is better) | 0.1000 | 0.2000 | +0.1000 | worse by 0.1000 > 0.01 |",
    ]
    assert lines[-1] == (
        "| test.at_operating.specificity | 0.6000 | 0.6000 | +0.0000 | not gated (test: information only) |"
    )
    first = gate.compare(metrics(), None, ["val.brier"]).markdown().splitlines()
    assert first[4] == "| val.brier (lower is better) | - | 0.1000 | - | ok (no champion value) |"  # missing: "-"


def test_identical_predictions_pass_with_a_zero_bound():
    new, old = noisy_pair(0, 100, 2, 0.0)
    decision = gate.compare(metrics(), metrics(), challenger_predictions=new, champion_predictions=old)
    assert decision.promote and "paired patient bootstrap" in decision.reason
    row = decision.rows[0]
    assert row.metric == "val.roc_auc" and row.bound == 0.0


def test_noise_sized_point_drop_on_a_few_patients_is_not_admitted():
    # Point AUC within the tolerance, but 12 patients cannot show that the challenger is not worse.
    new, old = noisy_pair(11, 12, 2, 0.08)
    assert 0 < auc(old) - auc(new) < 0.02
    assert gate.compare(metrics(roc=auc(new)), metrics(roc=auc(old)), ["val.roc_auc"], 0.02).promote  # point
    decision = gate.compare(
        metrics(roc=auc(new)),
        metrics(roc=auc(old)),
        ["val.roc_auc"],
        0.02,
        challenger_predictions=new,
        champion_predictions=old,
    )
    assert not decision.promote
    assert decision.rows[0].bound < -0.02 and "95% lower bound of the improvement" in decision.markdown()


def test_noise_sized_point_drop_on_many_patients_is_not_refused():
    new, old = noisy_pair(3, 400, 2, 0.03)
    drop = auc(old) - auc(new)
    assert 0 < drop < 0.02
    decision = gate.compare(
        metrics(roc=auc(new)),
        metrics(roc=auc(old)),
        ["val.roc_auc"],
        0.02,
        challenger_predictions=new,
        champion_predictions=old,
    )
    assert decision.promote and -0.02 < decision.rows[0].bound < 0


def test_shifted_metrics_are_resampled_too_and_a_broken_shift_is_refused():
    new, old = noisy_pair(5, 200, 2, 0.0)
    shifted_old = {"blur": old.clean, "noise": old.clean}
    shifted_new = {"blur": old.clean, "noise": np.where(old.y == 1, 0.2, 0.8)}  # inverted under noise
    new = scored(new.y, new.clean, new.patients, shifted_new)
    old = scored(old.y, old.clean, old.patients, shifted_old)
    decision = gate.compare(metrics(), metrics(), challenger_predictions=new, champion_predictions=old)
    assert not decision.promote
    assert {r.metric for r in decision.failures} == {"val_shift.roc_auc", "val_shift.balanced_accuracy"}


def test_a_champion_without_shifted_predictions_is_compared_on_the_point_values_for_val_shift():
    new, old = noisy_pair(2, 100, 2, 0.0)
    new = scored(new.y, new.clean, new.patients, {"blur": new.clean})
    decision = gate.compare(metrics(), metrics(shift_bal=0.95), challenger_predictions=new, champion_predictions=old)
    rows = {r.metric: r for r in decision.rows}
    assert rows["val.roc_auc"].bound == 0.0 and rows["val_shift.roc_auc"].bound is None
    assert not decision.promote and [r.metric for r in decision.failures] == ["val_shift.balanced_accuracy"]
    assert "point comparison for val_shift.roc_auc, val_shift.balanced_accuracy" in decision.reason


def test_other_validation_images_fall_back_to_the_point_comparison():
    new, old = noisy_pair(0, 50, 2, 0.0)
    other = scored(new.y, new.clean, new.patients, paths=tuple(f"new/{i}.jpeg" for i in range(len(new.y))))
    decision = gate.compare(metrics(), metrics(), challenger_predictions=other, champion_predictions=old)
    assert decision.promote and "different validation images (new data)" in decision.reason
    assert all(r.bound is None for r in decision.rows)


def test_decision_round_trips_through_a_small_dict():
    d = gate.compare(metrics(roc=0.5), metrics()).as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["promote"] is False and d["rows"][0]["worse_by"] == pytest.approx(0.45)


# ---------------------------------------------------------------- files: predictions and the champion folder


def _predictions_csv(path: Path, y, p, shifted: dict[str, np.ndarray]) -> Path:
    n = len(y)
    frame = pd.DataFrame(
        {
            "path": [f"val/PNEUMONIA/{i}.jpeg" for i in range(n)],
            "split": "val",
            "patient": [f"person{i // 2}" for i in range(n)],
            "label": np.where(np.asarray(y) == 1, "PNEUMONIA", "NORMAL"),
            "probability": p,
        }
    )
    for name, values in shifted.items():
        frame[SHIFT_COLUMN + name] = values
    test = frame.assign(split="test", path=frame["path"].str.replace("val/", "test/"))
    for name in shifted:
        test[SHIFT_COLUMN + name] = np.nan  # evaluate scores shifts on validation only
    pd.concat([frame, test]).to_csv(path, index=False)
    return path


def test_read_predictions_takes_the_validation_rows_and_their_shifts(tmp_path):
    y, p = [1, 0, 1, 0], [0.9, 0.2, 0.6, 0.4]
    s = gate.read_predictions(
        _predictions_csv(tmp_path / "predictions.csv", y, p, {"blur_1.5": [0.8, 0.3, 0.7, 0.5]}), 0.55
    )
    assert s.paths == tuple(f"val/PNEUMONIA/{i}.jpeg" for i in range(4))
    assert s.y.tolist() == y and s.clean.tolist() == p and s.threshold == 0.55
    assert s.patients.tolist() == ["person0", "person0", "person1", "person1"]
    assert list(s.shifted) == ["blur_1.5"]
    assert gate.read_predictions(tmp_path / "absent.csv", 0.5) is None


def _challenger(ws: Path, model: bytes = b"new model") -> Path:
    for src in gate.CHAMPION_SOURCES.values():
        (ws / src).parent.mkdir(parents=True, exist_ok=True)
        (ws / src).write_bytes(model + b" " + src.encode())
    (ws / "eval" / "metrics.json").write_text(json.dumps(metrics()))
    return ws


def test_promote_copies_the_whole_deployable_set_and_the_predictions_in_one_folder(tmp_path):
    ws = _challenger(tmp_path)
    (ws / "champion").mkdir()
    (ws / "champion" / "model.h5").write_bytes(b"old model")
    (ws / "champion" / "stale.txt").write_text("from an older champion")
    target = gate.promote(ws, provenance={"flow_run_id": "abc"})
    assert target == ws / "champion"
    for name in (
        "model.h5",
        "model_float16.tflite",
        "model_int8.tflite",
        "model_card.json",
        "metrics.json",
        "predictions.csv",
    ):
        assert name in gate.CHAMPION_SOURCES
        assert (target / name).read_bytes() == (ws / gate.CHAMPION_SOURCES[name]).read_bytes(), name
    assert not (target / "stale.txt").exists()
    assert gate.read_champion(target) == metrics()
    assert json.loads((target / gate.PROVENANCE_FILE).read_text())["flow_run_id"] == "abc"
    assert sorted(p.name for p in ws.iterdir()) == ["champion", "eval", "models"]  # no temporary folders left


def test_promote_without_a_deployable_file_leaves_the_champion_untouched(tmp_path):
    ws = _challenger(tmp_path)
    (ws / "models" / "model_int8.tflite").unlink()
    (ws / "champion").mkdir()
    (ws / "champion" / "model.h5").write_bytes(b"old model")
    with pytest.raises(FileNotFoundError, match="model_int8.tflite"):
        gate.promote(ws)
    assert [p.name for p in (ws / "champion").iterdir()] == ["model.h5"]
    assert (ws / "champion" / "model.h5").read_bytes() == b"old model"


def test_judge_reads_both_folders_and_bootstraps_on_their_predictions(tmp_path):
    rng = np.random.default_rng(1)
    y = (rng.random(200) < 0.6).astype(int)
    good = np.clip(rng.normal(0.3 + 0.4 * y, 0.1), 0, 1)
    bad = rng.random(200)  # a challenger that guesses
    shifts = {"blur_1.5": good}
    ws = tmp_path / "ws"
    (ws / "eval").mkdir(parents=True)
    _predictions_csv(ws / "eval" / "predictions.csv", y, bad, {"blur_1.5": bad})
    (ws / "eval" / "metrics.json").write_text(json.dumps(metrics(roc=0.5, pr=0.6, shift_roc=0.5, shift_bal=0.5)))
    (ws / "champion").mkdir()
    _predictions_csv(ws / "champion" / "predictions.csv", y, good, shifts)
    (ws / "champion" / "metrics.json").write_text(json.dumps(metrics()))
    decision = gate.judge(ws, ws / "champion", GateParams())
    assert not decision.promote and "paired patient bootstrap" in decision.reason
    assert {r.metric for r in decision.failures} == set(gate.DEFAULT_METRICS)
    assert all(r.bound is not None and r.bound < -0.02 for r in decision.failures)
