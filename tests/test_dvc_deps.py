"""Each DVC stage depends on exactly the pneumo modules its command runs, so `dvc repro` reruns
a stage when, and only when, code it runs has changed.

A stage's command is `python -m <entry> <command> ...`. What it runs:
- the entry module, pneumo's package `__init__`s and what they import at module level, followed
  module by module at module level only (the other commands' imports stay unloaded), plus what
  the functions its `if __name__ == "__main__":` block calls import (its `main()` runs);
- the command's own body and the stage module `pneumo/stages/<command>.py`, with every import
  they make, at module level or inside a function, followed to the end (they all run).

The stage's `deps` must cover each of those files (a folder covers what it holds) and hold no
pneumo file the command does not run. A package `__init__.py` that holds only its docstring
runs no code, so it need not be listed; once it holds code, it must be.
"""

from __future__ import annotations

import ast
import shlex
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import yaml

from support import REPO

PACKAGE = "pneumo"


# ---------------------------------------------------------------- modules and their imports


def module_file(root: Path, name: str) -> Path | None:
    """The file that defines module `name` under `root`, or None when it is not one of ours."""
    base = root.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(node: ast.AST, *, local: bool) -> Iterator[ast.Import | ast.ImportFrom | ast.Call]:
    """The import statements (and `importlib.import_module("...")` calls) that run under `node`.

    Module level always; inside functions only with `local`. `if TYPE_CHECKING:` never runs.
    """
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            yield from import_nodes(ast.Module(body=child.orelse, type_ignores=[]), local=local)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) and not local:
            continue
        else:
            if (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Attribute | ast.Name)
                and getattr(child.func, "attr", getattr(child.func, "id", None)) == "import_module"
                and child.args
                and isinstance(child.args[0], ast.Constant)
            ):
                yield child
            yield from import_nodes(child, local=local)


