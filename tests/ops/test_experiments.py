"""`pneumo experiments`: every scored `dvc exp run` of a real git + DVC repo lands in the record,
the table says what each run changed, and the choice is made on validation only."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from pneumo.core import proc
from pneumo.ops import experiments as exp
from pneumo.ops.experiments import rules, tables
from pneumo.ops.experiments.record import RECORDS, fill_params, merge, run_id

REPO = Path(__file__).resolve().parents[2]


def run(cwd: Path, *cmd: str):
    return proc.run(cmd, cwd)


# A stand-in stage that writes a metrics file shaped like pneumo's evaluate stage: validation
# AUC (clean and shifted) rises with `train.lr` up to 2, test AUC falls with it (so choosing on
# test would differ); `train.smooth` costs 0.001 of AUC and gains balanced accuracy under shift.
SCORE = """
import json, yaml
p = yaml.safe_load(open("params.yaml"))
lr, smooth = p["train"]["lr"], p["train"]["smooth"]
val = 0.95 + 0.01 * min(lr, 2) - 0.001 * smooth
test = 0.90 - 0.01 * lr
at = lambda a: {"accuracy": a, "recall": a, "specificity": a - 0.1}
json.dump({"synthetic": False, "operating_threshold": 0.5 + lr / 10,
           "val": {"roc_auc": val, "brier": 0.1 - 0.01 * smooth, "at_operating": at(val)},
           "val_shift": {"roc_auc": val - 0.05, "balanced_accuracy": 0.8 + 0.01 * smooth},
           "test": {"roc_auc": test, "at_operating": at(test),
                    "ci95": {"at_operating": {"roc_auc": [test - 0.02, test + 0.02]}}}},
          open("eval/metrics.json", "w"))
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("exps") / "repo"
    ws.mkdir()
    run(ws, "git", "init", "-q")
    run(ws, "git", "config", "user.email", "t@example.com")
    run(ws, "git", "config", "user.name", "t")
    run(ws, "dvc", "init", "-q")
    (ws / "score.py").write_text(SCORE)
    (ws / "eval").mkdir()
    (ws / "params.yaml").write_text(
        yaml.safe_dump({"train": {"lr": 1, "smooth": 0}, "export": {"int8_max_mb": 3.5}, "gate": {"tolerance": 0.01}})
    )
    (ws / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "evaluate": {
                        "cmd": f"{sys.executable} score.py",
                        "deps": ["score.py"],
                        "params": ["train"],
                        "metrics": [{"eval/metrics.json": {"cache": False}}],
                    }
                }
            }
        )
    )
    run(ws, "dvc", "repro", "-q")
    run(ws, "git", "add", "-A")
    run(ws, "git", "commit", "-qm", "baseline")
    run(ws, sys.executable, "-m", "dvc", "exp", "run", "-q", "-n", "lr2", "-S", "train.lr=2")
    run(
        ws,
        sys.executable,
        "-m",
        "dvc",
        "exp",
        "run",
        "-q",
        "-n",
        "lr2-smooth",
        "-S",
        "train.lr=2",
        "-S",
        "train.smooth=1",
        "-S",
        "gate.tolerance=0.5",
    )
    run(ws, sys.executable, "-m", "dvc", "exp", "run", "-q", "-n", "lr3", "-S", "train.lr=3")
    # Queued but never run: it must not be reported with its baseline's numbers.
    run(ws, sys.executable, "-m", "dvc", "exp", "run", "-q", "--queue", "-n", "pending", "-S", "train.lr=9")
    run(ws, "git", "checkout", "-q", "--", "params.yaml")  # the workspace back to the default
    return ws


