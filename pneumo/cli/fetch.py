"""Thin Typer commands over pneumo.data.fetch: `pneumo fetch ...` and `pneumo remote ...`.

Registered in pneumo/cli/app.py:
    from pneumo.cli import fetch as fetch_cli
    app.command("fetch")(fetch_cli.fetch)
    app.add_typer(fetch_cli.remote_app, name="remote")
"""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from pneumo.core.clihelp import HELP_SETTINGS
from pneumo.data.fetch import dvc
from pneumo.data.fetch.archive import Limits
from pneumo.data.fetch.core import fetch as run_fetch
from pneumo.data.fetch.core import format_summary
from pneumo.data.fetch.errors import FetchError
from pneumo.data.fetch.sources import (
    DEFAULT_KAGGLE_HANDLE,
    GDriveSource,
    KaggleSource,
    LocalSource,
    SyntheticSource,
    UrlSource,
)


class SourceKind(str, Enum):
    kaggle = "kaggle"
    gdrive = "gdrive"
    url = "url"
    local = "local"
    synthetic = "synthetic"


class RemoteKindOpt(str, Enum):
    local = "local"
    gdrive = "gdrive"
    s3 = "s3"
    gcs = "gcs"


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)


def _source(kind: SourceKind, given: dict[str, object]):
    """Build the source from the options that belong to it; refuse options of other sources."""
    belongs = {
        SourceKind.kaggle: {"handle", "force_download"},
        SourceKind.gdrive: {"drive_id", "credentials"},
        SourceKind.url: {"url", "sha256", "retries"},
        SourceKind.local: {"path", "follow_symlinks"},
        SourceKind.synthetic: {"seed"},
    }[kind]
    stray = [k for k, v in given.items() if v is not None and k not in belongs]
    if stray:
        raise typer.BadParameter(
            ", ".join("--" + k.replace("_", "-") for k in stray) + f" do(es) not apply to --source {kind.value}"
        )
    need = {SourceKind.gdrive: "drive_id", SourceKind.url: "url", SourceKind.local: "path"}.get(kind)
    if need and given[need] is None:
        raise typer.BadParameter(f"--{need.replace('_', '-')} is required with --source {kind.value}")
    if kind is SourceKind.kaggle:
        return KaggleSource(given["handle"] or DEFAULT_KAGGLE_HANDLE, bool(given["force_download"]))
    if kind is SourceKind.gdrive:
        return GDriveSource(given["drive_id"], given["credentials"])
    if kind is SourceKind.url:
        retries = given["retries"]
        return UrlSource(given["url"], given["sha256"], 4 if retries is None else retries)
    if kind is SourceKind.local:
        return LocalSource(given["path"], bool(given["follow_symlinks"]))
    return SyntheticSource(seed=given["seed"] or 0)


