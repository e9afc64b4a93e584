"""The network's two answers for the decision path: its raw logit and its pooled features.

The logit is what calibration and the threshold work on; the pooled features (the 1280 numbers
the head reads) are what the input gate measures (`pneumo.core.ood`). The same two outputs are
what the LiteRT files carry (`pneumo.core.contract`), so every path decides from the same numbers.
"""

from __future__ import annotations

import keras

from pneumo.core.contract import FEATURES_OUTPUT, LOGIT_OUTPUT
from pneumo.nn.model import LOGIT

POOL = "pool"  # the GlobalAveragePooling2D layer `pneumo.nn.model.build_model` names so


def decision_model(model: keras.Model) -> keras.Model:
    """The same network answering {'logit': (N, 1), 'features': (N, D)}."""
    outputs = {LOGIT_OUTPUT: model.get_layer(LOGIT).output, FEATURES_OUTPUT: model.get_layer(POOL).output}
    return keras.Model(model.inputs, outputs, name=f"{model.name}_decision")
