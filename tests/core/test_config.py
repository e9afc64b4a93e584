"""params.yaml is read once and validated: bad values, unknown keys and wrong types are refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pneumo.core.config import (
    DataParams,
    EvaluateParams,
    ExportParams,
    FinetuneParams,
    Params,
    ParamsError,
    PrepareParams,
    TrainParams,
    as_dict,
    load_params,
    params_from_dict,
    paths_overlap,
)
from support import write_params

REPO = Path(__file__).resolve().parents[2]


def _nested(dotted: str, value) -> dict:
    """{'a': {'b': value}} from 'a.b'."""
    *parents, leaf = dotted.split(".")
    raw: dict = {leaf: value}
    for key in reversed(parents):
        raw = {key: raw}
    return raw


def test_defaults_validate():
    params = Params()
    params.validate()  # must not raise
    assert params_from_dict({}) == params


def test_code_defaults_are_params_yaml():
    """params.yaml is the record: every dataclass default equals it, key by key, so a partial
    mapping can never train something params.yaml does not say."""
    from pneumo.core.tables import flatten

    code = flatten(as_dict(Params()))
    record = flatten(as_dict(load_params(REPO / "params.yaml")))
    assert code.keys() == record.keys()
    assert {k: v for k, v in code.items() if v != record[k]} == {}


def test_repo_params_yaml_loads_and_matches_file():
    params = load_params(REPO / "params.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert isinstance(params, Params)
    assert params.data.image_size == raw["data"]["image_size"]
    assert params.prepare.val_fraction == pytest.approx(float(raw["prepare"]["val_fraction"]))
    assert params.train.finetune.learning_rate == pytest.approx(float(raw["train"]["finetune"]["learning_rate"]))
    assert params.evaluate.target_sensitivity == pytest.approx(raw["evaluate"]["target_sensitivity"])
    assert isinstance(params.train.finetune, FinetuneParams)


def test_as_dict_round_trips():
    params = load_params(REPO / "params.yaml")
    assert params_from_dict(as_dict(params)) == params


@pytest.mark.parametrize(
    ("dotted", "value", "allowed"),
    [
        ("data.image_size", 16, "32 to 1024"),
        ("data.image_size", 2048, "32 to 1024"),
        ("prepare.val_fraction", 0.0, "between 0 and 0.5"),
        ("prepare.val_fraction", 0.5, "between 0 and 0.5"),
        ("prepare.test_fraction", -0.1, "between 0 and 0.5"),
        ("prepare.max_image_pixels", 100, ">= 1024"),
        ("train.dropout", 1.0, "[0, 1)"),
        ("train.batch_size", 0, "1 to 1024"),
        ("train.dense_units", 5000, "1 to 4096"),
        ("train.class_weight", "auto", "'balanced' or 'none'"),
        ("train.weights", "resnet", "'imagenet', 'none'"),
        ("train.label_smoothing", 0.5, "[0, 0.5)"),
        ("train.patience", -1, "0 (no early stopping) to 100"),
        ("train.augment.zoom", 0.9, "0 to 0.5"),
        ("train.augment.rotation", -0.1, "0 to 0.5"),
        ("train.frozen.epochs", 501, "0 to 500"),
        ("train.frozen.learning_rate", 0.0, "(0, 1]"),
        ("train.finetune.learning_rate", 2.0, "(0, 1]"),
        ("train.finetune.layers", 161, "0 to 160"),
        ("evaluate.target_sensitivity", 1.0, "[0.5, 1)"),
        ("evaluate.target_sensitivity", 0.4, "[0.5, 1)"),
        ("evaluate.bootstrap", -1, "0 (no intervals) to 100000"),
        ("evaluate.calibration_bins", 1, "2 to 100"),
        ("export.parity_tolerance", 0.0, "(0, 0.1]"),
    ],
)
def test_bad_value_refused_naming_key_value_and_allowed(dotted, value, allowed):
    with pytest.raises(ParamsError) as info:
        params_from_dict(_nested(dotted, value))
    message = str(info.value)
    assert dotted in message
    assert repr(value) in message
    assert allowed in message


@pytest.mark.parametrize("dotted", ["prepare.seed", "train.seed", "evaluate.seed"])
def test_negative_seed_refused(dotted):
    with pytest.raises(ParamsError) as info:
        params_from_dict(_nested(dotted, -1))
    assert dotted in str(info.value) and "-1" in str(info.value)


def test_fractions_summing_too_high_refused():
    with pytest.raises(ParamsError, match=r"prepare\.val_fraction\+test_fraction.*below 0\.8"):
        params_from_dict({"prepare": {"val_fraction": 0.45, "test_fraction": 0.4}})


def test_no_epochs_at_all_refused():
    with pytest.raises(ParamsError, match=r"train\.frozen\.epochs\+finetune\.epochs"):
        params_from_dict({"train": {"frozen": {"epochs": 0}, "finetune": {"epochs": 0}}})


def test_edges_of_ranges_accepted():
    params = params_from_dict(
        {
            "data": {"image_size": 32},
            "train": {
                "dropout": 0.0,
                "frozen": {"epochs": 0},
                "finetune": {"epochs": 1, "layers": 160},
                "weights": "my/own.weights.h5",
            },
            "evaluate": {"target_sensitivity": 0.5, "bootstrap": 0},
            "export": {"parity_tolerance": 0.1},
        }
    )
    assert params.data.image_size == 32
    assert params.train.weights == "my/own.weights.h5"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"dta": {}}, "dta"),
        ({"data": {"imagesize": 64}}, "data.imagesize"),
        ({"train": {"augment": {"rotate": 0.1}}}, "train.augment.rotate"),
        ({"train": {"finetune": {"lr": 0.1}}}, "train.finetune.lr"),
    ],
)
def test_unknown_key_refused_naming_it(raw, key):
    with pytest.raises(ParamsError) as info:
        params_from_dict(raw)
    assert f"unknown key {key}" in str(info.value)


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("data.image_size", "224"),
        ("data.image_size", True),
        ("data.image_size", 224.0),
        ("train.batch_size", False),
        ("train.mixed_precision", 1),
        ("train.mixed_precision", "yes"),
        ("train.dropout", True),
        ("train.dropout", "lots"),
        ("train.weights", 3),
        ("train.augment", 0.1),
        ("prepare.seed", "42"),
    ],
)
def test_wrong_type_refused(dotted, value):
    with pytest.raises(ParamsError) as info:
        params_from_dict(_nested(dotted, value))
    assert dotted in str(info.value)
    assert repr(value) in str(info.value)


def test_top_level_must_be_a_mapping():
    with pytest.raises(ParamsError, match="mapping"):
        params_from_dict(["data"])  # type: ignore[arg-type]


def test_exponent_without_dot_is_a_float(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text().replace("learning_rate: 0.00005", "learning_rate: 1e-5"))
    assert isinstance(yaml.safe_load(path.read_text())["train"]["finetune"]["learning_rate"], str)
    params = load_params(path)
    assert isinstance(params.train.finetune.learning_rate, float)
    assert params.train.finetune.learning_rate == pytest.approx(1e-5)


def test_integer_accepted_for_float():
    params = params_from_dict({"train": {"frozen": {"learning_rate": 1}}})
    assert params.train.frozen.learning_rate == 1.0
    assert isinstance(params.train.frozen.learning_rate, float)


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "nope" / "params.yaml"
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(path) in str(info.value)
    assert "no such file" in str(info.value)


def test_invalid_yaml_names_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  image_size: [1, 2\n")
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(path) in str(info.value)
    assert "YAML" in str(info.value)


def test_bad_value_in_file_names_file_and_key(tmp_path):
    path = write_params(tmp_path / "params.yaml", evaluate__bootstrap=200000)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(path) in str(info.value)
    assert "evaluate.bootstrap" in str(info.value)
    assert "200000" in str(info.value)


@pytest.mark.parametrize("text", ["", "# nothing set\n"])
def test_empty_file_refused(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match="empty") as info:
        load_params(path)
    assert str(path) in str(info.value) and "train" in str(info.value)


@pytest.mark.parametrize("section", ["data", "train", "schedule"])
def test_file_missing_a_section_refused_naming_it(tmp_path, section):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw[section]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=f"missing key {section}:") as info:
        load_params(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("dotted", ["train.batch_size", "train.finetune.layers", "export.int8_max_mb"])
def test_file_missing_a_key_refused_naming_it(tmp_path, dotted):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        node = node[key]
    del node[leaf]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=f"missing key {dotted}:"):
        load_params(path)


def test_complete_mapping_required_only_when_asked():
    full = as_dict(load_params(REPO / "params.yaml"))
    assert params_from_dict(full, complete=True) == load_params(REPO / "params.yaml")
    del full["report"]
    with pytest.raises(ParamsError, match="missing key report"):
        params_from_dict(full, complete=True)
    assert params_from_dict(full).report == Params().report  # a partial mapping still takes defaults


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("int8_max_mb: 8.0", "int8_max_mb: .inf", "export.int8_max_mb"),
        ("int8_max_mb: 8.0", "int8_max_mb: -.inf", "export.int8_max_mb"),
        ("dropout: 0.2", "dropout: .nan", "train.dropout"),
        ("dropout: 0.2", "dropout: nan", "train.dropout"),  # a string YAML leaves for float() to read
        ("target_sensitivity: 0.95", "target_sensitivity: .NaN", "evaluate.target_sensitivity"),
    ],
)
def test_non_finite_numbers_refused(tmp_path, old, new, key):
    text = (REPO / "params.yaml").read_text()
    assert text.count(old) == 1
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(old, new))
    with pytest.raises(ParamsError, match="finite") as info:
        load_params(path)
    assert key in str(info.value)


def test_non_finite_refused_in_a_mapping_too():
    with pytest.raises(ParamsError, match=r"train\.frozen\.learning_rate = nan .*finite"):
        params_from_dict({"train": {"frozen": {"learning_rate": float("nan")}}})


@pytest.mark.parametrize(
    ("old", "new", "key", "lines"),
    [
        ("  batch_size: 32\n", "  batch_size: 32\n  batch_size: 64\n", "'batch_size'", ("line 18", "line 17")),
        ("\nschedule:", "\ndata:\n  image_size: 64\nschedule:", "'data'", ("first set at line 2",)),
    ],
)
def test_duplicate_keys_refused_naming_key_and_lines(tmp_path, old, new, key, lines):
    text = (REPO / "params.yaml").read_text()
    assert text.count(old) == 1
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(old, new))
    with pytest.raises(ParamsError, match="duplicate key") as info:
        load_params(path)
    message = str(info.value)
    assert str(path) in message and key in message
    assert all(line in message for line in lines), message


@pytest.mark.parametrize(
    ("raw_dir", "prepared_dir"),
    [
        ("data/raw", "data/raw"),
        ("data/raw", "data/raw/"),
        ("data/raw", "data/raw/prepared"),
        ("data/prepared/raw", "data/prepared"),
        ("data/raw", "data/../data/raw"),
        ("data/raw", "."),
    ],
)
def test_overlapping_data_folders_refused_naming_both(raw_dir, prepared_dir):
    with pytest.raises(ParamsError) as info:
        params_from_dict({"data": {"raw_dir": raw_dir, "prepared_dir": prepared_dir}})
    message = str(info.value)
    assert "data.prepared_dir" in message and "data.raw_dir" in message
    assert repr(prepared_dir) in message and repr(raw_dir) in message


def test_overlap_follows_symlinks(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "raw")
    assert paths_overlap(tmp_path / "alias" / "prepared", tmp_path / "raw")
    with pytest.raises(ParamsError, match="data.raw_dir"):
        params_from_dict({"data": {"raw_dir": str(tmp_path / "raw"), "prepared_dir": str(tmp_path / "alias")}})


def test_sibling_folders_with_a_common_prefix_do_not_overlap():
    assert not paths_overlap("data/raw", "data/raw2")
    params = params_from_dict({"data": {"raw_dir": "data/raw", "prepared_dir": "data/raw2"}})
    assert params.data.prepared_dir == "data/raw2"


def test_missing_keys_take_defaults():
    params = params_from_dict({"train": {"dropout": 0.5}})
    assert params.train.dropout == 0.5
    assert params.train.batch_size == TrainParams().batch_size
    assert params.data == DataParams()
    assert params.prepare == PrepareParams()
    assert params.evaluate == EvaluateParams()
    assert params.export == ExportParams()


def test_params_are_frozen():
    params = Params()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.data.image_size = 64  # type: ignore[misc]
