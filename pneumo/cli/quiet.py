"""Start-up noise off: TensorFlow's native log lines that read as errors on a machine without a GPU.

TensorFlow's C++ side prints "Could not find cuda drivers", "failed call to cuInit: UNKNOWN ERROR
(303)", CPU-feature and oneDNN notes to the process's stderr file descriptor while it loads,
before `TF_CPP_MIN_LOG_LEVEL` is read, so no setting hides them. The commands route file
descriptor 2 through a pipe and drop only those known lines; everything else (Python warnings,
logs, tracebacks) passes through unchanged, line by line. What the noise meant is said once, in
plain words, by the stage that cares (train logs the device it trains on).
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

# Lines TensorFlow/absl print at start-up that carry nothing for a user (device choice is logged by train).
NOISE = re.compile(
    rb"All log messages before absl::InitializeLog\(\) is called"
    rb"|cudart_stub\.cc|cuda_platform\.cc|cuda_executor\.cc|cuda_diagnostics\.cc|failed call to cuInit"
    rb"|cpu_feature_guard\.cc|To enable the following instructions: |rebuild TensorFlow with the appropriate"
    rb"|port\.cc:\d+\] oneDNN custom operations are on"
    rb"|Unable to register cu(DNN|FFT|BLAS) factory|TF-TRT Warning|computation placer already registered"
    rb"|absl::InitializeLog|This TensorFlow binary is optimized to use available CPU instructions"
)

_installed: threading.Thread | None = None


def _pump(read_fd: int, write_fd: int) -> None:
    with os.fdopen(read_fd, "rb", buffering=0) as source:
        pending = b""
        while chunk := source.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not NOISE.search(line))
            if kept:
                os.write(write_fd, kept)
        if pending and not NOISE.search(pending):
            os.write(write_fd, pending)


def filter_native_stderr() -> None:
    """Route fd 2 through a filter that drops TensorFlow's start-up noise (idempotent).

    Off with PNEUMO_RAW_STDERR=1 (to see every native line while debugging a GPU set-up).
    """
    global _installed
    if _installed is not None or os.environ.get("PNEUMO_RAW_STDERR") == "1":
        return
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
    except OSError:  # no usable fd 2 (a closed stderr): nothing to filter
        return
    thread = threading.Thread(target=_pump, args=(read_fd, original), name="pneumo-stderr", daemon=True)
    thread.start()
    _installed = thread

    def restore() -> None:
        # Put the real stderr back, so the pipe's last writer closes and the pump drains every line.
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)
        thread.join(timeout=5)

    atexit.register(restore)
