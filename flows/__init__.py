"""Prefect flows over the pneumo library (orchestration only).

Every entry point (`python -m flows`, `pneumo-flow`, `python -m flows.pipeline|deploy`) imports
this package first, so the settings below are in the environment before Prefect reads them.
"""

import os

# Prefect's temporary server gets 20 s to start by default; a busy 2-core machine needed 17-23 s.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
