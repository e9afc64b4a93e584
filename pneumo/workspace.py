"""A self-contained pipeline workspace: a git + DVC repo holding pneumo's code, DAG and params.

The demo runs in one, so a first run never touches the project's committed metrics, and the
tests build the same thing in a temporary folder. The DAG is copied from the project's
dvc.yaml, never restated.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

PROJECT_FILES = ("dvc.yaml", "params.yaml")
LOCK_FILE = ".pneumo.lock"
# Outputs of runs and tools that are not source: kept out of the workspace's git.
GIT_IGNORED = ("/runs/", "/diff/", f"/{LOCK_FILE}")

_held: dict[Path, int] = {}  # locks this process holds, so a flow inside the command that locked reenters


class WorkspaceBusy(RuntimeError):
    """Another process holds the workspace (a flow run is under way there)."""


@contextmanager
def lock(root: str | Path) -> Iterator[Path]:
    """Hold the workspace for a whole flow run; a second process refuses at once, naming the holder.

    An advisory `flock` on `<root>/.pneumo.lock`, which holds the holder's pid. The kernel drops it
    when the holder dies, even by SIGKILL, so a crash never leaves the workspace locked.
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    if path in _held:
        _held[path] += 1
        try:
            yield path
        finally:
            _held[path] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise WorkspaceBusy(f"workspace {root} is in use by another flow run (lock {path} held by pid {holder}); "
                            "wait for it to finish, or use another --workdir") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[path] = 1
        yield path
    finally:
        _held.pop(path, None)
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def ignore_in_git(root: Path, *patterns: str) -> None:
    """Append the missing `patterns` to the workspace's .gitignore."""
    ignore = root / ".gitignore"
    have = ignore.read_text().splitlines() if ignore.is_file() else []
    missing = [p for p in patterns if p not in have]
    if missing:
        with ignore.open("a") as fh:
            fh.write("".join(f"{m}\n" for m in missing))


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
    if "autostage" not in (target / ".dvc" / "config").read_text():
        # DVC stages dvc.lock and its .gitignore edits itself, instead of printing "git add ..." hints
        # into every stage's log (the workspace's git is bookkeeping, nobody commits there by hand).
        run(target, "dvc", "config", "core.autostage", "true")
    ignore_in_git(target, *GIT_IGNORED)
    return target
