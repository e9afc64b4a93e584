"""Every file a stage writes, named once. dvc.yaml spells the same paths (a test holds them equal).

Folders are relative to the project (or flow workspace) root; file names are relative to their
stage's folder, since each stage's command takes its folder as an option.
"""

from __future__ import annotations

from pathlib import PurePosixPath

# check
PARAMS_OK = "data/params.ok"
# prepare (inside data.prepared_dir)
PREPARE_SUMMARY = "prepare.json"
MANIFEST = "manifest.csv"
# train
TRAIN_DIR = "models/train"
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
TRAIN_SUMMARY = "train.json"
# evaluate
EVAL_DIR = "eval"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
PLOTS_DIR = "plots"
SHIFT_COLUMN = "probability_shift_"  # predictions.csv: one column per shifted copy of validation
# export
MODELS_DIR = "models"
MODEL_H5 = "model.h5"
MODEL_CARD = "model_card.json"
FLOAT16_FILE = "model_float16.tflite"
INT8_FILE = "model_int8.tflite"
# report
REPORTS_DIR = "reports"
REPORT_HTML = "index.html"
REPORT_MD = "report.md"
REPORT_SINGLE_FILE = "report.html"


def _join(*parts: str) -> str:
    return str(PurePosixPath(*parts))


TRAINED_MODEL = _join(TRAIN_DIR, MODEL_FILE)
HISTORY = _join(TRAIN_DIR, HISTORY_FILE)
METRICS = _join(EVAL_DIR, METRICS_FILE)
PREDICTIONS = _join(EVAL_DIR, PREDICTIONS_FILE)
PLOTS = _join(EVAL_DIR, PLOTS_DIR)
SHIPPED_H5 = _join(MODELS_DIR, MODEL_H5)
SHIPPED_CARD = _join(MODELS_DIR, MODEL_CARD)
SHIPPED_FLOAT16 = _join(MODELS_DIR, FLOAT16_FILE)
SHIPPED_INT8 = _join(MODELS_DIR, INT8_FILE)
# What a release is made of: the deployable files and the card that describes them.
DEPLOYABLE = (SHIPPED_H5, SHIPPED_FLOAT16, SHIPPED_INT8, SHIPPED_CARD)
