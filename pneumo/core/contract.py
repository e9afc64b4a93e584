"""The deployed model's input/output contract, shared by export (which writes it) and serving (which reads it).

LiteRT files keep a float32 input: the same raw RGB pixels in [0, 255] as the Keras model. Each
file's `serving_default` signature names its output: float16 returns `probability`, like the
Keras model; int8 returns the `logit` (probability = sigmoid(logit)), since an int8 sigmoid
output has 256 levels and the confident end collapses into ties.
"""

from __future__ import annotations

from pneumo.core.paths import FLOAT16_FILE, INT8_FILE

KINDS: dict[str, str] = {"float16": FLOAT16_FILE, "int8": INT8_FILE}
PROBABILITY, LOGIT_OUTPUT = "probability", "logit"
OUTPUTS: dict[str, str] = {"float16": PROBABILITY, "int8": LOGIT_OUTPUT}
IO_CONTRACT = (
    "float32 input (batch, S, S, 3) RGB in [0, 255], as the Keras model; float32 output (batch, 1) "
    "named by the file's serving_default signature: 'probability', or 'logit' (probability = "
    "1 / (1 + exp(-logit))); int8 quantizes inside the file"
)
