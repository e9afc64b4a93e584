"""Constants the flow tests share (a unique module name: tests/ has no packages; never import conftest)."""

from __future__ import annotations

import copy

from support import TINY_PARAMS

# Tiny params (96 px, one epoch per phase) and a tiny synthetic source: same bytes every time,
# so re-fetching them leaves data.dvc's hash, and so every stage, up to date.
# The params are the tests' TINY_PARAMS (tests/support.py) with fewer bootstrap resamples; export keeps
# params.yaml's calibration set and AUC tolerance, and report its Grad-CAM count.
TINY = copy.deepcopy(TINY_PARAMS)
TINY["evaluate"]["bootstrap"] = 20
TINY["export"] = {key: TINY["export"][key] for key in ("min_decision_agreement", "float_layers")}
del TINY["report"]
TINY_SOURCE = {"train_per_class": 30, "test_per_class": 10, "size": 96, "seed": 3}
