"""DVC through its command line (a subprocess, so `pneumo fetch` never imports DVC itself):
init, version a folder into a root-level `.dvc` file, remotes, push and pull.

Analytics are always off (pneumo.core.proc's environment, and `core.analytics false` in repos we init).
Secrets (client secrets) go to `.dvc/config.local`, which DVC keeps out of git, and are never
echoed: commands are logged with them masked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from pneumo.core import proc
from pneumo.core.io import restorable, write_text
from pneumo.data.fetch.errors import FetchError

log = logging.getLogger(__name__)
RemoteKind = Literal["local", "gdrive", "s3", "gcs"]
DEFAULT_REMOTE_NAME = "storage"
DEFAULT_LOCAL_REMOTE = "../pneumo-dvc-storage"  # beside the repo: works offline, survives `git clean`


def run(args: list[str], repo: Path, secrets: tuple[str, ...] = ()) -> str:
    """Run `dvc ARGS` in `repo`; FetchError with DVC's own last error line if it fails."""
    shown = proc.mask(" ".join(args), secrets)
    log.info("dvc %s", shown)
    try:
        return proc.dvc(repo, *args, secrets=secrets).stdout
    except proc.CommandError as exc:
        raise FetchError(f"{repo}: `dvc {shown}` failed (exit {exc.returncode}): {exc.error_line}") from None


def init(repo: Path) -> None:
    """`dvc init` (git must be initialised already) with analytics off."""
    if not (repo / ".dvc").is_dir():
        run(["init", "-q"], repo)
    run(["config", "core.analytics", "false"], repo)


def require_repo(repo: Path) -> None:
    if not (repo / ".dvc").is_dir():
        raise FetchError(
            f"{repo}: not a DVC repository (no .dvc/); run `git init && dvc init` there, "
            "or pass --no-dvc to fetch without versioning"
        )


def tracked_hash(dvc_file: Path) -> str | None:
    """The md5 recorded for the first output of a .dvc file, or None."""
    if not dvc_file.exists():
        return None
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
    return outs[0].get("md5") if outs else None


@contextlib.contextmanager
def added(repo: Path, target: Path, dvc_file: Path) -> Iterator[str]:
    """Version `target` (relative to repo) with `dvc add`, recorded in `dvc_file` (e.g. data.dvc);
    yields its md5.

    `dvc add` writes `<target>.dvc` beside the target; seeding `dvc_file` with the output path
    makes DVC update that file instead, so the hash lives at the repo root. If `dvc add` or the
    caller's block fails, the .dvc file and the .gitignore DVC edits are put back by renames (so
    on a full disk too), and the caller can put the data back.
    """
    repo = repo.resolve()
    dvc_abs = repo / dvc_file
    rel = os.path.relpath(repo / target, dvc_abs.parent).replace(os.sep, "/")
    if dvc_abs.exists():
        outs = (yaml.safe_load(dvc_abs.read_text()) or {}).get("outs") or []
        if [o.get("path") for o in outs] != [rel]:
            raise FetchError(
                f"{dvc_abs}: tracks {[o.get('path') for o in outs]}, not {rel!r}; "
                "move it away or pass another --dvc-file"
            )
    stray = (repo / target).parent / f"{(repo / target).name}.dvc"
    with restorable(dict.fromkeys([dvc_abs, (repo / target).parent / ".gitignore", stray])):
        if not dvc_abs.exists():
            write_text(dvc_abs, f"outs:\n- path: {rel}\n")
        run(["add", "-q", str(target)], repo)
        md5 = tracked_hash(dvc_abs)
        if not md5:
            raise FetchError(f"{dvc_abs}: `dvc add {target}` left no hash in it")
        if stray.exists() and stray != dvc_abs:
            raise FetchError(f"{stray}: `dvc add` wrote a second .dvc file for {target}")
        yield md5


@dataclass(frozen=True)
class RemoteSpec:
    """A remote to configure; validated here, before DVC is touched."""

    kind: RemoteKind
    url: str
    name: str = DEFAULT_REMOTE_NAME
    default: bool = True
    options: dict[str, str] = field(default_factory=dict)  # written to .dvc/config (committed)
    local_options: dict[str, str] = field(default_factory=dict)  # to .dvc/config.local (not committed)
    secrets: tuple[str, ...] = ()  # values never to be shown

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise FetchError(f"--name {self.name!r}: expected letters, digits, '_', '.', '-'")
        scheme = {"gdrive": "gdrive://", "s3": "s3://", "gcs": "gs://"}.get(self.kind)
        if scheme and not self.url.startswith(scheme):
            raise FetchError(f"--url {self.url!r}: a {self.kind} remote needs a {scheme}... URL")
        if self.kind == "local" and "://" in self.url:
            raise FetchError(f"--url {self.url!r}: a local remote is a folder path, not a URL")


