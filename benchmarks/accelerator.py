"""Training and inference speed of pneumo's network on an accelerator (a script, not a test).

    KERAS_BACKEND=jax python benchmarks/accelerator.py --out benchmarks/results/accelerator.json

Builds the exact network of `pneumo.nn.model.build_model` (MobileNetV2 + head, ImageNet weights)
and times optimizer steps of both training phases (frozen base; top `--finetune-layers`
unfrozen) and batch inference, on random pixels, in float32 and in mixed precision. It
extrapolates one epoch of the default split (4,470 train + 746 validation images) from the
measured rates. It needs only Keras 3 and a backend, so it runs where TensorFlow is not
installed (the lent GPU machines have JAX); augmentation, which runs in tf.data in
`pneumo train`, is left out. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

TRAIN_IMAGES, VAL_IMAGES = 4470, 746


def _rate(step, batches: int, warmup: int) -> float:
    """Calls per second of `step()` (one batch each) after `warmup` calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(batches):
        step()
    return batches / (time.perf_counter() - start)


def measure(policy: str, batch: int, batches: int, warmup: int, finetune_layers: int) -> dict:
    import keras

    from pneumo.nn.model import build_model, set_trainable_top

    keras.mixed_precision.set_global_policy(policy)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, 224, 224, 3)).astype(np.float32)
    y = rng.integers(0, 2, (batch, 1)).astype(np.float32)
    model = build_model(224, "imagenet")
    out: dict = {"policy": policy, "batch": batch}
    for phase, layers in (("frozen", 0), ("finetune", finetune_layers)):
        set_trainable_top(model, layers)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy")
        start = time.perf_counter()
        model.train_on_batch(x, y)
        out[f"{phase}_first_step_s"] = time.perf_counter() - start  # compilation included
        out[f"{phase}_img_s"] = batch * _rate(lambda: model.train_on_batch(x, y), batches, warmup)
    start = time.perf_counter()
    model.predict_on_batch(x)
    out["predict_first_s"] = time.perf_counter() - start
    out["predict_img_s"] = batch * _rate(lambda: model.predict_on_batch(x), batches, warmup)
    for phase in ("frozen", "finetune"):
        out[f"{phase}_epoch_s"] = TRAIN_IMAGES / out[f"{phase}_img_s"] + VAL_IMAGES / out["predict_img_s"]
    keras.backend.clear_session()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/accelerator.json"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--finetune-layers", type=int, default=30)
    parser.add_argument("--policies", nargs="+", default=["float32", "mixed_float16"])
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import keras

    backend = keras.backend.backend()
    devices = []
    if backend == "jax":
        import jax

        devices = [f"{d.device_kind} ({d})" for d in jax.devices()]
    elif backend == "tensorflow":
        import tensorflow as tf

        devices = [d.name for d in tf.config.list_physical_devices()]
    rows = [measure(p, args.batch, args.batches, args.warmup, args.finetune_layers) for p in args.policies]
    shown = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("--out") and a != str(args.out)]
    result = {
        "command": " ".join([f"KERAS_BACKEND={backend} python benchmarks/accelerator.py", *shown]),
        "backend": backend,
        "keras": keras.__version__,
        "devices": devices,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "finetune_layers": args.finetune_layers,
        "results": rows,
    }
    print(f"{backend} on {', '.join(devices) or '?'}")
    print(
        f"{'policy':<14} {'frozen img/s':>12} {'finetune img/s':>14} {'predict img/s':>13} "
        f"{'frozen epoch':>12} {'finetune epoch':>14}"
    )
    for r in rows:
        print(
            f"{r['policy']:<14} {r['frozen_img_s']:>12.0f} {r['finetune_img_s']:>14.0f} {r['predict_img_s']:>13.0f} "
            f"{r['frozen_epoch_s']:>11.1f}s {r['finetune_epoch_s']:>13.1f}s"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