@pytest.mark.slow
def test_record_holds_every_scored_run_once_with_its_whole_metrics_file(repo):
    records = exp.record(repo)
    assert sorted(r["name"] for r in records) == sorted(
        ["commit " + run(repo, "git", "rev-parse", "--short=7", "HEAD").stdout.strip(), "lr2", "lr2-smooth", "lr3"]
    )
    by_name = {r["name"]: r for r in records}
    assert by_name["lr2"]["params"]["train.lr"] == 2
    # The intervals (lists, which `dvc exp show` drops) come from the run's own metrics file.
    assert by_name["lr3"]["metrics"]["test"]["ci95"]["at_operating"]["roc_auc"] == pytest.approx([0.85, 0.89])
    saved = json.loads((repo / RECORDS).read_text())["records"]
    assert [r["run"] for r in saved] == [r["run"] for r in records]
    # Each run's params are its own params.yaml, whole: nothing is filled in for a new record.
    assert all(set(r["params"]) == set(by_name["lr2"]["params"]) and "params_filled" not in r for r in records)
    # Recording again adds nothing; a record whose run is gone from DVC is kept, with what was
    # filled into it.
    gone_metrics = {**records[0]["metrics"], "test": {**records[0]["metrics"]["test"], "roc_auc": 0.5}}
    gone = {
        **records[0],
        "name": "old",
        "run": "x" * 64,
        "rev": "f" * 40,
        "metrics": gone_metrics,
        "params_filled": ["train.smooth"],
    }
    (repo / RECORDS).write_text(json.dumps({"records": [gone]}))
    again = exp.record(repo)
    assert len(again) == len(records) + 1 and again[0]["name"] == "old"
    assert again[0]["params_filled"] == ["train.smooth"]
    assert len(exp.record(repo)) == len(again)
    assert "params_filled" in json.loads((repo / RECORDS).read_text())["note"]


@pytest.mark.slow
def test_choice_is_on_validation_and_the_table_says_what_changed(repo):
    records = exp.record(repo)
    chosen = exp.select(records, exp.default_params(repo))
    # lr2 and lr3 tie on shifted validation AUC and lr2-smooth is 0.001 below (within the tie):
    # the highest balanced accuracy under shift wins.
    assert chosen["name"] == "lr2-smooth"
    text = exp.table(records, exp.default_params(repo))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()[2:]}
    assert "(chosen)" in rows["lr2-smooth **(chosen)**"]
    assert "`lr=2`, `smooth=1`" in rows["lr2-smooth **(chosen)**"]
    assert "gate" not in text  # params that change neither training nor scoring are not differences
    assert "| (default) |" in next(v for k, v in rows.items() if k.startswith("commit "))
    assert "0.870 (0.850–0.890)" in rows["lr3"]  # test AUC with its interval
    page = exp.render(repo, records)
    assert page.startswith("# Experiments") and text in page
    # Test would have preferred the baseline (lowest lr): said beside the choice, never used for it.
    assert rules.best_on_test(records)["name"].startswith("commit ")
    assert "Chosen on validation: **lr2-smooth**" in page and "On test, commit " in page
    assert "| 0.969 | 0.919 | 0.810 |" in rows["lr2-smooth **(chosen)**"]


