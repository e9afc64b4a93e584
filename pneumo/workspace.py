"""A self-contained pipeline workspace: a git + DVC repo holding pneumo's code, DAG and params.

The demo runs in one, so a first run never touches the project's committed metrics, and the
tests build the same thing in a temporary folder. The DAG is copied from the project's
dvc.yaml, never restated.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

PROJECT_FILES = ("dvc.yaml", "params.yaml")


def project_root() -> Path:
    """The checkout pneumo runs from (the folder holding dvc.yaml beside the package)."""
    here = Path(__file__).resolve().parents[1]
    if (here / "dvc.yaml").is_file():
        return here
    if (Path.cwd() / "dvc.yaml").is_file():
        return Path.cwd()
    raise FileNotFoundError("pneumo: cannot find dvc.yaml; run from the project's checkout")


def stages(root: Path | None = None) -> list[str]:
    """dvc.yaml's stage names in DAG order (dvc.yaml lists each stage after those it needs)."""
    dvc_yaml = (root or project_root()) / "dvc.yaml"
    return list(yaml.safe_load(dvc_yaml.read_text())["stages"])


def _deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def run(cwd: Path, *cmd: str) -> subprocess.CompletedProcess:
    """Run a command in the workspace with telemetry off; raise with its output on failure."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd} (exit {done.returncode}):\n"
                           f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def create(target: str | Path, params_overrides: dict[str, Any] | None = None,
           source: Path | None = None) -> Path:
    """Make `target` a git + DVC repo with pneumo/, dvc.yaml and params.yaml (overrides applied)."""
    source = source or project_root()
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    if (target / "pneumo").exists():
        shutil.rmtree(target / "pneumo")
    shutil.copytree(source / "pneumo", target / "pneumo", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(source / "dvc.yaml", target / "dvc.yaml")
    params = yaml.safe_load((source / "params.yaml").read_text())
    _deep_update(params, params_overrides or {})
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if not (target / ".git").exists():
        run(target, "git", "init", "-q")
    if not (target / ".dvc").exists():
        run(target, "dvc", "init", "-q")
        run(target, "dvc", "config", "core.analytics", "false")
    return target
