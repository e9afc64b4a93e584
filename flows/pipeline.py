"""The `pipeline` flow: fetch → version → each dvc.yaml stage as a task → gate → promote → publish.

Orchestration only. DVC stays the one definition of the DAG: every stage runs as
`dvc repro --single-item <stage>` in the workspace, in dvc.yaml's order, one at a time, so DVC
skips what is up to date and holds its own lock. Tasks pass paths and small dicts.
Run it with `python -m flows run` (flows/__main__.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from pneumo.core import paths, proc
from pneumo.core.config import GateParams, load_params
from pneumo.data.fetch import LocalSource, Source, SyntheticSource, UrlSource
from pneumo.data.fetch import fetch as fetch_source
from pneumo.ops import gate, workspace

SOURCES = ("synthetic", "local", "url", "none")
REPORT_DIR = "runs"  # the flow's own summary; reports/ is the report stage's output
TABLE_KEY = "pneumo-gate"
SUMMARY_KEY = "pneumo-summary"


# DVC's closing hint after every stage; the flow's publish task pushes when a remote is configured.
DVC_PUSH_HINT = "Use `dvc push` to send your updates to remote storage."


def make_source(kind: str, options: dict[str, Any] | None = None) -> Source:
    """A pneumo.data.fetch source from a kind and its options (JSON-friendly, for flow parameters)."""
    options = dict(options or {})
    if kind == "synthetic":
        return SyntheticSource(**options)
    if kind == "local":
        return LocalSource(Path(options.pop("path")), **options)
    if kind == "url":
        # Prefect retries the whole fetch with backoff; the downloader's own retries default to none.
        options.setdefault("retries", 0)
        return UrlSource(**options)
    raise ValueError(f"source {kind!r}: expected one of {', '.join(SOURCES)}")


@task(task_run_name="fetch {kind}")
def fetch_data(workdir: str, kind: str, options: dict[str, Any]) -> dict:
    """Fetch into data/raw and version it (`dvc add` → data.dvc); returns the small summary."""
    logger = get_run_logger()
    summary = fetch_source(make_source(kind, options), repo=Path(workdir), progress=False)
    logger.info(
        "fetched %d images from %s into %s (data.dvc md5 %s)",
        summary["total"],
        kind,
        summary["out"],
        summary["dvc_md5"],
    )
    return {k: summary[k] for k in ("total", "counts", "synthetic", "out", "dvc_file", "dvc_md5", "source")}


def fetch_task(retries: int = 3, retry_delay: float = 10.0):
    """fetch_data with retries and exponential backoff (retry_delay, 2x, 4x ...), jittered."""
    delays = [retry_delay * 2**i for i in range(retries)] or 0
    return fetch_data.with_options(retries=retries, retry_delay_seconds=delays, retry_jitter_factor=0.2)


@task(task_run_name="dvc repro {stage}")
def run_stage(workdir: str, stage: str) -> dict:
    """One dvc.yaml stage in the workspace, its output streamed into the run's log line by line; a
    failed stage leaves its previous outputs in place (workspace.repro_stage)."""
    logger = get_run_logger()
    start = time.monotonic()

    def log(line: str) -> None:
        if line != DVC_PUSH_HINT:  # the flow pushes itself, where a remote exists (publish)
            logger.info("[%s] %s", stage, line)

    try:
        ran = workspace.repro_stage(workdir, stage, log)
    except workspace.StageFailed as exc:
        logger.error("%s (after %.1f s)", str(exc).splitlines()[0], time.monotonic() - start)
        raise
    seconds = round(time.monotonic() - start, 1)
    logger.info("stage %s: %s in %.1f s", stage, "ran" if ran else "up to date", seconds)
    return {"stage": stage, "ran": ran, "seconds": seconds}


@task
def judge(workdir: str, champion_dir: str, metrics: list[str], tolerance: float, bootstrap: int, seed: int) -> dict:
    """The challenger (eval/) against the champion folder on validation; test is shown, not judged."""
    decision = gate.judge(workdir, champion_dir, GateParams(tuple(metrics), tolerance, bootstrap, seed))
    get_run_logger().info("gate: %s", decision.reason)
    return decision.as_dict()


def _decision(d: dict) -> gate.Decision:
    return gate.Decision(d["promote"], d["reason"], d["tolerance"], [gate.Row(**r) for r in d["rows"]])


def _provenance(root: Path) -> dict:
    return {
        "flow_run_id": str(flow_run.get_id() or ""),
        "flow_run_name": flow_run.get_name(),
        **workspace.provenance(root),
    }


@task
def promote(workdir: str, champion_dir: str) -> str:
    """Replace the champion folder with the challenger's deployable set and predictions (one rename)."""
    target = gate.promote(workdir, champion_dir, _provenance(Path(workdir)))
    get_run_logger().info("promoted the challenger: %s", target)
    return str(target)


