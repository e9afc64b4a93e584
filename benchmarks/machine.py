"""What every benchmark records about the machine it ran on (scripts here import it by name:
`python benchmarks/<script>.py` puts this folder first on sys.path)."""

from __future__ import annotations

import os
import platform


def machine() -> dict[str, object]:
    """CPU count, processor and Python version of this machine."""
    return {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
