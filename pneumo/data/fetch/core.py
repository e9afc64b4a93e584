"""`fetch`: source -> safe extraction -> normalised layout -> checks -> manifest -> swap into
data/raw -> `dvc add` -> manifest renamed into place, all under one lock on the repository.

Everything is built in a temporary folder beside data/raw, and the manifest in a temporary file
beside its own; the old tree, data.dvc and manifest stay in place until the new ones are
complete. After the swap, every step but `dvc add` is a rename (which needs no free space), and
any failure, a full disk included, puts the old tree, data.dvc, .gitignore and manifest back.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pneumo.core.io import swap, temp_beside
from pneumo.data.fetch import dvc, layout, manifest
from pneumo.data.fetch.archive import Limits
from pneumo.data.fetch.errors import FetchError
from pneumo.data.fetch.sources import LocalSource, Source, acquire, describe

log = logging.getLogger(__name__)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def lock_path(repo: Path, target: Path) -> Path:
    """The file fetches into one repository take turns on: in DVC's git-ignored tmp folder, or
    beside the data folder where there is no DVC."""
    if (repo / ".dvc").is_dir():
        return repo / ".dvc" / "tmp" / "pneumo-fetch.lock"
    return target.parent / f".{target.name}.fetch.lock"


@contextlib.contextmanager
def _locked(path: Path, repo: Path) -> Iterator[None]:
    """Hold the fetch lock for the whole transaction; a second fetch says so and waits."""
    from filelock import FileLock, Timeout  # DVC's own dependency; imported late to keep start-up fast

    lock = FileLock(str(path))
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.warning("another `pneumo fetch` is running in %s (lock %s); waiting for it to finish", repo, path)
            lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _writing(what: Path) -> Iterator[None]:
    """An OSError (a full disk, a read-only folder) becomes one line naming the file written."""
    try:
        yield
    except OSError as exc:
        hint = "; free some space and fetch again" if exc.errno == errno.ENOSPC else ""
        raise FetchError(f"{exc.filename or what}: {exc.strerror or exc}{hint}") from None


def _unswap(target: Path, old: Path | None, trash: Path) -> None:
    """Put the previous tree back (renames only)."""
    if target.exists():
        os.replace(target, trash)
    if old is not None:
        os.replace(old, target)


def _commit(
    tree: Path,
    target: Path,
    staging: Path,
    new_manifest: Path,
    manifest_abs: Path,
    repo: Path,
    dvc_file: Path,
    use_dvc: bool,
) -> str | None:
    """Swap the tree in, `dvc add` it, rename the manifest into place; or undo all three."""
    old = swap(tree, target, staging / "old")
    try:
        versioned = dvc.added(repo, target.relative_to(repo), dvc_file) if use_dvc else contextlib.nullcontext()
        with versioned as md5:
            os.replace(new_manifest, manifest_abs)
        return md5
    except BaseException:
        _unswap(target, old, staging / "failed")
        raise


def fetch(
    source: Source,
    *,
    repo: Path = Path("."),
    out: Path = Path("data/raw"),
    manifest_path: Path = Path("data/fetch_manifest.csv"),
    dvc_file: Path = Path("data.dvc"),
    use_dvc: bool = True,
    limits: Limits = Limits(),
    progress: bool | None = None,
    drive: Any = None,
) -> dict:
    """Fetch `source` into `repo/out` in the Kaggle layout and version it; returns the summary.

    Paths are relative to `repo` (absolute ones are taken as they are). On any failure the
    previous `out` folder, `dvc_file` and manifest are left as they were.
    """
    repo = Path(repo).resolve()
    target = (repo / out).resolve()
    manifest_abs = (repo / manifest_path).resolve()
    if use_dvc:
        dvc.require_repo(repo)
        if not _inside(target, repo):
            raise FetchError(f"{target}: outside the repository {repo}; DVC can version only folders inside it")
    if _inside(manifest_abs, target):
        raise FetchError(
            f"{manifest_abs}: inside {target}; the manifest must live outside the data folder "
            "so it does not change the data's hash"
        )
    follow = isinstance(source, LocalSource) and source.follow_symlinks
    with _writing(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(lock_path(repo, target), repo):
        # Beside the target: same file system, so the final swap is two renames.
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".fetch", dir=target.parent))
        new_manifest: Path | None = None
        try:
            with _writing(staging):
                got, ours = acquire(source, staging / "work", limits, progress, drive)
                # Messages about our temporary folder name the source instead; a local folder names itself.
                ours_dir = _inside(got.resolve(), staging.resolve())
                plan = layout.plan(got, describe(source) if ours_dir else None, follow_symlinks=follow)
                tree = layout.materialise(plan, staging / "tree", move=ours and ours_dir)
                rows = manifest.scan(tree, progress)
            summary = manifest.summarise(rows, tree)
            with _writing(manifest_abs):
                new_manifest = temp_beside(manifest_abs)
                manifest.write_rows(rows, new_manifest)
            with _writing(repo / dvc_file if use_dvc else target):
                md5 = _commit(tree, target, staging, new_manifest, manifest_abs, repo, dvc_file, use_dvc)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if new_manifest is not None:
                new_manifest.unlink(missing_ok=True)
    summary.update(
        {
            "out": str(target),
            "source": type(source).__name__.removesuffix("Source").lower(),
            "ignored": plan.ignored,
            "manifest": str(manifest_abs),
            "dvc_file": str(repo / dvc_file) if use_dvc else None,
            "dvc_md5": md5,
        }
    )
    log.info("fetched %d images into %s", summary["total"], target)
    return summary


def format_summary(summary: dict) -> str:
    """A short human-readable report (the CLI prints it; the dict is also printable as JSON)."""
    lines = [
        f"fetched {summary['total']} images ({summary['bytes'] / 1e6:.1f} MB) from {summary['source']} "
        f"into {summary['out']}" + (" [SYNTHETIC, not medical data]" if summary["synthetic"] else "")
    ]
    for split, counts in summary["counts"].items():
        lines.append(f"  {split:5s} " + "  ".join(f"{label} {n}" for label, n in counts.items()))
    lines.append(
        f"duplicates: {summary['duplicate_groups']} groups of byte-identical files "
        f"({summary['duplicate_groups_across_splits']} across splits, "
        f"{summary['duplicate_groups_with_two_labels']} with two labels)"
    )
    lines.append(f"unreadable: {len(summary['unreadable'])}")
    lines += [f"  {u['file']}: {u['error']}" for u in summary["unreadable"][:20]]
    if summary["ignored"]:
        lines.append("left out: " + ", ".join(summary["ignored"]))
    lines.append(f"manifest: {summary['manifest']}")
    if summary["dvc_file"]:
        lines.append(f"dvc: {summary['dvc_file']} md5 {summary['dvc_md5']} (commit it with git; `dvc push` to share)")
    return "\n".join(lines)
