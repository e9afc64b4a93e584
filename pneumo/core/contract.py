"""The deployed model's input/output contract, shared by export (which writes it) and serving (which reads it).

LiteRT files keep a float32 input: the same raw RGB pixels in [0, 255] as the Keras model. Each
file's `serving_default` signature names two float32 outputs: `logit` (batch, 1), the raw logit
before the sigmoid (the model card's temperature calibrates it: probability =
1 / (1 + exp(-logit / T))), and `features` (batch, 1280), the pooled features the input gate
measures (`pneumo.core.ood`). The logit, not a probability, because an int8 sigmoid output has
256 levels and its confident end collapses into ties. Files written before the gate existed
return one output, `probability` or `logit`; the runtime still reads them (without a gate).
"""

from __future__ import annotations

from pneumo.core.paths import FLOAT16_FILE, INT8_FILE

KINDS: dict[str, str] = {"float16": FLOAT16_FILE, "int8": INT8_FILE}
PROBABILITY, LOGIT_OUTPUT, FEATURES_OUTPUT = "probability", "logit", "features"
OUTPUTS: tuple[str, ...] = (LOGIT_OUTPUT, FEATURES_OUTPUT)
IO_CONTRACT = (
    "float32 input (batch, S, S, 3) RGB in [0, 255], as the Keras model; float32 outputs named by the "
    "file's serving_default signature: 'logit' (batch, 1), calibrated as probability = "
    "1 / (1 + exp(-logit / temperature)) with the card's temperature, and 'features' (batch, 1280), "
    "the pooled features the input gate scores against the shipped statistics; int8 quantizes inside the file"
)