def remote_spec(
    kind: RemoteKind,
    url: str | None = None,
    name: str = DEFAULT_REMOTE_NAME,
    default: bool = True,
    *,
    service_account: Path | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    credentials: Path | None = None,
    project: str | None = None,
) -> RemoteSpec:
    """Translate friendly options into DVC's remote keys, refusing ones that do not fit the kind."""
    given = {
        "--gdrive-service-account": service_account,
        "--gdrive-client-id": client_id,
        "--gdrive-client-secret": client_secret,
        "--endpoint-url": endpoint_url,
        "--region": region,
        "--profile": profile,
        "--credentials": credentials,
        "--project": project,
    }
    allowed = {
        "local": set(),
        "gdrive": {"--gdrive-service-account", "--gdrive-client-id", "--gdrive-client-secret"},
        "s3": {"--endpoint-url", "--region", "--profile"},
        "gcs": {"--credentials", "--project"},
    }[kind]
    wrong = [k for k, v in given.items() if v is not None and k not in allowed]
    if wrong:
        raise FetchError(
            f"{', '.join(wrong)}: not an option of a {kind} remote (allowed: {', '.join(sorted(allowed)) or 'none'})"
        )
    options: dict[str, str] = {}
    local: dict[str, str] = {}
    secrets: tuple[str, ...] = ()
    if kind == "local":
        url = url or DEFAULT_LOCAL_REMOTE
    elif url is None:
        raise FetchError(
            f"--url: required for a {kind} remote (e.g. "
            f"{ {'gdrive': 'gdrive://<folder-id>', 's3': 's3://bucket/path', 'gcs': 'gs://bucket/path'}[kind] })"
        )
    elif kind == "gdrive" and "://" not in url:
        url = f"gdrive://{url}"  # a bare folder id
    if kind == "gdrive":
        if service_account is not None and (client_id or client_secret):
            raise FetchError(
                "--gdrive-service-account and --gdrive-client-id/--gdrive-client-secret: pick one way to authenticate"
            )
        if service_account is not None:
            if not service_account.is_file():
                raise FetchError(f"{service_account}: service account key file not found")
            options["gdrive_use_service_account"] = "true"
            local["gdrive_service_account_json_file_path"] = str(service_account.resolve())
        elif bool(client_id) != bool(client_secret):
            raise FetchError(
                "--gdrive-client-id and --gdrive-client-secret go together (your own OAuth client; "
                "DVC's built-in one is blocked by Google)"
            )
        elif client_id and client_secret:
            options["gdrive_client_id"] = client_id
            local["gdrive_client_secret"] = client_secret
            secrets = (client_secret,)
        else:
            raise FetchError(
                "a gdrive remote needs --gdrive-service-account KEY.json or --gdrive-client-id and "
                "--gdrive-client-secret (DVC's built-in OAuth app was blocked by Google in 2024)"
            )
    if kind == "s3":
        options.update({k: v for k, v in (("endpointurl", endpoint_url), ("region", region)) if v})
        if profile:
            local["profile"] = profile
    if kind == "gcs":
        if project:
            options["projectname"] = project
        if credentials is not None:
            if not credentials.is_file():
                raise FetchError(f"{credentials}: GCS credentials file not found")
            local["credentialpath"] = str(credentials.resolve())
    return RemoteSpec(kind, url, name, default, options, local, secrets)


def remote_add(repo: Path, spec: RemoteSpec) -> list[str]:
    """Configure the remote with `dvc remote add` / `dvc remote modify`; return the commands (masked)."""
    require_repo(repo)
    # A stale config.local section of the same name (other kind, old secret) would make DVC reject
    # the whole config; drop it first, ignoring "no such remote".
    local_cfg = repo / ".dvc" / "config.local"
    if local_cfg.exists() and f'remote "{spec.name}"' in local_cfg.read_text():
        run(["remote", "remove", "--local", spec.name], repo)
    commands = [["remote", "add", "-f", *(["-d"] if spec.default else []), spec.name, spec.url]]
    commands += [["remote", "modify", spec.name, k, v] for k, v in spec.options.items()]
    commands += [["remote", "modify", "--local", spec.name, k, v] for k, v in spec.local_options.items()]
    for cmd in commands:
        run(cmd, repo, spec.secrets)
    return ["dvc " + proc.mask(" ".join(cmd), spec.secrets) for cmd in commands]


def push(repo: Path, targets: list[str], remote: str | None = None) -> str:
    return run(["push", *(["-r", remote] if remote else []), *targets], repo)


def pull(repo: Path, targets: list[str], remote: str | None = None) -> str:
    return run(["pull", *(["-r", remote] if remote else []), *targets], repo)


def remotes(repo: Path) -> str:
    require_repo(repo)
    return run(["remote", "list"], repo)
