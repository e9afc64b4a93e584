"""`pneumo diff [BASE]`: what a change does to params, metrics and curves, as markdown (for a PR).

Params and metrics come from `dvc params diff` / `dvc metrics diff` (BASE against the
workspace), with the champion's numbers beside them. The ROC and PR curves are cached DVC
outputs, not in git: BASE's are read through DVC at that revision (`dvc.api.read`, from the
local cache or the default remote), the workspace's from disk, and drawn with matplotlib so the
pictures work offline. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from pneumo.core import paths, proc
from pneumo.core.tables import lookup_number, markdown_table
from pneumo.ops import gate

CURVES = {
    "roc": ("fpr", "tpr", "ROC", "False positive rate", "True positive rate (sensitivity)"),
    "pr": ("recall", "precision", "Precision-Recall", "Recall (sensitivity)", "Precision"),
}


class DiffError(RuntimeError):
    """A git or DVC command `pneumo diff` needs failed."""


@contextmanager
def _as_diff_error() -> Iterator[None]:
    try:
        yield
    except proc.CommandError as exc:
        raise DiffError(str(exc)) from exc


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return str(value)


def _change(old: Any, new: Any) -> str:
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
        return f"{new - old:+.4g}"
    return "-"


def params_rows(repo: Path, base: str) -> list[dict]:
    """Changed params: [{"param", "old", "new"}] (dvc params diff BASE)."""
    rows = []
    for file, changes in proc.dvc_json(repo, "params", "diff", base).items():
        for key, d in sorted(changes.items()):
            rows.append(
                {"param": key if file == "params.yaml" else f"{file}:{key}", "old": d.get("old"), "new": d.get("new")}
            )
    return rows


def metrics_rows(
    repo: Path,
    base: str,
    champion: dict | None,
    always: tuple[str, ...] = gate.DEFAULT_METRICS + gate.INFO_METRICS,
    metrics_file: str = paths.METRICS,
) -> list[dict]:
    """Metrics that changed, plus the gate's metrics always: [{"metric", "old", "new", "change", "champion"}]."""
    every = proc.dvc_json(repo, "metrics", "diff", base, "--all", "--targets", metrics_file)
    entries = next(iter(every.values()), {}) if every else {}
    rows = []
    for key, d in entries.items():
        if key.startswith("params."):  # evaluate echoes its params; the params table shows them
            continue
        old, new = d.get("old"), d.get("new")
        if old == new and key not in always:
            continue
        rows.append(
            {
                "metric": key,
                "old": old,
                "new": new,
                "change": _change(old, new),
                "champion": lookup_number(champion, key) if champion else None,
            }
        )
    order = {k: i for i, k in enumerate(always)}
    return sorted(rows, key=lambda r: (order.get(r["metric"], len(order)), r["metric"]))


def read_curve(repo: Path, rev: str | None, relpath: str):
    """A plot CSV as a DataFrame: at `rev` through DVC, or from the workspace (rev None); None if absent."""
    import pandas as pd  # inside: the CLI imports this module for every command; pandas loads slowly

    if rev is None:
        path = repo / relpath
        return pd.read_csv(path) if path.is_file() else None
    import dvc.api  # inside: DVC loads slowly and only a base revision needs it

    try:
        return pd.read_csv(io.StringIO(dvc.api.read(relpath, repo=str(repo), rev=rev)))
    except Exception:  # not in the cache or remote, not in that revision, no such rev: say so, don't fail
        return None


def missing_curve_hint(repo: Path) -> str:
    """What to do about a curve that is not on disk: pull it where a remote exists, else reproduce it."""
    remotes = proc.dvc(repo, "remote", "list").stdout.strip()
    if remotes:
        return "run `dvc pull` (remote: " + remotes.split()[0] + ") or `dvc repro`"
    return (
        "no DVC remote is configured, so nothing can be pulled: run `dvc repro` to reproduce it, "
        "or configure a remote (docs/data.md, `pneumo remote add`) and `dvc push` from where it was made"
    )