@task
def publish(
    workdir: str, champion_dir: str, decision: dict, stage_runs: list[dict], fetched: dict | None, push: bool | None
) -> dict:
    """Artifacts (gate table, markdown summary), runs/summary.md, and `dvc push` when a remote exists."""
    logger = get_run_logger()
    root = Path(workdir)
    d = _decision(decision)
    pushed = None
    remotes = proc.dvc(root, "remote", "list", check=False).stdout.strip()
    if d.promote and (push if push is not None else bool(remotes)):
        done = proc.dvc(root, "push", check=False)
        pushed = done.returncode == 0
        logger.log(20 if pushed else 40, "dvc push: %s", (done.stdout + done.stderr).strip()[-1000:] or "ok")
    ran = [s["stage"] for s in stage_runs if s["ran"]]
    lines = [
        f"# pneumo pipeline: {'champion replaced' if d.promote else 'champion kept'}",
        "",
        d.markdown(),
        "",
        f"- workspace: `{root}`",
        f"- challenger: model `{root / paths.SHIPPED_H5}`, metrics `{root / paths.METRICS}`",
        f"- champion: `{champion_dir}`",
        f"- stages run: {', '.join(ran) or 'none (all up to date)'}",
        f"- dvc push: {'not configured' if pushed is None else ('done' if pushed else 'FAILED')}",
    ]
    if fetched:
        lines.append(
            f"- data: {fetched['total']} images from {fetched['source']}, data.dvc md5 {fetched['dvc_md5']}"
            + (" (SYNTHETIC, not medical data)" if fetched.get("synthetic") else "")
        )
    summary = "\n".join(lines) + "\n"
    create_table_artifact(d.table(), key=TABLE_KEY, description=f"challenger vs champion: {d.reason}")
    create_markdown_artifact(summary, key=SUMMARY_KEY, description="pneumo pipeline run summary")
    report = root / REPORT_DIR
    report.mkdir(exist_ok=True)
    (report / "summary.md").write_text(summary)
    (report / "gate.json").write_text(json.dumps(decision, indent=2) + "\n")
    return {"report": str(report / "summary.md"), "pushed": pushed}


@flow(name="pneumo-pipeline", log_prints=True)
def pipeline(
    workdir: str = "demo",
    source: str = "synthetic",
    source_options: dict[str, Any] | None = None,
    gate_metrics: list[str] | None = None,
    tolerance: float | None = None,
    champion_dir: str = gate.CHAMPION_DIR,
    push: bool | None = None,
    fetch_retries: int = 3,
    fetch_retry_delay: float = 10.0,
):
    """Fetch, reproduce the DAG stage by stage, and promote the challenger only if it passes the gate.

    `source="none"` keeps data/raw as it is. `gate_metrics`/`tolerance` default to params.yaml's
    `gate:` section. A refused challenger ends the run Failed with the comparison in its message;
    the champion folder is then left byte for byte as it was. The workspace is locked for the
    whole run: a second run on it fails at once.
    """
    with workspace.lock(workdir):
        return _pipeline(
            Path(workdir).resolve(),
            source,
            source_options,
            gate_metrics,
            tolerance,
            champion_dir,
            push,
            fetch_retries,
            fetch_retry_delay,
        )


def _pipeline(
    root: Path,
    source: str,
    source_options: dict[str, Any] | None,
    gate_metrics: list[str] | None,
    tolerance: float | None,
    champion_dir: str,
    push: bool | None,
    fetch_retries: int,
    fetch_retry_delay: float,
):
    logger = get_run_logger()
    if not (root / "dvc.yaml").is_file():
        logger.info("no workspace at %s: creating one from %s", root, workspace.project_root())
        workspace.create(root)
    champion = Path(champion_dir) if Path(champion_dir).is_absolute() else root / champion_dir
    # The champion is a model, not source; runs/, diff/ and the lock are outputs.
    workspace.ignore_in_git(
        root, *workspace.GIT_IGNORED, *([] if Path(champion_dir).is_absolute() else [f"/{champion_dir}/"])
    )
    # Before any stage: `dvc repro` deletes a stage's outputs before its command reads params.
    configured = load_params(root / "params.yaml").gate
    metrics = list(gate_metrics or configured.metrics)
    tol = float(tolerance if tolerance is not None else configured.tolerance)
    GateParams(tuple(metrics), tol, configured.bootstrap, configured.seed).validate("gate")

    fetched = None
    if source != "none":
        fetched = fetch_task(fetch_retries, fetch_retry_delay)(str(root), source, source_options or {})
    stage_runs = [run_stage(str(root), name) for name in workspace.stages(root)]
    decision = judge(str(root), str(champion), metrics, tol, configured.bootstrap, configured.seed)
    if decision["promote"]:
        promote(str(root), str(champion))
    published = publish(str(root), str(champion), decision, stage_runs, fetched, push)
    result = {
        "workdir": str(root),
        "champion": str(champion),
        "model": str(root / paths.SHIPPED_H5),
        "metrics": str(root / paths.METRICS),
        "report": published["report"],
        "decision": decision,
    }
    if not decision["promote"]:
        return Failed(
            message=f"gate refused the challenger; champion kept at {champion}.\n{_decision(decision).markdown()}",
            data=result,
        )
    return Completed(message=decision["reason"], data=result)


def where(state, workdir: str | Path, champion_dir: str = gate.CHAMPION_DIR) -> str:
    """Where the run left the model, metrics, champion and report (for the terminal)."""
    root = Path(workdir).resolve()
    lines = [
        f"pipeline {state.name}: {state.message or ''}".rstrip(),
        f"  model:    {root / paths.SHIPPED_H5}  (card: {root / paths.SHIPPED_CARD})",
        f"  metrics:  {root / paths.METRICS}  (cd {root} && dvc metrics show)",
        f"  champion: {root / champion_dir}",
        f"  report:   {root / paths.REPORTS_DIR / paths.REPORT_HTML}"
        f"  (run summary: {root / REPORT_DIR / 'summary.md'})",
    ]
    return "\n".join(lines)