def test_select_and_merge_rules():
    select = rules.select

    def rec(name, auc, balanced, run=None):
        return {
            "name": name,
            "run": run or name,
            "metrics": {"val": {"roc_auc": 0.99}, "val_shift": {"roc_auc": auc, "balanced_accuracy": balanced}},
        }

    assert select([], {}) is None
    assert select([rec("a", 0.99, 0.95), rec("b", 0.995, 0.90)], {})["name"] == "b"
    assert select([rec("a", 0.9935, 0.95), rec("b", 0.995, 0.90)], {})["name"] == "a"  # within 0.002
    # A run scored before the stage measured the shift competes with its backfilled figures,
    # and a run with none cannot be chosen, however high its clean validation AUC.
    old = {
        "name": "old",
        "run": "o",
        "metrics": {"val": {"roc_auc": 0.999}},
        "val_shift": {"roc_auc": 0.996, "balanced_accuracy": 0.9},
    }
    assert select([rec("a", 0.99, 0.95), old], {})["name"] == "old"
    # Replicates (same params, any seed) 0.01 apart on shifted AUC widen the tie to 0.01: a run
    # 0.008 below the best with a higher balanced accuracy then wins; the first fixed width says otherwise.
    params = {"train.x": 1}
    r1 = {**rec("r1", 0.995, 0.90), "params": {**params, "train.seed": 1}}
    r2 = {**rec("r2", 0.985, 0.90), "params": {**params, "train.seed": 2}}
    other = {**rec("other", 0.987, 0.93), "params": {"train.x": 2, "train.seed": 1}}
    assert rules.replicate_spread([r1, r2, other]) == pytest.approx(0.01)
    assert rules.tie_width([r1, other]) == rules.FIRST_TIE  # no replicate yet
    assert select([r1, r2, other], {})["name"] == "other"
    assert rules.select_run([r1, r2, other], tie=rules.FIRST_TIE)["name"] == "r1"
    tested = [{**r, "metrics": {**r["metrics"], "test": {"roc_auc": 0.9}}} for r in (r1, r2, other)]
    summary = tables.summary(tested, {})
    assert "**other**" in summary and "within 0.0100 of the best" in summary
    assert f"first committed ({rules.FIRST_TIE}), the rule would choose r1" in summary
    bare = {"name": "bare", "run": "z", "metrics": {"val": {"roc_auc": 1.0}}}
    assert select([bare, rec("a", 0.99, 0.95)], {})["name"] == "a"
    assert select([bare], {}) is None
    merged = merge([rec("old", 0.9, 0.1, run="r1")], [rec("newer", 0.9, 0.1, run="r1"), rec("x", 0.8, 0.1)])
    assert [r["name"] for r in merged] == ["old", "x"]
    # Scoring a run's model under shift again (a re-evaluated default) does not make it another run.
    m = {"val": {"roc_auc": 0.99}, "test": {"roc_auc": 0.9}}
    assert run_id({**m, "val_shift": {"roc_auc": 0.98}}) == run_id(m)
    assert run_id({**m, "test": {"roc_auc": 0.91}}) != run_id(m)


def test_a_run_is_described_by_its_own_params_never_by_todays_defaults():
    today = {"train.x": 1, "train.augment.noise": 8.0, "export.y": 3, "data.raw_dir": "b"}
    assert (
        rules.changes({"train.x": 1, "export.y": 2, "data.raw_dir": "a", "train.augment.noise": 8.0}, today) == {}
    )  # params that train nothing are no difference
    # A run whose params.yaml predates a key does not say its value: unknown, until filled.
    old = {"name": "old", "params": {"train.x": 1}}
    assert rules.changes(old["params"], today) == {"train.augment.noise": None}
    [filled] = fill_params([old], {"train.augment.noise": 0.0, "train.x": 5})
    assert filled["params"] == {"train.x": 1, "train.augment.noise": 0.0}  # what the run said stays
    assert filled["params_filled"] == ["train.augment.noise"]
    assert fill_params([filled], {"train.augment.noise": 4.0}) == [filled]  # filled once
    assert rules.changes(filled["params"], today) == {"train.augment.noise": 0.0}
    # Today's default moving does not move the run's recipe, nor what it is said to change.
    assert rules.recipe(filled["params"]) == (("train.augment.noise", 0.0), ("train.x", 1))
    assert rules.changes(filled["params"], {**today, "train.augment.noise": 0.0}) == {}


def test_every_recorded_run_states_every_training_key_of_params_yaml():
    """The committed record is complete: a key added to params.yaml must be filled, once, into the
    runs that predate it (`fill_params`, with the value their code behaved as), or the tables show it
    unknown."""
    training = {k for k in exp.default_params(REPO) if rules.trains(k)}
    for rec in exp.load(REPO):
        assert training <= set(rec["params"]), f"{rec['name']}: lacks {sorted(training - set(rec['params']))}"
        assert set(rec.get("params_filled", [])) <= training


