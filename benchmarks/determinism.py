"""What deterministic training costs: training throughput with `train.deterministic` on and off.

    python benchmarks/determinism.py [--pairs 3] [--out benchmarks/results/determinism.json]

Each measurement is its own process (op determinism is process-wide): pneumo's network at the
default image size and batch, fed by pneumo's own training pipeline (`pneumo.nn.training.make_dataset`
with the default augmentation), timed over optimizer steps of the frozen phase and of fine-tuning
(the default number of top layers unfrozen), after warm-up steps. Runs alternate on, off, on, off
..., so a drift in the machine's speed hits both; the medians are recorded. Random pixels and a
randomly initialised base: the speed of a step does not depend on either.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one(deterministic: bool, steps: int, warmup: int) -> dict:
    """Images per second of each phase, in this process."""
    import keras
    import numpy as np
    import tensorflow as tf

    from pneumo.core.config import load_params
    from pneumo.nn.model import build_model, set_trainable_top
    from pneumo.nn.training import make_dataset

    params = load_params(ROOT / "params.yaml")
    size, batch = params.data.image_size, params.train.batch_size
    keras.utils.set_random_seed(0)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(0)
    n = batch * (steps + warmup)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    labels = rng.integers(0, 2, n)
    model = build_model(size, "none", params.train.dense_units, params.train.dropout)
    rates = {}
    for phase, layers in (("frozen", 0), ("finetune", params.train.finetune.layers)):
        set_trainable_top(model, layers)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy")
        ds = iter(make_dataset(images, labels, batch, seed=1, augment=params.train.augment))
        for _ in range(warmup):
            model.train_on_batch(*next(ds))
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(*next(ds))
        rates[phase] = steps * batch / (time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "determinism.json")
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one(args.child == "on", args.steps, args.warmup)))
        return
    runs: dict[str, list[dict]] = {"on": [], "off": []}
    for i in range(args.pairs):
        for mode in ("on", "off"):
            done = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--steps", str(args.steps), "--warmup", str(args.warmup)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"pair {i + 1} deterministic {mode}: {runs[mode][-1]}", flush=True)
    medians = {
        mode: {phase: round(statistics.median(r[phase] for r in rs), 1) for phase in rs[0]} for mode, rs in runs.items()
    }
    from pneumo.core.io import write_json

    write_json(
        args.out,
        {
            "machine": machine(),
            "command": "python benchmarks/determinism.py" + (f" --pairs {args.pairs}" if args.pairs != 3 else ""),
            "steps": args.steps,
            "warmup": args.warmup,
            "img_s": medians,
            "runs": runs,
        },
    )
    for phase in medians["on"]:
        print(
            f"{phase}: {medians['on'][phase]:.1f} img/s deterministic, {medians['off'][phase]:.1f} img/s not "
            f"({medians['on'][phase] / medians['off'][phase] - 1:+.0%})"
        )


if __name__ == "__main__":
    main()
