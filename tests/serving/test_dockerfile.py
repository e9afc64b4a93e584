"""The Dockerfile: what can be checked without a Docker engine (none runs here or in CI).

The file is parsed and held to its promises (slim base, non-root user, healthcheck, the package
installed whole); the build context is checked against .dockerignore's rules; and the image's own
command and healthcheck are run directly, on a free loopback port, against a real server.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

import pytest
from serve_support import LOOPBACK, Server, free_port, wait_ready

from support import REPO, env_without_prefect

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PORT = "8000"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, backslash continuations joined."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    return [(first.upper(), rest.strip()) for first, _, rest in (line.partition(" ") for line in logical)]


def argv(arguments: str) -> list[str]:
    """An exec-form (JSON array) command; the shell form is refused (no signals reach a shell's child)."""
    assert arguments.startswith("["), f"exec form (a JSON array) expected, got {arguments!r}"
    return json.loads(arguments)


def only(found: list[tuple[str, str]], name: str) -> tuple[int, str]:
    """The index and arguments of the one `name` instruction of the final stage."""
    hits = [(i, args) for i, (instruction, args) in enumerate(found) if instruction == name]
    assert len(hits) == 1, f"one {name} expected in the Dockerfile, found {len(hits)}"
    return hits[0]


def healthcheck_argv(arguments: str) -> list[str]:
    """The command of `HEALTHCHECK [--option=value ...] CMD [...]`."""
    options, _, command = arguments.partition("CMD ")
    assert command, f"HEALTHCHECK without CMD: {arguments!r}"
    assert all(o.startswith("--") for o in shlex.split(options)), options
    return argv(command.strip())


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def image_command(found: list[tuple[str, str]]) -> list[str]:
    """ENTRYPOINT followed by CMD, as Docker runs them."""
    command = argv(only(found, "ENTRYPOINT")[1])
    cmd = [args for instruction, args in found if instruction == "CMD"]
    return command + (argv(cmd[-1]) if cmd else [])


def test_the_image_is_slim_installs_the_package_and_runs_pneumo_serve_as_a_non_root_user(dockerfile):
    froms = [args for instruction, args in dockerfile if instruction == "FROM"]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", froms[-1].split()[0]), froms
    assert any(i == "RUN" and "pip install --no-cache-dir ." in args for i, args in dockerfile)
    user_at, user = only(dockerfile, "USER")
    assert user.split(":")[0] not in ("root", "0"), user
    entry_at, _ = only(dockerfile, "ENTRYPOINT")
    assert user_at < entry_at and user_at < only(dockerfile, "HEALTHCHECK")[0]
    assert not any(i == "RUN" for i, _ in dockerfile[user_at:]), "nothing runs as root after USER"
    assert only(dockerfile, "EXPOSE")[1] == PORT
    command = image_command(dockerfile)
    assert command[:2] == ["pneumo", "serve"]
    assert command[command.index("--host") + 1] == "0.0.0.0" and command[command.index("--port") + 1] == PORT
    check = healthcheck_argv(only(dockerfile, "HEALTHCHECK")[1])
    assert check[0] == "python" and "urllib.request" in check[-1] and f":{PORT}/readyz" in check[-1]


def _pattern(rule: str) -> re.Pattern:
    """A .dockerignore pattern as Docker reads it: `*` and `?` stay within a path segment, `**` crosses them."""
    out, i = "", 0
    while i < len(rule):
        if rule.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif rule.startswith("**", i):
            out, i = out + ".*", i + 2
        elif rule[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif rule[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(rule[i]), i + 1
    return re.compile(out)


def in_context(path: str, rules: list[str]) -> bool:
    """Whether `path` reaches the build context: the last rule matching it or a parent folder decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    kept = True
    for rule in rules:
        negated = rule.startswith("!")
        pattern = _pattern(rule.lstrip("!").strip("/"))
        if any(pattern.fullmatch(c) for c in candidates):
            kept = negated
    return kept


def test_the_build_context_holds_the_package_and_its_model_and_nothing_else():
    rules = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    for path in (
        "pyproject.toml",
        "README.md",
        "pneumo/serving/api.py",
        "pneumo/assets/model/model_int8.tflite",
        "pneumo/assets/model/model_card.json",
        "pneumo/serving/static/index.html",
        "flows/__init__.py",
    ):
        assert in_context(path, rules), f"{path} must go into the image"
    for path in (
        ".venv/bin/python",
        "data/raw/train/NORMAL/a.jpeg",
        "eval/metrics.json",
        "models/model.h5",
        ".dvc/cache/files/md5/ab/cdef",
        "tests/serving/test_api.py",
        ".pytest_cache/v/cache/lastfailed",
        "reports/index.html",
        "pneumo/core/__pycache__/io.cpython-311.pyc",
        "pneumo.egg-info/PKG-INFO",
        ".git/HEAD",
    ):
        assert not in_context(path, rules), f"{path} must stay out of the image"


def _healthcheck(command: list[str], port: int) -> subprocess.CompletedProcess:
    swapped = [arg.replace(f"127.0.0.1:{PORT}", f"{LOOPBACK}:{port}") for arg in command]
    assert swapped != command, "the healthcheck names no 127.0.0.1:8000 to point elsewhere"
    return subprocess.run(swapped, env=env_without_prefect(), capture_output=True, text=True, timeout=30)


def test_the_images_command_serves_and_its_healthcheck_follows_the_server(dockerfile):
    port = free_port()
    command = image_command(dockerfile)
    # As in the container, but on this host's loopback and a free port (0.0.0.0 is for inside a container).
    command[command.index("--host") + 1] = LOOPBACK
    command[command.index("--port") + 1] = str(port)
    check = healthcheck_argv(only(dockerfile, "HEALTHCHECK")[1])
    with tempfile.TemporaryDirectory(prefix="pneumo-docker-cmd-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as sink:
            # The venv's bin/ leads PATH (env_without_prefect), so `pneumo` and `python` are this project's.
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env_without_prefect())
            server = Server(f"http://{LOOPBACK}:{port}", process, log)
            try:
                wait_ready(server, timeout=180)  # the packaged model, loaded and warm
                healthy = _healthcheck(check, port)
                assert healthy.returncode == 0, healthy.stderr
            finally:
                process.terminate()
                process.wait(timeout=30)
    gone = _healthcheck(check, port)
    assert gone.returncode != 0, "the healthcheck passed with no server listening"
