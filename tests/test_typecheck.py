"""The type check: wired into the README's test command, and its baseline only shrinks.

scripts/typecheck.py is driven on synthetic mypy output (``--mypy-output``) and a baseline in a temporary folder;
one test runs mypy itself, on a two-line module, to pin the output format the baseline matching relies on. mypy is
never run over the repository here (CI runs it once, from scripts/test.sh).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("typecheck", ROOT / "scripts" / "typecheck.py")
assert _spec is not None and _spec.loader is not None
typecheck = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(typecheck)

SERVICE_ERR = (
    'service/store.py:{line}: error: Incompatible return value type (got "int", expected "str")  [return-value]'
)
SERVICE_ENTRY = 'service/store.py:0: error: Incompatible return value type (got "int", expected "str")  [return-value]'
OTHER_ERR = 'service/core.py:{line}: error: Name "undefined" is not defined  [name-defined]'


def _commands(script: Path) -> list[str]:
    return [
        line.strip() for line in script.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_readme_test_command_runs_the_type_check_before_pytest() -> None:
    commands = _commands(ROOT / "scripts" / "test.sh")
    assert "set -euo pipefail" in commands  # a failing type check stops the script
    typecheck_at = [i for i, c in enumerate(commands) if re.fullmatch(r"python scripts/typecheck\.py", c)]
    pytest_at = [i for i, c in enumerate(commands) if c.startswith("python -m pytest")]
    assert typecheck_at and pytest_at, commands
    assert typecheck_at[0] < pytest_at[0]
    assert "bash scripts/test.sh" in _commands(ROOT / ".ci" / "run")  # CI runs the README's command


def _run(tmp_path: Path, output_lines: list[str], baseline_lines: list[str] | None, *extra: str) -> tuple[int, str]:
    errors = sum(": error: " in line for line in output_lines)
    summary = [f"Found {errors} errors in 2 files (checked 9 source files)"] if errors else ["Success: no issues"]
    out = tmp_path / "mypy.txt"
    out.write_text("\n".join(output_lines + summary) + "\n")
    baseline = tmp_path / "baseline.txt"
    if baseline_lines is not None:
        baseline.write_text("".join(line + "\n" for line in baseline_lines))
    argv = ["--mypy-output", str(out), "--baseline-path", str(baseline), *extra]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "typecheck.py"), *argv], capture_output=True, text=True, check=False
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_errors_in_the_baseline_pass_wherever_their_line_moved(tmp_path: Path) -> None:
    rc, text = _run(tmp_path, [SERVICE_ERR.format(line=412), "service/store.py:412: note: a note"], [SERVICE_ENTRY])
    assert rc == 0, text
    assert "passed (baseline.txt: 1 entries)" in text


def test_a_new_error_fails(tmp_path: Path) -> None:
    rc, text = _run(tmp_path, [SERVICE_ERR.format(line=3), OTHER_ERR.format(line=8)], [SERVICE_ENTRY])
    assert rc == 1
    assert OTHER_ERR.format(line=8) in text  # named, with its line
    assert "new: 1" in text


def test_one_more_occurrence_of_a_baselined_error_fails(tmp_path: Path) -> None:
    rc, text = _run(tmp_path, [SERVICE_ERR.format(line=3), SERVICE_ERR.format(line=90)], [SERVICE_ENTRY])
    assert rc == 1
    assert "new: 1" in text


def test_a_stale_baseline_entry_fails(tmp_path: Path) -> None:
    stale = 'service/plots.py:0: error: Item "None" of "Axes | None" has no attribute "plot"  [union-attr]'
    rc, text = _run(tmp_path, [SERVICE_ERR.format(line=3)], [SERVICE_ENTRY, stale])
    assert rc == 1
    assert "fixed: 1" in text
    assert "--sync" in text  # says how to shrink the baseline


def test_lt_core_errors_fail_even_when_listed_in_the_baseline(tmp_path: Path) -> None:
    lt_err = "lt_core/metrics.py:5: error: Function is missing a return type annotation  [no-untyped-def]"
    lt_entry = lt_err.replace(":5:", ":0:")
    rc, text = _run(tmp_path, [lt_err], [lt_entry])
    assert rc == 1
    assert "must have none" in text and lt_entry in text


def test_sync_writes_entries_without_line_numbers_for_allowed_paths_only(tmp_path: Path) -> None:
    lt_err = "lt_core/metrics.py:5: error: Function is missing a return type annotation  [no-untyped-def]"
    rc, text = _run(tmp_path, [SERVICE_ERR.format(line=77), lt_err, "service/store.py:77: note: a note"], [], "--sync")
    assert (tmp_path / "baseline.txt").read_text().splitlines() == [SERVICE_ENTRY]
    assert rc == 1 and lt_err in text  # the lt_core error is not baselined: it still fails
    rc, text = _run(tmp_path, [SERVICE_ERR.format(line=78)], None)
    assert rc == 0, text


def test_output_that_does_not_parse_fails(tmp_path: Path) -> None:
    out = tmp_path / "mypy.txt"
    out.write_text("service/store.py(3): error: something\nFound 1 error in 1 file (checked 9 source files)\n")
    rc = typecheck.main(["--mypy-output", str(out), "--baseline-path", str(tmp_path / "baseline.txt")])
    assert rc == 1


def test_mypy_output_on_a_tiny_module_round_trips_through_the_baseline(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    pkg = tmp_path / "service"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text('def f() -> int:\n    return "not an int"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--config-file", "", "service"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = tmp_path / "mypy.txt"
    out.write_text(proc.stdout)
    baseline = tmp_path / "baseline.txt"
    args = ["--mypy-output", str(out), "--baseline-path", str(baseline)]
    assert typecheck.main(args) == 1  # new error against an empty baseline
    assert typecheck.main([*args, "--sync"]) == 0
    assert baseline.read_text().splitlines() == [
        'service/bad.py:0: error: Incompatible return value type (got "str", expected "int")  [return-value]'
    ]
    (pkg / "bad.py").write_text('\n\ndef f() -> int:\n    return "not an int"\n')  # the error moves down two lines
    moved = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--config-file", "", "service"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "service/bad.py:4: error" in moved.stdout
    out.write_text(moved.stdout)
    assert typecheck.main(args) == 0
