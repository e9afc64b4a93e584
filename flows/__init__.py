"""Prefect flows over the pneumo library (orchestration only).

The one entry point, `python -m flows` (also installed as `pneumo-flow`), imports this package
first, so the settings below are in the environment before Prefect reads them.
"""

import os

from pneumo.core.proc import quiet_environ

quiet_environ()  # no telemetry from Prefect, DVC or anything they start
# Prefect's temporary server gets 20 s to start by default; a busy 2-core machine needed 17-23 s.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