def fetch(
    source: Annotated[SourceKind, typer.Option(help="Where the images come from.")],
    handle: Annotated[
        str | None, typer.Option(help=f"kaggle: data set handle (default: {DEFAULT_KAGGLE_HANDLE}).")
    ] = None,
    force_download: Annotated[
        bool, typer.Option("--force-download", help="kaggle: download again even if kagglehub has it.")
    ] = False,
    drive_id: Annotated[
        str | None, typer.Option(help="gdrive: id of a file (a zip/tar) or a folder (downloaded recursively).")
    ] = None,
    credentials: Annotated[
        Path | None,
        typer.Option(
            help="gdrive: service account key JSON, OAuth client JSON or pydrive2 settings YAML "
            "(default: $PNEUMO_GDRIVE_CREDENTIALS, $GOOGLE_APPLICATION_CREDENTIALS)."
        ),
    ] = None,
    url: Annotated[str | None, typer.Option(help="url: http(s) address of a zip or tar archive.")] = None,
    sha256: Annotated[
        str | None, typer.Option(help="url: expected SHA-256 of the archive (refused if it differs).")
    ] = None,
    retries: Annotated[
        int | None, typer.Option(help="url: retries after a failed or cut-off download (default: 4).")
    ] = None,
    path: Annotated[Path | None, typer.Option(help="local: a folder or an archive on disk.")] = None,
    follow_symlinks: Annotated[
        bool,
        typer.Option(
            "--follow-symlinks", help="local: copy what symbolic links out of the folder point to (refused by default)."
        ),
    ] = False,
    seed: Annotated[int | None, typer.Option(help="synthetic: generator seed (default: 0).")] = None,
    out: Annotated[Path, typer.Option(help="Data folder to replace, relative to --repo.")] = Path("data/raw"),
    repo: Annotated[Path, typer.Option(help="Repository root (git + DVC).")] = Path("."),
    manifest: Annotated[Path, typer.Option(help="Manifest CSV (outside the data folder), relative to --repo.")] = Path(
        "data/fetch_manifest.csv"
    ),
    dvc_file: Annotated[
        Path, typer.Option(help="The .dvc file that records the data's hash, relative to --repo.")
    ] = Path("data.dvc"),
    use_dvc: Annotated[bool, typer.Option("--dvc/--no-dvc", help="Version the result with `dvc add`.")] = True,
    max_bytes: Annotated[
        int, typer.Option(help="Safety: bytes a download, and an archive uncompressed, may reach.")
    ] = Limits.max_bytes,
    max_ratio: Annotated[
        float, typer.Option(help="Archive safety: uncompressed/compressed ratio allowed.")
    ] = Limits.max_ratio,
    max_members: Annotated[int, typer.Option(help="Archive safety: number of entries allowed.")] = Limits.max_members,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Progress bars on stderr (default: on a terminal).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Fetch the chest X-ray set into data/raw (Kaggle layout) and version it with DVC (data.dvc)."""
    _logging()
    given = {
        "handle": handle,
        "force_download": force_download or None,
        "drive_id": drive_id,
        "credentials": credentials,
        "url": url,
        "sha256": sha256,
        "retries": retries,
        "path": path,
        "follow_symlinks": follow_symlinks or None,
        "seed": seed,
    }
    try:
        src = _source(source, given)
        limits = Limits(max_bytes, max_ratio, max_members)
    except (FetchError, ValueError) as exc:
        _fail(str(exc), 2)
    try:
        summary = run_fetch(
            src,
            repo=repo,
            out=out,
            manifest_path=manifest,
            dvc_file=dvc_file,
            use_dvc=use_dvc,
            limits=limits,
            progress=progress,
        )
    except FetchError as exc:
        _fail(f"{exc} (previous {out} left unchanged)")
    except KeyboardInterrupt:
        _fail(f"interrupted (previous {out} left unchanged)", 130)
    typer.echo(json.dumps(summary, indent=1) if as_json else format_summary(summary))


remote_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="DVC remotes for the data: add one, list them, push and pull data.dvc.",
)

RepoOpt = Annotated[Path, typer.Option(help="Repository root (git + DVC).")]


@remote_app.command("add")
def remote_add(
    kind: Annotated[
        RemoteKindOpt, typer.Option(help="local folder, Google Drive, S3 or Google Cloud Storage.")
    ] = RemoteKindOpt.local,
    url: Annotated[
        str | None,
        typer.Option(
            help=f"local: folder (default: {dvc.DEFAULT_LOCAL_REMOTE}); gdrive://<folder-id>; s3://bucket/path; gs://bucket/path."
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="Remote name.")] = dvc.DEFAULT_REMOTE_NAME,
    default: Annotated[
        bool, typer.Option("--default/--no-default", help="Make it the default remote (dvc remote add -d).")
    ] = True,
    gdrive_service_account: Annotated[
        Path | None,
        typer.Option(help="gdrive: service account key JSON (the folder must be in a Shared Drive shared with it)."),
    ] = None,
    gdrive_client_id: Annotated[str | None, typer.Option(help="gdrive: your own OAuth client id.")] = None,
    gdrive_client_secret: Annotated[
        str | None,
        typer.Option(
            envvar="PNEUMO_GDRIVE_CLIENT_SECRET",
            show_envvar=True,
            help="gdrive: your OAuth client secret (stored in .dvc/config.local only).",
        ),
    ] = None,
    endpoint_url: Annotated[str | None, typer.Option(help="s3: endpoint of an S3-compatible store (MinIO...).")] = None,
    region: Annotated[str | None, typer.Option(help="s3: bucket region.")] = None,
    profile: Annotated[str | None, typer.Option(help="s3: AWS profile (in .dvc/config.local).")] = None,
    credentials: Annotated[
        Path | None, typer.Option(help="gcs: service account key JSON (in .dvc/config.local).")
    ] = None,
    project: Annotated[str | None, typer.Option(help="gcs: Google Cloud project.")] = None,
    repo: RepoOpt = Path("."),
) -> None:
    """Configure a DVC remote (`dvc remote add -d` + `dvc remote modify`); secrets go to config.local."""
    _logging()
    try:
        spec = dvc.remote_spec(
            kind.value,
            url,
            name,
            default,
            service_account=gdrive_service_account,
            client_id=gdrive_client_id,
            client_secret=gdrive_client_secret,
            endpoint_url=endpoint_url,
            region=region,
            profile=profile,
            credentials=credentials,
            project=project,
        )
        if kind is RemoteKindOpt.local:
            # DVC stores a relative path relative to .dvc/; resolve from --repo so it means what was typed.
            (repo / spec.url).mkdir(parents=True, exist_ok=True)
        commands = dvc.remote_add(repo.resolve(), spec)
    except FetchError as exc:
        _fail(str(exc))
    typer.echo("\n".join(commands))


@remote_app.command("list")
def remote_list(repo: RepoOpt = Path(".")) -> None:
    """List the configured remotes."""
    try:
        typer.echo(dvc.remotes(repo.resolve()).rstrip())
    except FetchError as exc:
        _fail(str(exc))


@remote_app.command("push")
def remote_push(
    remote: Annotated[str | None, typer.Option(help="Remote name (default: the default remote).")] = None,
    dvc_file: Annotated[Path, typer.Option(help="The .dvc file to push.")] = Path("data.dvc"),
    repo: RepoOpt = Path("."),
) -> None:
    """Upload the data recorded in data.dvc to the remote (`dvc push`)."""
    try:
        dvc.require_repo(repo.resolve())
        typer.echo(dvc.push(repo.resolve(), [str(dvc_file)], remote).rstrip())
    except FetchError as exc:
        _fail(str(exc))


@remote_app.command("pull")
def remote_pull(
    remote: Annotated[str | None, typer.Option(help="Remote name (default: the default remote).")] = None,
    dvc_file: Annotated[Path, typer.Option(help="The .dvc file to pull.")] = Path("data.dvc"),
    repo: RepoOpt = Path("."),
) -> None:
    """Download the data recorded in data.dvc from the remote into the workspace (`dvc pull`)."""
    try:
        dvc.require_repo(repo.resolve())
        typer.echo(dvc.pull(repo.resolve(), [str(dvc_file)], remote).rstrip())
    except FetchError as exc:
        _fail(str(exc))


def make_app() -> typer.Typer:
    """A standalone app with the commands pneumo's CLI registers (`fetch`, `remote ...`)."""
    app = typer.Typer(
        add_completion=False, no_args_is_help=True, **HELP_SETTINGS, help="pneumo data fetching and DVC remotes."
    )
    app.command("fetch")(fetch)
    app.add_typer(remote_app, name="remote")
    return app