def imported_modules(root: Path, path: Path, nodes: Iterable[ast.AST]) -> set[str]:
    """Names of the modules under `root` that `nodes` (in the module at `path`) load, parents included."""
    this = module_name(root, path).split(".")
    package = this if path.name == "__init__.py" else this[:-1]
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            stem = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(stem)
            names.update(f"{stem}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
        else:
            names.add(node.args[0].value)
    return {name for name in with_parents(names) if module_file(root, name) is not None}


def with_parents(names: Iterable[str]) -> set[str]:
    """The modules and their packages: importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    return {".".join(name.split(".")[:i]) for name in names for i in range(1, name.count(".") + 2)}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def inert(path: Path) -> bool:
    """True for a module that holds nothing but its docstring: editing it changes no result."""
    body = _tree(path).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def closure(root: Path, start: Iterable[str], *, local: bool) -> set[Path]:
    """The files of `start` and of every module they import, recursively (inside functions with `local`)."""
    todo = [name for name in with_parents(start) if module_file(root, name) is not None]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(root, name)
        todo.extend(imported_modules(root, path, import_nodes(_tree(path), local=local)))
    return {module_file(root, name) for name in seen}


def _main_guard_calls(tree: ast.Module) -> set[str]:
    """Names of the functions `if __name__ == "__main__":` calls: they run when the module is the entry."""
    called: set[str] = set()
    for node in tree.body:
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name)
            and node.test.left.id == "__name__"
        ):
            called.update(
                call.func.id
                for call in ast.walk(node)
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
            )
    return called


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _command_name(function: ast.FunctionDef) -> str | None:
    """The Typer command a `@<app>.command(...)` function defines, or None."""
    for decorator in function.decorator_list:
        if (
            isinstance(decorator, ast.Call)
            and isinstance(decorator.func, ast.Attribute)
            and decorator.func.attr == "command"
        ):
            first = decorator.args[0] if decorator.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                return first.value
            return function.name.replace("_", "-")
    return None


def stage_modules(root: Path, entry: str, command: str) -> set[Path]:
    """Every file of ours that `python -m <entry> <command>` runs (see the module docstring)."""
    entry_file = module_file(root, entry)
    assert entry_file is not None, f"`python -m {entry}`: no module {entry} under {root}"
    if entry_file.name == "__init__.py":  # `python -m package` runs package/__main__.py
        entry = f"{entry}.__main__"
        entry_file = module_file(root, entry)
        assert entry_file is not None, f"`python -m {entry}`: the package has no __main__.py"
    tree = _tree(entry_file)
    functions = _functions(tree)
    entry_nodes = [
        node
        for name in _main_guard_calls(tree)
        if name in functions
        for node in import_nodes(functions[name], local=True)
    ]
    light = closure(root, [entry, *imported_modules(root, entry_file, entry_nodes)], local=False)

    stage = f"{PACKAGE}.stages.{command.replace('-', '_')}"
    heavy = [stage] if module_file(root, stage) is not None else []
    # The command's function: decorated `@app.command(...)`, or the entry module's function of its name.
    bodies = [
        (path, function)
        for path in light
        for function in _functions(_tree(path)).values()
        if _command_name(function) == command or (path == entry_file and function.name == command.replace("-", "_"))
    ]
    assert bodies or heavy, f"`python -m {entry} {command}`: no `{command}` command in its modules, and no {stage}"
    for path, function in bodies:
        heavy.extend(imported_modules(root, path, import_nodes(function, local=True)))
    return light | closure(root, heavy, local=True)


# ---------------------------------------------------------------- dvc.yaml


def pneumo_stages(dvc_yaml: Path) -> dict[str, dict]:
    """The stages whose command is `python -m pneumo...`, each with its entry module, command and deps."""
    stages = {}
    for name, stage in yaml.safe_load(dvc_yaml.read_text())["stages"].items():
        argv = shlex.split(stage["cmd"])
        at = argv.index("-m") if "-m" in argv else len(argv)
        if argv[at + 1 : at + 2] and argv[at + 1].split(".")[0] == PACKAGE:
            command = argv[at + 2] if len(argv) > at + 2 else ""
            stages[name] = {"entry": argv[at + 1], "command": command, "deps": [str(d) for d in stage.get("deps", [])]}
    return stages


def covers(dep: str, path: Path) -> bool:
    dep_path = Path(dep.rstrip("/"))
    return dep_path == path or dep_path in path.parents


STAGES = pneumo_stages(REPO / "dvc.yaml")


def _runs(stage: str) -> set[Path]:
    spec = STAGES[stage]
    return {path.relative_to(REPO) for path in stage_modules(REPO, spec["entry"], spec["command"])}


def test_every_stage_of_the_dag_runs_pneumo():
    assert set(STAGES) >= {"check", "prepare", "train", "evaluate", "export", "report"}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_deps_cover_every_module_the_stage_runs(stage):
    deps = STAGES[stage]["deps"]
    missing = sorted(
        str(path) for path in _runs(stage) if not inert(REPO / path) and not any(covers(dep, path) for dep in deps)
    )
    assert not missing, f"dvc.yaml stage {stage!r} runs {missing}, which its deps leave out: add them (or their folder)"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_deps_hold_no_module_the_stage_does_not_run(stage):
    runs = _runs(stage)
    extra = []
    for dep in STAGES[stage]["deps"]:
        if not covers(PACKAGE, Path(dep)):
            continue
        target = REPO / dep
        assert target.exists(), f"dvc.yaml stage {stage!r}: dep {dep} does not exist"
        files = [target] if target.is_file() else sorted(target.rglob("*.py"))
        extra += [
            f"{dep}: {path.relative_to(REPO)}"
            for path in files
            if path.suffix == ".py" and path.relative_to(REPO) not in runs
        ]
    assert not extra, (
        f"dvc.yaml stage {stage!r} depends on code it never runs {extra}: "
        "list the files it runs instead of their folder, or drop the dep"
    )


def test_the_check_stage_reruns_when_params_change():
    assert "params.yaml" in STAGES["check"]["deps"]


def test_the_report_is_told_every_input_it_depends_on():
    """Its command passes each data dep by option, so no input falls back to a default path."""
    argv = shlex.split(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["report"]["cmd"])
    passed = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    data = [dep for dep in STAGES["report"]["deps"] if not covers(PACKAGE, Path(dep))]
    missing = [dep for dep in data if dep not in passed.values()]
    assert data and not missing, f"dvc.yaml stage 'report' depends on {missing} but does not pass them to its command"
    assert passed["--prepared"] == "${data.prepared_dir}"


# ---------------------------------------------------------------- the rule itself, on a made-up package


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_the_closure_follows_what_runs_and_only_that(tmp_path):
    _write(
        tmp_path,
        {
            "pneumo/__init__.py": "from pneumo.core import base\n",
            "pneumo/core/__init__.py": "",
            "pneumo/core/base.py": "import os\n",
            "pneumo/core/lazy.py": "",
            "pneumo/core/typed.py": "",
            "pneumo/core/unused.py": "",
            "pneumo/cli/__init__.py": "",
            "pneumo/cli/stages.py": (
                "import typer\nfrom pneumo.cli import light\napp = typer.Typer()\n\n"
                "@app.command()\ndef train():\n    from pneumo.stages import train\n\n"
                "@app.command('other-stage')\ndef other():\n    from pneumo.core import unused\n\n"
                "def plain_stage():\n    from pneumo.core import typed\n\n"
                "def main():\n    from pneumo.core import started\n    app()\n\n"
                "if __name__ == '__main__':\n    main()\n"
            ),
            "pneumo/core/started.py": "from pneumo.core import base\n",
            "pneumo/cli/light.py": "def f():\n    from pneumo.core import unused\n",
            "pneumo/stages/__init__.py": "",
            "pneumo/stages/train.py": (
                "from typing import TYPE_CHECKING\nfrom ..core import base\nif TYPE_CHECKING:\n"
                "    from pneumo.core import typed\n\ndef run():\n    from .helper import go\n"
            ),
            "pneumo/stages/helper.py": (
                "def go():\n    import importlib\n    importlib.import_module('pneumo.core.lazy')\n"
            ),
        },
    )
    runs = {str(p.relative_to(tmp_path)) for p in stage_modules(tmp_path, "pneumo.cli.stages", "train")}
    assert runs == {
        "pneumo/__init__.py",
        "pneumo/core/__init__.py",
        "pneumo/core/base.py",
        "pneumo/core/lazy.py",
        "pneumo/core/started.py",
        "pneumo/cli/__init__.py",
        "pneumo/cli/stages.py",
        "pneumo/cli/light.py",
        "pneumo/stages/__init__.py",
        "pneumo/stages/train.py",
        "pneumo/stages/helper.py",
    }
    other = {str(p.relative_to(tmp_path)) for p in stage_modules(tmp_path, "pneumo.cli.stages", "other-stage")}
    assert "pneumo/core/unused.py" in other and "pneumo/stages/train.py" not in other
    plain = {str(p.relative_to(tmp_path)) for p in stage_modules(tmp_path, "pneumo.cli.stages", "plain-stage")}
    assert "pneumo/core/typed.py" in plain and "pneumo/core/unused.py" not in plain
    with pytest.raises(AssertionError, match="no `nowhere` command"):
        stage_modules(tmp_path, "pneumo.cli.stages", "nowhere")


def test_a_docstring_alone_is_inert_and_any_statement_is_not(tmp_path):
    (tmp_path / "a.py").write_text('"""Only a docstring."""\n')
    (tmp_path / "b.py").write_text('"""A docstring."""\n\nfrom x import y\n')
    (tmp_path / "c.py").write_text("")
    assert inert(tmp_path / "a.py") and inert(tmp_path / "c.py") and not inert(tmp_path / "b.py")


def test_a_folder_dep_covers_what_it_holds_and_nothing_beside_it():
    assert covers("pneumo/core", Path("pneumo/core/config.py"))
    assert covers("pneumo/core/", Path("pneumo/core/sub/x.py"))
    assert not covers("pneumo/core", Path("pneumo/core_extra.py"))
    assert not covers("pneumo/nn/model.py", Path("pneumo/nn/gradcam.py"))
