"""Typed, validated parameters: `params.yaml` is read once, here, at the edge.

Every tunable number of the pipeline lives in `params.yaml`, one section per stage. Stages
receive the frozen dataclasses below; a bad value is refused with the key, the value and what
is allowed, and an unknown key is refused too (a typo must not silently keep a default). A
params file must set every key, once: a missing or duplicated one would also keep a value
nobody chose. The dataclass defaults equal params.yaml (a test holds them equal), so a partial
mapping (tests, overrides) means "params.yaml, except".
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from cronsim import CronSim, CronSimError


class ParamsError(ValueError):
    """A value in params.yaml is missing, mistyped or out of range."""


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ParamsError(f"params: {key} = {value!r} is not allowed: expected {allowed}")


def _check_seed(seed: int, key: str) -> None:
    _check(0 <= seed < 2**32, key, seed, "an integer from 0 to 2**32 - 1")


def paths_overlap(a: str | Path, b: str | Path) -> bool:
    """True when `a` and `b` resolve to the same place or one lies inside the other."""
    ra, rb = Path(a).resolve(), Path(b).resolve()
    return ra.is_relative_to(rb) or rb.is_relative_to(ra)


@dataclass(frozen=True)
class DataParams:
    raw_dir: str = "data/raw"
    prepared_dir: str = "data/prepared"
    image_size: int = 224

    def validate(self, key: str) -> None:
        _check(
            32 <= self.image_size <= 1024,
            f"{key}.image_size",
            self.image_size,
            "an integer from 32 to 1024 (MobileNetV2 input side, pixels)",
        )
        # prepare replaces prepared_dir whole: equal or nested folders would destroy the raw data.
        _check(
            not paths_overlap(self.raw_dir, self.prepared_dir),
            f"{key}.prepared_dir",
            self.prepared_dir,
            f"a folder apart from {key}.raw_dir = {self.raw_dir!r} (not the same, neither inside the other)",
        )


@dataclass(frozen=True)
class PrepareParams:
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    max_image_pixels: int = 50_000_000

    def validate(self, key: str) -> None:
        _check(
            0.0 < self.val_fraction < 0.5,
            f"{key}.val_fraction",
            self.val_fraction,
            "a fraction between 0 and 0.5 (exclusive)",
        )
        _check(
            0.0 < self.test_fraction < 0.5,
            f"{key}.test_fraction",
            self.test_fraction,
            "a fraction between 0 and 0.5 (exclusive)",
        )
        _check(
            self.val_fraction + self.test_fraction < 0.8,
            f"{key}.val_fraction+test_fraction",
            self.val_fraction + self.test_fraction,
            "a sum below 0.8",
        )
        _check(self.max_image_pixels >= 1024, f"{key}.max_image_pixels", self.max_image_pixels, "an integer >= 1024")
        # prepare carves val with seed + 1
        _check(0 <= self.seed < 2**32 - 1, f"{key}.seed", self.seed, "an integer from 0 to 2**32 - 2")


@dataclass(frozen=True)
class AugmentParams:
    rotation: float = 0.05
    zoom: float = 0.2
    translation: float = 0.1
    contrast: float = 0.4
    brightness: float = 0.2
    noise: float = 0.0
    flip: bool = False

    def validate(self, key: str) -> None:
        for name in ("rotation", "zoom", "translation", "contrast", "brightness"):
            value = getattr(self, name)
            _check(0.0 <= value <= 0.5, f"{key}.{name}", value, "a number from 0 to 0.5 (0 turns it off)")
        _check(
            0.0 <= self.noise <= 32.0,
            f"{key}.noise",
            self.noise,
            "a standard deviation in grey levels from 0 to 32 (0 turns it off)",
        )


@dataclass(frozen=True)
class PhaseParams:
    epochs: int = 8
    learning_rate: float = 1e-3

    def validate(self, key: str) -> None:
        _check(0 <= self.epochs <= 500, f"{key}.epochs", self.epochs, "an integer from 0 to 500")
        _check(0.0 < self.learning_rate <= 1.0, f"{key}.learning_rate", self.learning_rate, "a number in (0, 1]")


@dataclass(frozen=True)
class FinetuneParams(PhaseParams):
    epochs: int = 8
    learning_rate: float = 5e-5
    layers: int = 100

    def validate(self, key: str) -> None:
        super().validate(key)
        _check(
            0 <= self.layers <= 160,
            f"{key}.layers",
            self.layers,
            "an integer from 0 to 160 (layers of MobileNetV2 unfrozen from the top)",
        )


@dataclass(frozen=True)
class TrainParams:
    weights: str = "imagenet"
    dense_units: int = 128
    dropout: float = 0.2
    batch_size: int = 32
    class_weight: Literal["balanced", "none"] = "balanced"
    label_smoothing: float = 0.1
    patience: int = 0
    mixed_precision: bool = False
    deterministic: bool = True
    seed: int = 42
    augment: AugmentParams = field(default_factory=AugmentParams)
    frozen: PhaseParams = field(default_factory=PhaseParams)
    finetune: FinetuneParams = field(default_factory=FinetuneParams)

    def validate(self, key: str) -> None:
        _check(
            self.weights in ("imagenet", "none") or self.weights.endswith((".h5", ".weights.h5")),
            f"{key}.weights",
            self.weights,
            "'imagenet', 'none' or a path to a .h5 weights file",
        )
        _check(1 <= self.dense_units <= 4096, f"{key}.dense_units", self.dense_units, "an integer from 1 to 4096")
        _check(0.0 <= self.dropout < 1.0, f"{key}.dropout", self.dropout, "a number in [0, 1)")
        _check(1 <= self.batch_size <= 1024, f"{key}.batch_size", self.batch_size, "an integer from 1 to 1024")
        _check(
            self.class_weight in ("balanced", "none"), f"{key}.class_weight", self.class_weight, "'balanced' or 'none'"
        )
        _check(
            0.0 <= self.label_smoothing < 0.5, f"{key}.label_smoothing", self.label_smoothing, "a number in [0, 0.5)"
        )
        _check(
            0 <= self.patience <= 100, f"{key}.patience", self.patience, "an integer from 0 (no early stopping) to 100"
        )
        _check(
            self.frozen.epochs + self.finetune.epochs >= 1,
            f"{key}.frozen.epochs+finetune.epochs",
            self.frozen.epochs + self.finetune.epochs,
            "at least one epoch in all",
        )
        _check_seed(self.seed, f"{key}.seed")
        self.augment.validate(f"{key}.augment")
        self.frozen.validate(f"{key}.frozen")
        self.finetune.validate(f"{key}.finetune")


@dataclass(frozen=True)
class EvaluateParams:
    target_sensitivity: float = 0.95
    bootstrap: int = 1000
    seed: int = 42
    calibration_bins: int = 10
    calibration: Literal["temperature", "none"] = "temperature"
    refer_coverage: float = 0.98
    ood_keep: float = 0.99

    def validate(self, key: str) -> None:
        _check(
            self.refer_coverage == 0 or 0.5 <= self.refer_coverage < 1.0,
            f"{key}.refer_coverage",
            self.refer_coverage,
            "0 (no refer band) or a coverage in [0.5, 1)",
        )
        _check(0.9 <= self.ood_keep <= 1.0, f"{key}.ood_keep", self.ood_keep, "a share in [0.9, 1]")
        _check(
            0.5 <= self.target_sensitivity < 1.0,
            f"{key}.target_sensitivity",
            self.target_sensitivity,
            "a number in [0.5, 1)",
        )
        _check(
            0 <= self.bootstrap <= 100_000,
            f"{key}.bootstrap",
            self.bootstrap,
            "an integer from 0 (no intervals) to 100000",
        )
        _check(
            2 <= self.calibration_bins <= 100,
            f"{key}.calibration_bins",
            self.calibration_bins,
            "an integer from 2 to 100",
        )
        _check_seed(self.seed, f"{key}.seed")


@dataclass(frozen=True)
class ExportParams:
    parity_tolerance: float = 1e-4
    calibration_images: int = 200
    calibration_seed: int = 42
    litert_auc_tolerance: float = 0.01
    int8_max_mb: float = 8.0
    min_decision_agreement: float = 0.97
    float_layers: int = 15

    def _check_float_layers(self, key: str) -> None:
        _check(
            0 <= self.float_layers <= 200,
            f"{key}.float_layers",
            self.float_layers,
            "an integer from 0 (full integer) to 200",
        )

    def validate(self, key: str) -> None:
        self._check_float_layers(key)
        _check(
            0.5 <= self.min_decision_agreement <= 1.0,
            f"{key}.min_decision_agreement",
            self.min_decision_agreement,
            "a share in [0.5, 1]",
        )
        _check(
            0.0 < self.parity_tolerance <= 0.1, f"{key}.parity_tolerance", self.parity_tolerance, "a number in (0, 0.1]"
        )
        _check(
            1 <= self.calibration_images <= 10_000,
            f"{key}.calibration_images",
            self.calibration_images,
            "an integer from 1 to 10000",
        )
        _check_seed(self.calibration_seed, f"{key}.calibration_seed")
        _check(
            0.0 < self.litert_auc_tolerance <= 0.5,
            f"{key}.litert_auc_tolerance",
            self.litert_auc_tolerance,
            "a number in (0, 0.5]",
        )
        _check(self.int8_max_mb > 0, f"{key}.int8_max_mb", self.int8_max_mb, "a number > 0 (megabytes)")


@dataclass(frozen=True)
class OodsetParams:
    dir: str = "data/ood"
    xrays: int = 12
    seed: int = 42

    def validate(self, key: str) -> None:
        _check(
            1 <= self.xrays <= 200, f"{key}.xrays", self.xrays, "an integer from 1 to 200 (X-rays per transformed kind)"
        )
        _check_seed(self.seed, f"{key}.seed")


@dataclass(frozen=True)
class ReportParams:
    gradcam_per_group: int = 4

    def validate(self, key: str) -> None:
        _check(
            0 <= self.gradcam_per_group <= 16,
            f"{key}.gradcam_per_group",
            self.gradcam_per_group,
            "an integer from 0 to 16",
        )


_GATE_RATES = ("accuracy", "precision", "recall", "specificity", "f1")


@dataclass(frozen=True)
class GateParams:
    """Champion/challenger promotion, on validation only: which metrics may not get worse, and by how much.

    A metric passes when the lower end of the one-sided 95% patient-bootstrap interval of
    (challenger - champion) on the shared validation images is above -tolerance.
    """

    # What the evaluate stage writes for validation (eval/metrics.json) that the gate can resample.
    # test.* is never gated: choosing on test every week would leak it (it is shown, not judged).
    GATEABLE: typing.ClassVar[frozenset[str]] = frozenset(
        {"val.roc_auc", "val.pr_auc", "val.brier"}
        | {f"val.{at}.{rate}" for at in ("at_0.5", "at_operating") for rate in _GATE_RATES}
        | {f"val_shift.{m}" for m in ("roc_auc", "worst_roc_auc", "recall", "specificity", "balanced_accuracy")}
    )

    metrics: tuple[str, ...] = ("val.roc_auc", "val.pr_auc", "val_shift.roc_auc", "val_shift.balanced_accuracy")
    tolerance: float = 0.02
    bootstrap: int = 1000
    seed: int = 42

    def validate(self, key: str) -> None:
        _check(len(self.metrics) > 0, f"{key}.metrics", list(self.metrics), "a non-empty list of metric names")
        for i, name in enumerate(self.metrics):
            _check(
                not name.startswith("test."),
                f"{key}.metrics[{i}]",
                name,
                "a validation metric (val.* or val_shift.*): test is reported, never gated",
            )
            _check(
                name in self.GATEABLE,
                f"{key}.metrics[{i}]",
                name,
                "one of the metrics evaluate writes: " + ", ".join(sorted(self.GATEABLE)),
            )
        _check(0.0 <= self.tolerance < 1.0, f"{key}.tolerance", self.tolerance, "a number in [0, 1)")
        _check(
            100 <= self.bootstrap <= 100_000,
            f"{key}.bootstrap",
            self.bootstrap,
            "an integer from 100 to 100000 (patient resamples of validation)",
        )
        _check_seed(self.seed, f"{key}.seed")


def _valid_cron(expression: str) -> bool:
    """Parse with cronsim (the cron parser Prefect's scheduler also uses)."""
    try:
        CronSim(expression, datetime(2000, 1, 1))
    except CronSimError:
        return False
    return True


@dataclass(frozen=True)
class ScheduleParams:
    """Scheduled retraining (`python -m flows serve`): when, and from which data ("" = name it on the command)."""

    cron: str = "0 3 * * 1"
    timezone: str = "UTC"
    source: Literal["", "local", "url", "none", "synthetic"] = ""
    path: str = ""
    url: str = ""
    sha256: str = ""

    def validate(self, key: str) -> None:
        _check(
            len(self.cron.split()) == 5 and _valid_cron(self.cron),
            f"{key}.cron",
            self.cron,
            "a 5-field cron expression, e.g. '0 3 * * 1' (Mondays 03:00)",
        )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            _check(False, f"{key}.timezone", self.timezone, "an IANA time zone name, e.g. UTC or Europe/Berlin")
        _check(
            self.source != "local" or bool(self.path),
            f"{key}.path",
            self.path,
            "a folder or archive when schedule.source is local",
        )
        _check(
            self.source != "url" or bool(self.url),
            f"{key}.url",
            self.url,
            "an http(s) address when schedule.source is url",
        )
        _check(
            not self.sha256 or bool(re.fullmatch(r"[0-9a-fA-F]{64}", self.sha256)),
            f"{key}.sha256",
            self.sha256,
            "empty or 64 hexadecimal digits",
        )


@dataclass(frozen=True)
class Params:
    data: DataParams = field(default_factory=DataParams)
    prepare: PrepareParams = field(default_factory=PrepareParams)
    train: TrainParams = field(default_factory=TrainParams)
    oodset: OodsetParams = field(default_factory=OodsetParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    export: ExportParams = field(default_factory=ExportParams)
    report: ReportParams = field(default_factory=ReportParams)
    gate: GateParams = field(default_factory=GateParams)
    schedule: ScheduleParams = field(default_factory=ScheduleParams)

    def validate(self, key: str = "") -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate(f.name)
        # the oodset stage replaces its folder whole: it must not hold (or sit inside) the data.
        for name in ("raw_dir", "prepared_dir"):
            _check(
                not paths_overlap(self.oodset.dir, getattr(self.data, name)),
                "oodset.dir",
                self.oodset.dir,
                f"a folder apart from data.{name} = {getattr(self.data, name)!r}",
            )


def _coerce(value: Any, tp: Any, key: str, complete: bool = False) -> Any:
    """Turn a YAML value into `tp`, refusing anything that would need a guess."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, complete)
    if origin is Literal:
        allowed = typing.get_args(tp)
        _check(value in allowed, key, value, " or ".join(repr(a) for a in allowed))
        return value
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported annotation at {key}")  # pragma: no cover
    if origin is tuple:
        _check(
            isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value), key, value, "a list of strings"
        )
        return tuple(value)
    if tp is bool:
        _check(isinstance(value, bool), key, value, "true or false")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, value, "an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-5` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key, value, "a number")
        # YAML's .inf and .nan pass every `<`/`>` range check the wrong way (NaN compares False).
        _check(math.isfinite(value), key, value, "a finite number (not .inf or .nan)")
        return float(value)
    if tp is str:
        _check(isinstance(value, str), key, value, "a string")
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {key}")  # pragma: no cover


def _build(cls: type, raw: Any, key: str, complete: bool = False) -> Any:
    where = key or "params.yaml"
    _check(isinstance(raw, dict), where, raw, "a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    prefix = f"{key}." if key else ""
    unknown = sorted(set(raw) - set(names), key=str)
    if unknown:
        raise ParamsError(f"params: unknown key {prefix}{unknown[0]}: allowed keys here are {', '.join(sorted(names))}")
    missing = [name for name in names if name not in raw]
    if complete and missing:
        raise ParamsError(
            f"params: missing {'key' if len(missing) == 1 else 'keys'} "
            f"{', '.join(prefix + m for m in missing)}: a params file must set every key "
            "(a missing one would silently take the code's default)"
        )
    kwargs = {name: _coerce(raw[name], hints[name], prefix + name, complete) for name in names if name in raw}
    return cls(**kwargs)


def params_from_dict(raw: dict[str, Any], complete: bool = False) -> Params:
    """Build and validate `Params` from a parsed params.yaml mapping.

    With `complete`, every section and key must be present (as for a params file); without it,
    missing keys take the code's defaults (tests and overrides build partial mappings).
    """
    params = _build(Params, raw, "", complete)
    params.validate()
    return params


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if isinstance(key, Hashable):  # an unhashable key is PyYAML's own error, raised below
            if key in seen:
                raise ParamsError(f"duplicate key {key!r} at line {line} (first set at line {seen[key]})")
            seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: where and what (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file: every key set, none twice; errors name the file and the key."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such file (run from the project root or pass --params)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None
    if raw is None:
        sections = ", ".join(f.name for f in dataclasses.fields(Params))
        raise ParamsError(f"{path}: empty: it must set every section ({sections})")
    try:
        return params_from_dict(raw, complete=True)
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None


def as_dict(params: Any) -> dict[str, Any]:
    return dataclasses.asdict(params)