@pytest.mark.slow
def test_cli_renders_the_table_without_dvc(repo, monkeypatch):
    exp.record(repo)
    monkeypatch.chdir(repo)
    monkeypatch.setattr("pneumo.cli.app.project_root", lambda: repo)
    from typer.testing import CliRunner

    from pneumo.cli.app import app

    (repo / tables.TABLE).unlink(missing_ok=True)
    result = CliRunner().invoke(app, ["experiments", "--no-record", "--no-score-shift"])
    assert result.exit_code == 0, result.output
    assert "chosen on validation: lr2-smooth" in result.output
    assert "| lr3 |" in (repo / tables.TABLE).read_text()


def test_effects_pair_runs_that_differ_in_one_lever_or_none():
    default = {"train.seed": 42, "train.augment.zoom": 0.1, "train.augment.contrast": 0.2, "train.label_smoothing": 0.0}

    def rec(name, changed, val, test):
        return {
            "name": name,
            "run": name,
            "params": {**default, **changed},
            "metrics": {"val": {"roc_auc": val}, "test": {"roc_auc": test}},
        }

    base = rec("base", {}, 0.99, 0.95)
    aug = rec("aug", {"train.augment.zoom": 0.2, "train.augment.contrast": 0.4}, 0.98, 0.97)
    both = rec("both", {"train.augment.zoom": 0.2, "train.label_smoothing": 0.1}, 0.97, 0.96)
    again = rec("again", {"gate.tolerance": 0.5}, 0.985, 0.952)
    reseeded = rec("reseeded", {"train.seed": 7, "train.augment.zoom": 0.2, "train.augment.contrast": 0.4}, 0.97, 0.96)
    rows = rules.effects([base, aug, both, again, reseeded])
    by_runs = {r["runs"]: r for r in rows}
    # Two augmentation keys are one lever; augmentation plus smoothing are two: no pair.
    assert by_runs[("base", "aug")]["lever"] == "augmentation strength"
    assert by_runs[("base", "aug")]["delta"]["test AUC"] == pytest.approx(0.02)
    assert ("base", "both") not in by_runs
    assert ("aug", "both") not in by_runs  # contrast and smoothing differ
    # A run that differs only in params that train nothing is a replicate.
    assert by_runs[("base", "again")]["lever"] == "(none: replicate)"
    assert by_runs[("base", "again")]["change"] == ""
    assert by_runs[("base", "again")]["delta"]["val AUC"] == pytest.approx(-0.005)
    assert by_runs[("base", "again")]["delta"]["val shift AUC"] is None
    # Another seed is another draw: a replicate, or still a one-lever pair when one lever differs too.
    assert by_runs[("aug", "reseeded")]["lever"] == "(none: replicate)"
    assert by_runs[("aug", "reseeded")]["change"] == "seed 42 → 7"
    assert by_runs[("base", "reseeded")]["lever"] == "augmentation strength"
    assert "seed 42 → 7" in by_runs[("base", "reseeded")]["change"]
    assert rows[-1]["lever"] == "(none: replicate)"  # replicates listed last
    text = tables.effects_table([base, aug, again])
    assert "| augmentation strength | augment.contrast 0.2 → 0.4; augment.zoom 0.1 → 0.2 | base → aug |" in text
    assert "| (none: replicate) | (same params) | base → again |" in text
    assert "+0.020" in text and "n/a" in text


def test_recipes_group_runs_by_params_seeds_aside():
    default = {"train.seed": 42, "train.x": 0}

    def rec(name, params, test):
        return {
            "name": name,
            "run": name,
            "params": params,
            "metrics": {"test": {"roc_auc": test}, "val_shift": {"roc_auc": 0.99}},
        }

    # b writes 1.0 where a writes 1: the same value, the same recipe.
    runs = [
        rec("a", {"train.x": 1, "train.seed": 42}, 0.96),
        rec("b", {"train.x": 1.0, "train.seed": 7}, 0.98),
        rec("c", {"train.x": 0, "train.seed": 42}, 0.95),
    ]
    text = tables.recipes_table(runs, default)
    rows = text.splitlines()[2:]
    assert len(rows) == 2
    assert rows[0].startswith("| `x=1` | 2 | 0.990 (0.990–0.990) | n/a | 0.970 (0.960–0.980) |")
    assert rows[1].startswith("| (default) | 1 | 0.990 | n/a | 0.950 |")


