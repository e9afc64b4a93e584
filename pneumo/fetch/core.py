"""`fetch`: source -> safe extraction -> normalised layout -> checks -> swap into data/raw ->
`dvc add` -> manifest. Everything is built in a temporary folder beside data/raw; the old tree
and data.dvc stay in place until the new tree is complete, and come back if `dvc add` fails."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pneumo.fetch import dvc, layout, manifest
from pneumo.fetch.archive import Limits
from pneumo.fetch.errors import FetchError
from pneumo.fetch.sources import Source, acquire, describe
from pneumo.io import swap

log = logging.getLogger(__name__)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _unswap(target: Path, old: Path | None, trash: Path) -> None:
    """Put the previous tree back (after a failed `dvc add`)."""
    if target.exists():
        os.replace(target, trash)
    if old is not None:
        os.replace(old, target)


def fetch(source: Source, *, repo: Path = Path("."), out: Path = Path("data/raw"),
          manifest_path: Path = Path("data/fetch_manifest.csv"), dvc_file: Path = Path("data.dvc"),
          use_dvc: bool = True, limits: Limits = Limits(), progress: bool | None = None,
          drive: Any = None) -> dict:
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
        raise FetchError(f"{manifest_abs}: inside {target}; the manifest must live outside the data folder "
                         "so it does not change the data's hash")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Beside the target: same file system, so the final swap is two renames.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".fetch", dir=target.parent))
    try:
        got, ours = acquire(source, staging / "work", limits, progress, drive)
        # Messages about our temporary folder name the source instead; a local folder names itself.
        plan = layout.plan(got, describe(source) if _inside(got.resolve(), staging.resolve()) else None)
        tree = layout.materialise(plan, staging / "tree", move=ours and _inside(got.resolve(), staging.resolve()))
        rows = manifest.scan(tree, progress)
        summary = manifest.summarise(rows, tree)
        old = swap(tree, target, staging / "old")
        try:
            md5 = dvc.add(repo, target.relative_to(repo), dvc_file) if use_dvc else None
        except BaseException:
            _unswap(target, old, staging / "failed")
            raise
        manifest.write_csv(rows, manifest_abs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary.update({
        "out": str(target),
        "source": type(source).__name__.removesuffix("Source").lower(),
        "ignored": plan.ignored,
        "manifest": str(manifest_abs),
        "dvc_file": str(repo / dvc_file) if use_dvc else None,
        "dvc_md5": md5,
    })
    log.info("fetched %d images into %s", summary["total"], target)
    return summary


def format_summary(summary: dict) -> str:
    """A short human-readable report (the CLI prints it; the dict is also printable as JSON)."""
    lines = [f"fetched {summary['total']} images ({summary['bytes'] / 1e6:.1f} MB) from {summary['source']} "
             f"into {summary['out']}" + (" [SYNTHETIC, not medical data]" if summary["synthetic"] else "")]
    for split, counts in summary["counts"].items():
        lines.append(f"  {split:5s} " + "  ".join(f"{label} {n}" for label, n in counts.items()))
    lines.append(f"duplicates: {summary['duplicate_groups']} groups of byte-identical files "
                 f"({summary['duplicate_groups_across_splits']} across splits, "
                 f"{summary['duplicate_groups_with_two_labels']} with two labels)")
    lines.append(f"unreadable: {len(summary['unreadable'])}")
    lines += [f"  {u['file']}: {u['error']}" for u in summary["unreadable"][:20]]
    if summary["ignored"]:
        lines.append("left out: " + ", ".join(summary["ignored"]))
    lines.append(f"manifest: {summary['manifest']}")
    if summary["dvc_file"]:
        lines.append(f"dvc: {summary['dvc_file']} md5 {summary['dvc_md5']} (commit it with git; `dvc push` to share)")
    return "\n".join(lines)
