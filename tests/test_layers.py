"""The import contracts of pyproject.toml ([tool.importlinter]) hold, so plain `pytest` enforces
the layers as CI's `lint-imports` does: dependencies point down only, TensorFlow stays out of
core, data and ops, Prefect stays in flows."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from support import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts(pyproject: Path = REPO / "pyproject.toml") -> list[dict]:
    return tomllib.loads(pyproject.read_text())["tool"]["importlinter"]["contracts"]


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` over the packages in `root`, with `root`'s pyproject.toml (no cache written)."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=root, capture_output=True, text=True, timeout=120
    )


def _counts(output: str) -> tuple[int, int]:
    found = re.search(r"Contracts: (\d+) kept, (\d+) broken", output)
    assert found, output[-2000:]
    return int(found[1]), int(found[2])


def test_every_import_contract_is_kept():
    done = _lint_imports(REPO)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert _counts(done.stdout) == (len(_contracts()), 0)


def test_the_contracts_state_the_layers_and_the_forbidden_imports():
    contracts = _contracts()
    (layers,) = [c for c in contracts if c["type"] == "layers"]
    assert layers["layers"][0] == "flows" and layers["layers"][-1] == "pneumo.core"
    forbidden = [(set(c["source_modules"]), set(c["forbidden_modules"])) for c in contracts if c["type"] == "forbidden"]
    assert any(
        {"pneumo.core", "pneumo.data", "pneumo.ops"} <= src and {"tensorflow", "keras"} <= bad for src, bad in forbidden
    )
    assert any("pneumo" in src and "prefect" in bad for src, bad in forbidden)


def test_a_broken_rule_fails_naming_its_contract(tmp_path):
    """The same contracts over a copy of the code where core imports TensorFlow and the CLI."""
    for package in ("pneumo", "flows"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "assets"))
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "pneumo" / "core" / "broken.py").write_text("import tensorflow\n\nfrom pneumo.cli import app\n")

    done = _lint_imports(tmp_path)
    assert done.returncode != 0
    broken = {
        c["name"]
        for c in _contracts()
        if c["type"] == "layers"
        or ("tensorflow" in c.get("forbidden_modules", []) and "pneumo.core" in c["source_modules"])
    }
    assert len(broken) >= 2 and all(f"{name} BROKEN" in done.stdout for name in broken), done.stdout[-3000:]
    assert "pneumo.core.broken" in done.stdout


def test_contributing_names_every_module_of_the_package():
    """CONTRIBUTING.md's module-by-module tree keeps up with the code: a new module must be described there."""
    text = (REPO / "CONTRIBUTING.md").read_text()
    tree = text[text.index("### The package, module by module") :]
    modules = sorted(
        p.relative_to(REPO)
        for folder in ("pneumo", "flows")
        for p in (REPO / folder).rglob("*.py")
        if p.name != "__init__.py" and "fetch" not in p.parent.parts  # data/fetch/ is described as one folder
    )
    missing = [str(m) for m in modules if f" {m.name} " not in tree]
    assert not missing, f"CONTRIBUTING.md's package tree does not describe {missing}"