SHIFTS = ("gamma_0.67", "gamma_1.5", "blur_1.5", "lowres_2", "equalize", "noise_10")


def _shifted(name, params, held_out_auc, noise_auc, balanced, test_auc):
    """A run scored under every shift: `held_out_auc` on the five copies no augmentation produces,
    `noise_auc` on the noise copy; the clean threshold's balanced accuracy on each."""
    per = {
        s: {"roc_auc": noise_auc if s == "noise_10" else held_out_auc, "balanced_accuracy": balanced} for s in SHIFTS
    }
    mean = sum(v["roc_auc"] for v in per.values()) / len(per)
    return {
        "name": name,
        "run": name,
        "params": params,
        "metrics": {
            "val_shift": {"roc_auc": mean, "balanced_accuracy": balanced, "perturbations": per},
            "test": {"roc_auc": test_auc, "at_operating": {"accuracy": test_auc - 0.05}},
        },
    }


def test_recipe_comparison_leaves_out_the_shifts_a_recipe_trains_on():
    default = {"train.seed": 42, "train.augment.noise": 8.0, "train.finetune.layers": 100}
    noisy = {**default, "train.augment.noise": 8.0}
    plain = {**default, "train.augment.noise": 0.0}
    deep = {**default, "train.finetune.layers": 160}
    # plain-7 and plain-1 predate the noise key: filled with the value their code behaved as (off).
    predating = {k: v for k, v in plain.items() if k != "train.augment.noise"}
    # The noise recipe is scored high on the noise copy it trains on: on all six copies it leads
    # (and the single-run rule picks its best run), on the five held-out copies the plain recipe leads.
    runs = [
        _shifted("noise-42", noisy, 0.988, 0.999, 0.95, 0.96),
        _shifted("noise-7", {**noisy, "train.seed": 7}, 0.987, 0.999, 0.95, 0.95),
        _shifted("noise-1", {**noisy, "train.seed": 1}, 0.986, 0.999, 0.95, 0.95),
        _shifted("plain-42", plain, 0.992, 0.96, 0.93, 0.97),
        *fill_params(
            [
                _shifted("plain-7", {**predating, "train.seed": 7}, 0.991, 0.96, 0.93, 0.97),
                _shifted("plain-1", {**predating, "train.seed": 1}, 0.993, 0.96, 0.93, 0.98),
            ],
            {"train.augment.noise": 0.0},
        ),
        # Best of all, but only two runs: not compared.
        _shifted("deep-42", deep, 0.999, 0.999, 0.99, 0.99),
        _shifted("deep-7", {**deep, "train.seed": 7}, 0.999, 0.999, 0.99, 0.99),
    ]
    comparison = rules.compare_recipes(runs, default)
    assert comparison["shifts"] == list(SHIFTS[:5])
    assert [[r["name"] for r in row["runs"]] for row in comparison["recipes"]] == [
        ["plain-42", "plain-7", "plain-1"],
        ["noise-42", "noise-7", "noise-1"],
    ]
    assert comparison["recipes"][0]["roc_auc"] == pytest.approx(0.992)
    assert comparison["tie"] == pytest.approx(0.002)  # both spreads 0.002: the floor
    assert comparison["chosen"] is comparison["recipes"][0]
    assert rules.select(runs, default)["name"] == "plain-42"  # the chosen recipe's run at the default seed
    assert rules.select_run(runs)["name"].startswith("deep")
    # With two runs a recipe, the deep one is compared too, and the noise copy is scored for all.
    two = rules.compare_recipes(runs, default, min_runs=2)
    assert len(two["shifts"]) == 5 and two["chosen"]["runs"][0]["name"] == "deep-42"
    assert (
        rules.compare_recipes([r for r in runs if not r["params"]["train.augment.noise"]], default, min_runs=2)[
            "shifts"
        ][-1]
        == "noise_10"
    )
    assert rules.compare_recipes(runs[:5], default)["recipes"][0]["runs"][0]["name"] == "noise-42"
    assert rules.compare_recipes(runs[3:], default) is not None and rules.compare_recipes(runs[:2], default) is None

    text = tables.comparison_table(runs, default)
    rows = text.splitlines()[2:4]
    assert rows[0].startswith(
        "| `augment.noise=0.0` **(chosen)** | 3: plain-42, plain-7, plain-1 | "
        "0.9920 (0.9910–0.9930) | 0.930 (0.930–0.930) | 0.973 (0.970–0.980) | "
        "0.923 (0.920–0.930) | n/a | n/a |"
    )
    assert rows[1].startswith("| (default) | 3: noise-42, noise-7, noise-1 | 0.9870 (0.9860–0.9880) |")
    assert "tie width 0.0020" in text
    summary = tables.summary(runs, default)
    assert "the **plain-42** recipe (3 runs: plain-42, plain-7, plain-1)" in summary
    assert "noise-42 recipe 0.9870" in summary
    assert "Shipped: its run at the default seed, **plain-42**" in summary
    assert "single-run rule (all six shifts) would choose deep" in summary
    assert "ession" not in summary  # the rule is named by what it does


