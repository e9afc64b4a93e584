"""pneumo: a reproducible pneumonia classifier for pediatric chest X-rays.

The folders are the layers (dependencies point down only; `lint-imports` enforces the contracts in pyproject.toml):

    cli/       the `pneumo` command (thin: parses options, calls the layers below)
    stages/    the DVC stages: prepare, train, evaluate (+ shift), export, report
    ops/       record keeping over runs: gate, diff, workspace, readme, experiments
    serving/   answers about images: predict, the LiteRT runtime
    nn/        Keras/TensorFlow: the network, its training loop pieces, Grad-CAM, LiteRT conversion
    data/      getting the data: fetch, the synthetic demo set
    core/      config, paths, io, process runner, images, DICOM, metrics, tables (no TensorFlow)

flows/ (beside this package) holds the Prefect flows; nothing in pneumo imports it.
"""

from pneumo.core.constants import IMAGE_SUFFIXES, LABELS, SPLITS, SYNTHETIC_MARKER, __version__

__all__ = ["IMAGE_SUFFIXES", "LABELS", "SPLITS", "SYNTHETIC_MARKER", "__version__"]
