"""params.yaml is read once and validated: bad values, unknown keys and wrong types are refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pneumo.config import (
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
)

REPO = Path(__file__).resolve().parents[1]



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
    params = params_from_dict({
        "data": {"image_size": 32},
        "train": {"dropout": 0.0, "frozen": {"epochs": 0}, "finetune": {"epochs": 1, "layers": 160},
                  "weights": "my/own.weights.h5"},
        "evaluate": {"target_sensitivity": 0.5, "bootstrap": 0},
        "export": {"parity_tolerance": 0.1},
    })
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
    path.write_text("train:\n  finetune:\n    learning_rate: 1e-5\n")
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
    path = tmp_path / "params.yaml"
    path.write_text("evaluate:\n  bootstrap: 200000\n")
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(path) in str(info.value)
    assert "evaluate.bootstrap" in str(info.value)
    assert "200000" in str(info.value)


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("# nothing set\n")
    assert load_params(path) == Params()


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