def test_recipe_comparison_ties_within_the_replicate_spread_and_needs_a_default_seed_run():
    default = {"train.seed": 42, "train.x": 1}
    # No recipe trains on noise: all six copies are held out. Recipe a leads by 0.002, but its runs
    # are 0.004 apart: the recipes tie, and b's higher balanced accuracy wins.
    a = [
        _shifted(f"a{s}", {"train.x": 1, "train.seed": s}, auc, auc, 0.90, 0.95)
        for s, auc in ((42, 0.990), (7, 0.994), (1, 0.992))
    ]
    b = [_shifted(f"b{s}", {"train.x": 2, "train.seed": s}, 0.990, 0.99, 0.92, 0.95) for s in (42, 7, 1)]
    comparison = rules.compare_recipes(a + b, default)
    assert comparison["tie"] == pytest.approx(0.004)
    assert comparison["recipes"][0]["runs"] == a and comparison["chosen"]["runs"] == b
    assert rules.select(a + b, default)["name"] == "b42"
    assert tables._recipe_name(b[::-1], default) == "b42"  # a recipe goes by its default-seed run, wherever listed
    # The default seed is today's params.yaml's.
    assert rules.compare_recipes(a + b, {**default, "train.seed": 7})["shipped"]["name"] == "b7"
    # A chosen recipe with no run at the default seed ships nothing: the single-run rule decides.
    reseeded = [{**r, "params": {**r["params"], "train.seed": 3 + i}} for i, r in enumerate(b)]
    assert rules.compare_recipes(a + reseeded, default)["shipped"] is None
    assert rules.select(a + reseeded, default) is rules.select_run(a + reseeded)
    # A run missing a shifted copy's figures is not counted.
    partial = {**b[0], "metrics": {**b[0]["metrics"], "val_shift": {"roc_auc": 0.99, "balanced_accuracy": 0.9}}}
    assert rules.compare_recipes(a + [partial, *b[1:]], default)["recipes"][0]["runs"] == a


def test_the_page_renders_the_repos_own_record_from_its_parts():
    records = exp.load(REPO)
    page = exp.render(REPO, records)
    default = exp.default_params(REPO)
    for part in (
        tables.table(records, default),
        tables.comparison_table(records, default),
        tables.effects_table(records),
        tables.recipes_table(records, default),
    ):
        assert part in page
    assert "## How the rule came to be" in page and "ession" not in page
    assert "=None`" not in page  # every run's params are known
