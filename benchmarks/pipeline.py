"""Wall time and peak memory of each `dvc.yaml` stage on this machine (a benchmark, not a test).

    python benchmarks/pipeline.py [--out benchmarks/results/pipeline.json] [--force]

Runs `dvc repro --single-item <stage>` for every stage in DAG order, each in its own process
tree, and records wall seconds and the peak resident memory of the largest process (the stage
itself). The timing table of docs/benchmarks.md is rendered from the JSON this writes (`pneumo readme`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import yaml  # noqa: E402
from machine import machine  # noqa: E402 - benchmarks/machine.py, beside this script

from pneumo.core.io import write_json  # noqa: E402
from pneumo.core.tables import flatten  # noqa: E402
from pneumo.ops.workspace import stages  # noqa: E402


def measure(cmd: list[str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise SystemExit(f"{' '.join(cmd)} exited with {code}")
    return {
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pipeline.json"))
    parser.add_argument("--force", action="store_true", help="rerun stages that are up to date")
    args = parser.parse_args()
    results = {}
    for stage in stages(Path.cwd()):
        cmd = ["dvc", "repro", "--single-item", stage] + (["--force"] if args.force else [])
        results[stage] = measure(cmd)
        print(f"{stage}: {results[stage]}", flush=True)
    write_json(
        args.out,
        {
            "machine": machine(),
            "command": "python benchmarks/pipeline.py" + (" --force" if args.force else ""),
            "params": flatten(yaml.safe_load(Path("params.yaml").read_text())),  # what was timed
            "stages": results,
            "total_seconds": round(sum(r["seconds"] for r in results.values()), 1),
        },
    )


if __name__ == "__main__":
    main()
