"""Start-up noise: TensorFlow's native lines are dropped from stderr; everything else passes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from support import REPO

NOISE_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795979787.287745    3529 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    "GPU will not be used.",
    "E0000 00:00:1795980019.129092    6950 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
    "I0000 00:00:1795979787.286675    3529 port.cc:153] oneDNN custom operations are on. You may see slightly",
]

SCRIPT = """
import os, sys
from pneumo.cli.quiet import filter_native_stderr
filter_native_stderr()
for line in {lines!r}:
    os.write(2, (line + "\\n").encode())
print("a real warning: keep me", file=sys.stderr)
os.write(2, b"native line that is not noise\\n")
os.write(2, b"last line without a newline")
"""


def _run(env_extra: dict[str, str] | None = None, script: str = SCRIPT.format(lines=NOISE_LINES)):
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_native_noise_is_dropped_and_the_rest_kept_in_order():
    done = _run()
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        "a real warning: keep me",
        "native line that is not noise",
        "last line without a newline",
    ]


def test_the_filter_can_be_turned_off_for_debugging():
    done = _run({"PNEUMO_RAW_STDERR": "1"})
    for line in NOISE_LINES:
        assert line in done.stderr


@pytest.mark.slow
def test_a_stage_command_loading_tensorflow_prints_no_cuda_or_absl_line(tmp_path):
    pytest.importorskip("tensorflow")
    # `pneumo evaluate` on a missing model loads TensorFlow's stack, then fails with its one-line error.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pneumo",
            "evaluate",
            "--model",
            str(tmp_path / "none.keras"),
            "--out",
            str(tmp_path / "eval"),
            "--params",
            str(REPO / "params.yaml"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "error:" in done.stderr
    for marker in ("absl::InitializeLog", "cuda drivers", "cuInit", "cpu_feature_guard", "oneDNN"):
        assert marker not in done.stderr
