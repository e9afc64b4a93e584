"""Latency, throughput, size and test AUC of the Keras model and each LiteRT file (a script, not a test).

    python benchmarks/latency.py --model-dir models --prepared data/prepared

Single-image latency (p50, p95 over --repeats calls, after --warmup) and batch throughput
(images/s at --batch) on 1 and 2 threads, and the test-split AUC each file gives. Prints a
table and writes benchmarks/results/latency.json (rendered into docs/benchmarks.md by
`pneumo readme`). Keras threads are set through TensorFlow's intra/inter-op settings, in a fresh
process per thread count (they cannot change once set).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

KERAS_NAMES = ("model.h5", "model.keras")


def _measure(predict, images: np.ndarray, batch: int, warmup: int, repeats: int) -> dict:
    from pneumo.core.images import to_rgb

    one = to_rgb(images[:1])
    for _ in range(warmup):
        predict(one)
    times = []
    for i in range(repeats):
        x = to_rgb(images[i % len(images)][None])
        start = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - start)
    batch_x = to_rgb(images[:batch])
    predict(batch_x)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 3.0 or n == 0:
        predict(batch_x)
        n += len(batch_x)
    throughput = n / (time.perf_counter() - start)
    return {
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p95_ms": float(np.percentile(times, 95) * 1e3),
        "throughput_img_s": float(throughput),
        "batch": int(len(batch_x)),
    }


def _auc(predict, images: np.ndarray, labels: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    from pneumo.core.images import predict_gray

    if len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, predict_gray(predict, images)))


def run_one(model: Path, prepared: Path, threads: int, batch: int, warmup: int, repeats: int) -> dict:
    """Measure one model file at one thread count (in this process)."""
    from pneumo.core.cache import load_split

    images, labels, _ = load_split(prepared, "test")
    if model.suffix == ".tflite":
        from pneumo.serving.litert import LiteRTModel

        predict = LiteRTModel(model, num_threads=threads).predict
    else:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        from pneumo.nn.model import load

        keras_model = load(model)
        predict = keras_model.predict_on_batch  # type: ignore[assignment]
    result = {"model": model.name, "threads": threads, **_measure(predict, images, batch, warmup, repeats)}
    result["test_auc"] = _auc(predict, images, labels) if threads == 1 else None
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latency.json"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # child mode: one file, one thread count
    args = parser.parse_args(argv)

    if args.one is not None:
        print(json.dumps(run_one(args.one, args.prepared, args.threads[0], args.batch, args.warmup, args.repeats)))
        return 0

    models = [args.model_dir / n for n in KERAS_NAMES if (args.model_dir / n).is_file()][:1]
    models += sorted(args.model_dir.glob("*.tflite"))
    if not models:
        print(f"no model.h5/model.keras or *.tflite in {args.model_dir}", file=sys.stderr)
        return 2
    rows = []
    from pneumo.core.proc import child_env

    env = child_env({"TF_CPP_MIN_LOG_LEVEL": "3"})
    for model in models:
        for threads in args.threads:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                str(model),
                "--prepared",
                str(args.prepared),
                "--threads",
                str(threads),
                "--batch",
                str(args.batch),
                "--warmup",
                str(args.warmup),
                "--repeats",
                str(args.repeats),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if done.returncode:
                print(done.stderr[-3000:], file=sys.stderr)
                return done.returncode
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["mb"] = model.stat().st_size / 1e6
            rows.append(row)
    aucs = {r["model"]: r["test_auc"] for r in rows if r["test_auc"] is not None}
    print(f"{'model':<22} {'MB':>6} {'thr':>3} {'p50 ms':>8} {'p95 ms':>8} {'img/s':>8} {'test AUC':>9}")
    for r in rows:
        auc = aucs.get(r["model"])
        print(
            f"{r['model']:<22} {r['mb']:>6.2f} {r['threads']:>3} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} "
            f"{r['throughput_img_s']:>8.1f} {'n/a' if auc is None else f'{auc:.4f}':>9}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                },
                "command": " ".join(["python benchmarks/latency.py", *(sys.argv[1:] if argv is None else argv)]),
                "model_dir": str(args.model_dir),
                "prepared": str(args.prepared),
                "batch": args.batch,
                "repeats": args.repeats,
                "results": rows,
                "test_auc": aucs,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
