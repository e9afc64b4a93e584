"""Fixtures for the flow tests: a Prefect test server, and one workspace trained by the flow itself.

The workspace is built once per session (fetch → four `dvc repro` stages → first promotion,
about a minute on two cores); tests that change it work on a copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from flows_support import TINY, TINY_SOURCE

from support import REPO


@pytest.fixture(scope="session")
def prefect_server():
    """Prefect's test harness: a temporary SQLite server for this session (slow CI: generous timeout)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def flow_workspace(tmp_path_factory, keras_home, prefect_server) -> dict:
    """A workspace after one full `pipeline` run on tiny synthetic data (no champion before it)."""
    from flows.pipeline import pipeline
    from pneumo.ops import workspace

    root = workspace.create(tmp_path_factory.mktemp("flow") / "ws", TINY, source=REPO)
    state = pipeline(
        str(root), source="synthetic", source_options=TINY_SOURCE, fetch_retry_delay=0.1, return_state=True
    )
    return {"root": root, "state": state}


@pytest.fixture
def ws_copy(flow_workspace, tmp_path) -> Path:
    """A private copy of the trained workspace (git, DVC cache, outputs and champion included)."""
    if not flow_workspace["state"].is_completed():
        pytest.fail(f"the session's first pipeline run failed: {flow_workspace['state'].message}")
    dest = tmp_path / "ws"
    shutil.copytree(flow_workspace["root"], dest, symlinks=True)
    return dest
