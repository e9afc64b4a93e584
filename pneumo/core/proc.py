"""The one way pneumo runs another program (git, DVC, a stage): telemetry off, output captured,
and a failure raised with the command, the folder and the end of what it printed.

The telemetry environment lives here and nowhere else: entry points call `quiet_environ()` once,
and every child gets `child_env()`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# Offline hygiene for everything pneumo starts: no telemetry, no log spam from TensorFlow's C++.
FORCED_ENV: dict[str, str] = {"DVC_NO_ANALYTICS": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
DEFAULT_ENV: dict[str, str] = {"TF_CPP_MIN_LOG_LEVEL": "2"}
# `python -m dvc` finds this environment's DVC even when its bin/ is not on PATH.
DVC: tuple[str, ...] = (sys.executable, "-m", "dvc")
MASK = "***"


class CommandError(RuntimeError):
    """A command exited non-zero. `detail` is the end of its output; `stdout` and `stderr` are whole.
    All of them, and the command as shown, have the secrets masked."""

    def __init__(self, shown: str, cwd: Path, returncode: int, detail: str, stdout: str = "", stderr: str = "") -> None:
        super().__init__(f"`{shown}` failed in {cwd} (exit {returncode}): {detail}")
        self.shown, self.cwd, self.returncode, self.detail = shown, cwd, returncode, detail
        self.stdout, self.stderr = stdout, stderr

    @property
    def error_line(self) -> str:
        """The tool's own last `ERROR` line (DVC prints one), else its last line of output."""
        lines = [ln.strip() for ln in (self.stderr + "\n" + self.stdout).splitlines() if ln.strip()]
        return next((ln for ln in reversed(lines) if "ERROR" in ln), lines[-1] if lines else "no output")


def quiet_environ() -> None:
    """Set the hygiene variables in this process (entry points call it once, before heavy imports)."""
    os.environ.update(FORCED_ENV)
    for key, value in DEFAULT_ENV.items():
        os.environ.setdefault(key, value)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: ours, telemetry off, this interpreter's bin/ first on PATH
    (so `dvc repro` stage commands find this venv's `python`), then `extra`."""
    env = {**DEFAULT_ENV, **os.environ, **FORCED_ENV}
    bin_dir = str(Path(sys.executable).parent)
    if not env.get("PATH", "").startswith(bin_dir + os.pathsep):
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return {**env, **(extra or {})}


def mask(text: str, secrets: Sequence[str]) -> str:
    """`text` with every (non-empty) secret replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def run(
    cmd: Sequence[str],
    cwd: str | Path,
    *,
    check: bool = True,
    secrets: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    tail: int = 800,
) -> subprocess.CompletedProcess:
    """Run `cmd` in `cwd`, capturing text output; with `check`, CommandError on a non-zero exit.

    `secrets` are masked wherever the command or its output is shown. `env` adds to `child_env()`.
    """
    cwd = Path(cwd)
    done = subprocess.run(list(cmd), cwd=cwd, env=child_env(env), capture_output=True, text=True)
    if check and done.returncode:
        stdout, stderr = mask(done.stdout, secrets), mask(done.stderr, secrets)
        raise CommandError(
            mask(" ".join(cmd), secrets), cwd, done.returncode, (stderr or stdout).strip()[-tail:], stdout, stderr
        )
    return done


def stream(
    cmd: Sequence[str], cwd: str | Path, each: Callable[[str], None], env: Mapping[str, str] | None = None
) -> int:
    """Run `cmd` in `cwd`, handing each line it prints (stdout and stderr, in order, newline
    stripped) to `each` as it comes; return its exit code."""
    with subprocess.Popen(
        list(cmd),
        cwd=Path(cwd),
        env=child_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            each(line.rstrip("\n"))
        return child.wait()


def git(repo: str | Path, *args: str) -> str:
    """`git ARGS` in `repo`; its stdout."""
    return run(["git", *args], repo).stdout


def dvc(
    repo: str | Path, *args: str, check: bool = True, secrets: Sequence[str] = (), tail: int = 800
) -> subprocess.CompletedProcess:
    """`dvc ARGS` in `repo`, through this environment's DVC."""
    return run([*DVC, *args], repo, check=check, secrets=secrets, tail=tail)


def dvc_json(repo: str | Path, *args: str) -> Any:
    """`dvc ARGS --json` in `repo`, parsed ({} for no output)."""
    out = dvc(repo, *args, "--json").stdout
    return json.loads(out) if out.strip() else {}
