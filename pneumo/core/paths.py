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
# oodset (inside oodset.dir)
OOD_MANIFEST = "manifest.csv"
OOD_IMAGES_DIR = "images"
OOD_DICOM_DIR = "dicom"
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
OOD_STATS_FILE = "ood_stats.npz"  # the input gate's statistics (also shipped beside the model by export)
OOD_SCORES_FILE = "ood_scores.csv"  # the out-of-distribution set's per-image answers
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
OOD_STATS = _join(EVAL_DIR, OOD_STATS_FILE)
OOD_SCORES = _join(EVAL_DIR, OOD_SCORES_FILE)
SHIPPED_H5 = _join(MODELS_DIR, MODEL_H5)
SHIPPED_CARD = _join(MODELS_DIR, MODEL_CARD)
SHIPPED_FLOAT16 = _join(MODELS_DIR, FLOAT16_FILE)
SHIPPED_INT8 = _join(MODELS_DIR, INT8_FILE)
SHIPPED_OOD_STATS = _join(MODELS_DIR, OOD_STATS_FILE)
# Where `dvc repro` (stage package) copies the model pip installs with pneumo (git-tracked, not DVC-cached).
PACKAGED_DIR = "pneumo/assets/model"
# What a release is made of: the deployable files, the input gate's statistics and the card that describes them.
DEPLOYABLE = (SHIPPED_H5, SHIPPED_FLOAT16, SHIPPED_INT8, SHIPPED_OOD_STATS, SHIPPED_CARD)
