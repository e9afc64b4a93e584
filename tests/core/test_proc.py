"""pneumo.core.proc: the one process runner (real child processes, real git and DVC)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from pneumo.core import proc

PRINT_ENV = "import json, os; print(json.dumps({k: os.environ.get(k) for k in %r}))"


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_quiet_environ_turns_telemetry_off_and_keeps_a_chosen_log_level(monkeypatch):
    monkeypatch.setenv("DVC_NO_ANALYTICS", "0")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)
    proc.quiet_environ()
    assert os.environ["DVC_NO_ANALYTICS"] == "1" and os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"  # a default only: the user's choice stays
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    proc.quiet_environ()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"


def test_a_child_gets_telemetry_off_this_interpreter_first_on_path_and_the_extras(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_NO_ANALYTICS", "0")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin")
    keys = ["DVC_NO_ANALYTICS", "PREFECT_SERVER_ANALYTICS_ENABLED", "TF_CPP_MIN_LOG_LEVEL", "PATH", "EXTRA"]
    seen = json.loads(proc.run(_py(PRINT_ENV % keys), tmp_path, env={"EXTRA": "x"}).stdout)
    assert seen["DVC_NO_ANALYTICS"] == "1" and seen["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert seen["TF_CPP_MIN_LOG_LEVEL"] == "2" and seen["EXTRA"] == "x"
    assert seen["PATH"] == f"{Path(sys.executable).parent}{os.pathsep}/usr/bin"
    assert proc.child_env({"PATH": "/p"})["PATH"] == "/p"  # an explicit extra wins
    assert proc.child_env(proc.child_env())["PATH"].count(str(Path(sys.executable).parent)) == 1


def test_run_captures_output_and_runs_in_the_folder(tmp_path):
    done = proc.run(_py("import os; print(os.getcwd())"), tmp_path)
    assert done.returncode == 0 and Path(done.stdout.strip()) == tmp_path.resolve()


def test_a_failure_names_the_command_folder_exit_and_end_of_output_with_secrets_masked(tmp_path):
    code = "import sys; print('token=hunter2 out'); sys.stderr.write('x' * 2000 + ' bad hunter2\\n'); sys.exit(3)"
    with pytest.raises(proc.CommandError) as err:
        proc.run([*_py(code), "--password", "hunter2"], tmp_path, secrets=("hunter2", ""), tail=50)
    exc = err.value
    assert isinstance(exc, RuntimeError) and exc.returncode == 3 and exc.cwd == tmp_path
    assert str(exc).startswith(f"`{sys.executable} -c ") and f"failed in {tmp_path} (exit 3): " in str(exc)
    assert exc.detail == ("x" * 2000 + " bad ***")[-50:] and len(exc.detail) == 50  # stderr's end, masked
    assert "--password ***" in exc.shown
    assert "hunter2" not in str(exc) + exc.stdout + exc.stderr + exc.shown + exc.error_line
    assert exc.stdout == "token=*** out\n"


def test_without_check_a_failure_is_returned(tmp_path):
    assert proc.run(_py("import sys; sys.exit(5)"), tmp_path, check=False).returncode == 5


def test_error_line_is_the_tools_own_last_error_else_its_last_line(tmp_path):
    code = "import sys; print('ERROR: first'); print('ERROR: the real one'); print('hint: try again'); sys.exit(1)"
    with pytest.raises(proc.CommandError) as err:
        proc.run(_py(code), tmp_path)
    assert err.value.error_line == "ERROR: the real one"
    with pytest.raises(proc.CommandError) as err:
        proc.run(_py("import sys; print('one'); print('two  '); sys.exit(1)"), tmp_path)
    assert err.value.error_line == "two"
    with pytest.raises(proc.CommandError) as err:
        proc.run(_py("import sys; sys.exit(1)"), tmp_path)
    assert err.value.error_line == "no output"


def test_stream_hands_over_every_line_in_order_and_returns_the_exit_code(tmp_path):
    code = (
        "import sys\n"
        "print('one', flush=True)\nsys.stderr.write('two\\n'); sys.stderr.flush()\nprint('three')\nsys.exit(4)"
    )
    lines: list[str] = []
    assert proc.stream(_py(code), tmp_path, lines.append) == 4
    assert lines == ["one", "two", "three"]
    seen: list[str] = []
    assert proc.stream(_py(PRINT_ENV % ["DVC_NO_ANALYTICS"]), tmp_path, seen.append) == 0
    assert json.loads(seen[0]) == {"DVC_NO_ANALYTICS": "1"}


def test_git_returns_stdout_and_raises_on_failure(tmp_path):
    proc.git(tmp_path, "init", "-q")
    assert proc.git(tmp_path, "rev-parse", "--is-inside-work-tree").strip() == "true"
    with pytest.raises(proc.CommandError, match=r"`git rev-parse no-such-rev` failed"):
        proc.git(tmp_path, "rev-parse", "no-such-rev")


def test_dvc_runs_this_environments_dvc_and_parses_json(tmp_path):
    with pytest.raises(proc.CommandError) as err:
        proc.dvc(tmp_path, "status")
    assert err.value.error_line.startswith("ERROR") and "DVC repository" in err.value.error_line
    proc.git(tmp_path, "init", "-q")
    proc.dvc(tmp_path, "init", "-q")
    assert proc.dvc_json(tmp_path, "params", "diff") == {}  # no params yet
    (tmp_path / "params.yaml").write_text("a: 1\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  s:\n    cmd: echo\n    params: [a]\n")
    assert proc.dvc_json(tmp_path, "status") == {"s": [{"changed deps": {"params.yaml": "new"}}]}
