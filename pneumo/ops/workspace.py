"""A self-contained pipeline workspace: a git + DVC repo holding pneumo's code, DAG and params.

The demo runs in one, so a first run never touches the project's committed metrics, and the
tests build the same thing in a temporary folder. The DAG is copied from the project's
dvc.yaml, never restated. A stage runs there as `dvc repro --single-item STAGE`, and a failed
one leaves the previous outputs in place.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from pneumo.core import proc

PROJECT_FILES = ("dvc.yaml", "params.yaml")
LOCK_FILE = ".pneumo.lock"
# Outputs of runs and tools that are not source: kept out of the workspace's git.
GIT_IGNORED = ("/runs/", "/diff/", f"/{LOCK_FILE}")

_held: dict[Path, int] = {}  # locks this process holds, so a flow inside the command that locked reenters


class WorkspaceBusy(RuntimeError):
    """Another process holds the workspace (a flow run is under way there)."""


class StageFailed(RuntimeError):
    """A `dvc repro` stage exited non-zero (its previous outputs were put back)."""


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
        raise WorkspaceBusy(
            f"workspace {root} is in use by another flow run (lock {path} held by pid {holder}); "
            "wait for it to finish, or use another --workdir"
        ) from None
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
    here = Path(__file__).resolve().parents[2]  # pneumo/ops/workspace.py -> the checkout
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


def create(target: str | Path, params_overrides: dict[str, Any] | None = None, source: Path | None = None) -> Path:
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
        proc.git(target, "init", "-q")
    if not (target / ".dvc").exists():
        proc.dvc(target, "init", "-q")
        proc.dvc(target, "config", "core.analytics", "false")
    if "autostage" not in (target / ".dvc" / "config").read_text():
        # DVC stages dvc.lock and its .gitignore edits itself, instead of printing "git add ..." hints
        # into every stage's log (the workspace's git is bookkeeping, nobody commits there by hand).
        proc.dvc(target, "config", "core.autostage", "true")
    ignore_in_git(target, *GIT_IGNORED)
    return target


def uncached_outs(root: Path, stage: str) -> list[Path]:
    """Outputs of `stage` that DVC does not cache (`cache: false`): a failed run cannot restore them."""
    from dvc.repo import Repo  # DVC's Python API takes about a second to import; only a stage run needs it

    root = root.resolve()
    # An absolute target: DVC resolves a bare stage name against the process's cwd, not the repo.
    with Repo(str(root)) as repo:
        (found,) = repo.stage.collect(f"{root / 'dvc.yaml'}:{stage}")
        outs = [Path(o.fs_path).resolve() for o in found.outs if not o.use_cache]
    outside = [p for p in outs if not p.is_relative_to(root)]
    if outside:
        raise RuntimeError(f"stage {stage!r}: outputs outside the workspace {root}: {outside}")
    return outs


def _copy(source: Path, target: Path) -> None:
    """A file or a whole folder (an uncached output may be either), replacing what `target` held."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


def repro_stage(root: str | Path, stage: str, each: Callable[[str], None] = lambda line: None) -> bool:
    """`dvc repro --single-item STAGE` in the workspace, each non-blank line of its output handed to
    `each`; True if the stage ran, False if it was up to date.

    DVC deletes a stage's outputs before running it. On failure the cached ones are checked out
    again (dvc.lock still names them), the uncached ones are copied back, and StageFailed says
    what went wrong with the end of DVC's output.
    """
    root = Path(root).resolve()
    backup = root / ".dvc" / "tmp" / f"pneumo-backup-{stage}"
    shutil.rmtree(backup, ignore_errors=True)
    saved = [path for path in uncached_outs(root, stage) if path.exists()]
    for path in saved:
        _copy(path, backup / path.relative_to(root))
    ran, tail = False, deque(maxlen=30)

    def line(text: str) -> None:
        nonlocal ran
        if text.strip():
            ran = ran or text.startswith(f"Running stage '{stage}'")
            tail.append(text)
            each(text)

    try:
        code = proc.stream([*proc.DVC, "repro", "--single-item", stage], root, line)
        if code:
            restored = proc.dvc(root, "checkout", "--force", stage, check=False)
            for path in saved:
                _copy(backup / path.relative_to(root), path)
            checkout = "ok" if restored.returncode == 0 else restored.stderr.strip()[-300:]
            raise StageFailed(
                f"stage {stage!r} failed in {root} (`dvc repro --single-item {stage}` exit {code}); "
                f"previous outputs restored (dvc checkout: {checkout}):\n" + "\n".join(tail)
            )
    finally:
        shutil.rmtree(backup, ignore_errors=True)
    return ran


def provenance(root: str | Path) -> dict[str, Any]:
    """What a promoted model came from: the export stage's outputs in dvc.lock and the data's md5."""
    root = Path(root)
    info: dict[str, Any] = {}
    lock = root / "dvc.lock"
    if lock.is_file():
        outs = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get("export", {}).get("outs", [])
        info["dvc_lock_export_outs"] = {o["path"]: o.get("md5") for o in outs}
    if (root / "data.dvc").is_file():
        info["data_md5"] = ((yaml.safe_load((root / "data.dvc").read_text()) or {}).get("outs") or [{}])[0].get("md5")
    return info
