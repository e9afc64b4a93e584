"""What a newcomer's first hour costs: the README's commands on a fresh clone (a benchmark, not a test).

    python benchmarks/first_run.py [--load 2] [--tests] [--out benchmarks/results/first_run.json]

Clones this repository's HEAD into a temporary folder and runs the README's first command there
(set up a virtual environment, `pip install -e .`, then `python -m flows run`), timing the install
and the main job apart; with `--tests`, the README's test command too. `--load N` keeps N other
CPU-bound processes running the whole time, as on a busy machine. It records whether each command
passed on its first try, the disk the environment takes, and any TensorFlow/CUDA/absl start-up
line the main job printed (there should be none). The README's first-run table is rendered from
the JSON this writes. pip's wheel cache is used as it is on this machine, so the install time
leaves out downloading; the environment's size says how much a first download is.
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import machine  # noqa: E402 - benchmarks/machine.py, beside this script

from pneumo.core.io import write_json  # noqa: E402

# Native start-up lines that must not reach a user (see pneumo/cli/quiet.py).
NOISE = re.compile(r"absl::InitializeLog|cuda drivers|cuInit|cudart_stub|cpu_feature_guard|oneDNN custom operations")


def readme_commands(readme: Path) -> list[str]:
    """The README's two commands: the first two ```bash blocks of its "Two commands" section."""
    text = readme.read_text()
    section = text.split("## Two commands", 1)[1]
    blocks = re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)
    if len(blocks) < 2:
        raise SystemExit(f"{readme}: expected two ```bash blocks under '## Two commands'")
    return [blocks[0].strip(), blocks[1].strip()]


def _burn() -> None:  # pragma: no cover - a load generator
    while True:
        pass


def timed(command: str, cwd: Path, log: Path) -> dict:
    """Run `command` with bash in `cwd`; wall seconds, exit code, and its output kept in `log`."""
    start = time.perf_counter()
    with log.open("w") as fh:
        code = subprocess.run(["bash", "-c", command], cwd=cwd, stdout=fh, stderr=subprocess.STDOUT).returncode
    return {"seconds": round(time.perf_counter() - start, 1), "exit_code": code}


def du_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", type=int, default=0, help="other CPU-bound processes to run meanwhile")
    parser.add_argument("--tests", action="store_true", help="also time the README's test command")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "first_run.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone")
    args = parser.parse_args()

    run_cmd, test_cmd = readme_commands(ROOT / "README.md")
    setup, _, main_job = run_cmd.rpartition(" && ")
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="pneumo-first-run-"))
    burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(args.load)]
    for b in burners:
        b.start()
    try:
        clone = tmp / "pneumo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        if (ROOT.parent / "shared").is_dir() and not (tmp / "shared").exists():
            (tmp / "shared").symlink_to(ROOT.parent / "shared")
        env_home = clone  # the README's commands run from the clone's root
        results = {"install": timed(setup, env_home, tmp / "install.log")}
        print(f"install: {results['install']}", flush=True)
        results["main_job"] = timed(f"{setup.split(' && ')[1]} && {main_job}", env_home, tmp / "main_job.log")
        output = (tmp / "main_job.log").read_text(errors="replace")
        results["main_job"]["noise_lines"] = [line for line in output.splitlines() if NOISE.search(line)][:10]
        print(f"main job: {results['main_job']}", flush=True)
        if args.tests:
            results["tests"] = timed(test_cmd, env_home, tmp / "tests.log")
            last = [line for line in (tmp / "tests.log").read_text().splitlines() if " passed" in line][-1:]
            results["tests"]["summary"] = last[0].strip("= ") if last else ""
            print(f"tests: {results['tests']}", flush=True)
        venv_gb = du_bytes(clone / ".venv") / 1e9
    finally:
        for b in burners:
            b.terminate()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept: {tmp}")
    write_json(
        args.out,
        {
            "machine": machine(),
            "command": "python benchmarks/first_run.py"
            + (f" --load {args.load}" if args.load else "")
            + (" --tests" if args.tests else ""),
            "commit": head,
            "load": args.load,
            "pip_cache": "warm (downloads not timed)",
            "venv_gb": round(venv_gb, 2),
            **results,
        },
    )
    failed = [k for k, r in results.items() if r["exit_code"]]
    if failed:
        raise SystemExit(f"failed on the first try: {', '.join(failed)} (logs kept only with --keep)")


if __name__ == "__main__":
    main()