def plot_curves(repo: Path, base: str, out: Path, split: str = "test") -> dict[str, Path | None]:
    """One PNG per curve with both revisions; returns {curve: png or None where neither side has it}."""
    import matplotlib  # inside: only drawing needs it (start-up of every CLI command)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: dict[str, Path | None] = {}
    for name, (x, y, title, xlabel, ylabel) in CURVES.items():
        rel = f"{paths.PLOTS}/{name}_{split}.csv"
        sides = [(base, read_curve(repo, base, rel), "--"), ("workspace", read_curve(repo, None, rel), "-")]
        if all(frame is None for _, frame, _ in sides):
            written[name] = None
            continue
        fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
        for label, frame, style in sides:
            if frame is not None:
                ax.plot(frame[x], frame[y], style, label=label, drawstyle="steps-post" if name == "pr" else None)
        if name == "roc":
            ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=0.8)
        ax.set(title=f"{title} ({split})", xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(loc="lower right" if name == "roc" else "lower left")
        fig.tight_layout()
        png = out / f"{name}_{split}.png"
        fig.savefig(png)
        plt.close(fig)
        written[name] = png
    return written


def _table(head: list[str], rows: list[list[str]]) -> str:
    """Names left, numbers right."""
    return markdown_table(head, rows, "l" + "r" * (len(head) - 1))


def diff(
    base: str = "HEAD",
    repo: str | Path = ".",
    out: str | Path = "diff",
    champion_dir: str | Path = "champion",
    split: str = "test",
) -> dict:
    """Write `out`/report.md and the curve PNGs; return {"markdown", "report", "pngs", "params", "metrics"}."""
    repo = Path(repo).resolve()
    out = Path(out) if Path(out).is_absolute() else repo / out
    out.mkdir(parents=True, exist_ok=True)
    champion = gate.read_champion(Path(champion_dir) if Path(champion_dir).is_absolute() else repo / champion_dir)
    with _as_diff_error():
        short = proc.git(repo, "rev-parse", "--short", base).strip()
        params = params_rows(repo, base)
        metrics = metrics_rows(repo, base, champion)
        pngs = plot_curves(repo, base, out, split)
        hint = missing_curve_hint(repo) if not all(pngs.values()) else ""

    parts = [f"## pneumo diff: `{base}` ({short}) → workspace", ""]
    parts += ["### Params", ""]
    parts += [
        _table(["param", base, "workspace"], [[r["param"], _num(r["old"]), _num(r["new"])] for r in params])
        if params
        else "No parameter changed."
    ]
    parts += ["", f"### Metrics (`{paths.METRICS}`)", ""]
    champ_note = "" if champion else " (no champion yet)"
    parts += [
        _table(
            ["metric", base, "workspace", "change", "champion" + champ_note],
            [[r["metric"], _num(r["old"]), _num(r["new"]), r["change"], _num(r["champion"])] for r in metrics],
        )
        if metrics
        else "No metrics found."
    ]
    parts += ["", f"### Curves ({split})", ""]
    for name, png in pngs.items():
        title = CURVES[name][2]
        parts.append(
            f"![{title}]({png.name})"
            if png
            else f"{title}: no `{paths.PLOTS}/{name}_{split}.csv` at {base} or in the workspace ({hint})."
        )
    markdown = "\n".join(parts) + "\n"
    (out / "report.md").write_text(markdown)
    return {"markdown": markdown, "report": out / "report.md", "pngs": pngs, "params": params, "metrics": metrics}


def diff_command(
    base: Annotated[str, typer.Argument(help="Revision to compare the workspace with (branch, tag, commit).")] = "HEAD",
    repo: Annotated[Path, typer.Option(help="Repository root (git + DVC).")] = Path("."),
    out: Annotated[Path, typer.Option(help="Folder for report.md and the curve PNGs (relative to --repo).")] = Path(
        "diff"
    ),
    champion: Annotated[
        Path, typer.Option(help="Champion folder whose metrics.json fills the champion column.")
    ] = Path("champion"),
    split: Annotated[str, typer.Option(help="Which split's curves to draw (test or val).")] = "test",
) -> None:
    """Params, metrics (with the champion's) and ROC/PR curves of BASE against the workspace, as markdown."""
    try:
        result = diff(base, repo, out, champion, split)
    except DiffError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(result["markdown"])
    typer.echo(f"written: {result['report']}" + "".join(f", {p}" for p in result["pngs"].values() if p), err=True)
