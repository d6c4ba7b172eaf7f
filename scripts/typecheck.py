#!/usr/bin/env python
"""Type checks, run the same way locally and in CI (``scripts/test.sh`` calls this before pytest).

One mypy run over ``lt_core``, ``jobs`` and ``service`` (one process, one cache; the flags are in
``pyproject.toml``'s ``[tool.mypy]``):

- ``lt_core``: strict; must have no error.
- ``jobs``: ``check_untyped_defs``; must have no error.
- ``service``: checked against ``mypy-baseline.txt``, its errors when the check came in, without line numbers
  (so unrelated edits do not touch it). The check fails on any error that is not in the baseline, and on any
  baseline entry that no longer occurs: the baseline only shrinks, and must be shrunk when code is fixed.

Usage, from the repository root::

    python scripts/typecheck.py            # the check (what CI runs); exit 1 on a failure
    python scripts/typecheck.py --sync     # regenerate the baseline from the current errors, then check

``--sync`` is what to run after fixing baselined errors or after merging branches that move code in ``service``;
it only ever writes errors of the paths allowed a baseline (``BASELINE_PATHS``), so an error anywhere else still
fails the check. Review the diff of ``mypy-baseline.txt``: it should only lose lines, or move them with the code.

The baseline matching is mypy-baseline's (``[tool.mypy-baseline]`` in ``pyproject.toml``): entries are
``path:0: error: message  [code]`` and count as a multiset, notes are not kept.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lt_core", "jobs", "service")
DEFAULT_BASELINE = "mypy-baseline.txt"

# The only paths whose errors may be in the baseline: service/, until it is clean. lt_core (strict) and jobs pass
# outright: any error of theirs fails the check.
BASELINE_PATHS = ("service/",)

# A mypy diagnostic: "path.py:12: error: message  [code]" (an optional column after the line).
_LINE = re.compile(r"^(?P<path>[^:\s]+\.pyi?):\d+:(?:\d+:)? (?P<severity>error|note): ")
_FOUND = re.compile(r"^Found (?P<n>\d+) errors? in \d+ files?")


def errors_by_path(mypy_output: str) -> list[str]:
    """The path of each error (not note) line of ``mypy_output``, in order."""
    paths = []
    for line in mypy_output.splitlines():
        m = _LINE.match(line)
        if m and m.group("severity") == "error":
            paths.append(m.group("path").replace("\\", "/"))
    return paths


def allowed_in_baseline(path: str) -> bool:
    """Whether errors of ``path`` (relative, with /) may be listed in the baseline."""
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in BASELINE_PATHS)


def summary(paths: list[str]) -> str:
    """Error counts per package."""
    counts = Counter(path.split("/", 1)[0] for path in paths)
    keys = list(PACKAGES) + sorted(set(counts) - set(PACKAGES))
    return ", ".join(f"{k} {counts[k]}" for k in keys)


def run_mypy() -> tuple[int, str]:
    """Run mypy over PACKAGES from the repository root; (exit status, stdout and stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", *PACKAGES], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return proc.returncode, proc.stdout + proc.stderr


def check_output_parsed(status: int | None, output: str, paths: list[str]) -> str | None:
    """A message when mypy failed to run or its output was not understood, else None.

    An error line that nothing parses would pass the baseline filter unseen, so the count of parsed errors must
    equal mypy's own "Found N errors".
    """
    if status is not None and status not in (0, 1):
        return f"mypy did not run (exit status {status})"
    found = [int(m.group("n")) for line in output.splitlines() if (m := _FOUND.match(line))]
    expected = found[-1] if found else 0
    if status == 1 and not found:
        return "mypy reported errors but printed no 'Found N errors' line"
    if len(paths) != expected:
        return f"mypy reported {expected} errors but {len(paths)} were parsed: the output format changed?"
    return None


def mypy_baseline(command: str, lines: str, baseline: Path) -> tuple[int, str]:
    """Run ``mypy-baseline <command>`` (filter or sync) on ``lines`` with the repository's configuration."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy_baseline",
            command,
            "--config",
            str(ROOT / "pyproject.toml"),
            "--baseline-path",
            str(baseline),
            "--no-colors",
        ],
        cwd=ROOT,
        input=lines,
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def misplaced_entries(baseline: Path) -> list[str]:
    """Baseline entries for paths that may not have a baseline (they must be fixed instead)."""
    if not baseline.exists():
        return []
    out = []
    for line in baseline.read_text(encoding="utf-8").splitlines():
        if line.strip() and not allowed_in_baseline(line.split(":", 1)[0]):
            out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the check (or --sync, then the check); 0 when it passes."""
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sync", action="store_true", help="rewrite the baseline from the current errors, then check")
    parser.add_argument(
        "--baseline-path", type=Path, default=ROOT / DEFAULT_BASELINE, help=f"default: {DEFAULT_BASELINE}"
    )
    parser.add_argument(
        "--mypy-output",
        type=Path,
        help="read mypy's output from this file instead of running mypy (for tests and for reading a CI log)",
    )
    args = parser.parse_args(argv)
    baseline: Path = args.baseline_path.resolve()  # mypy-baseline runs from the repository root

    start = time.monotonic()
    if args.mypy_output is not None:
        status, output = None, args.mypy_output.read_text(encoding="utf-8")
    else:
        status, output = run_mypy()
    elapsed = time.monotonic() - start
    paths = errors_by_path(output)
    problem = check_output_parsed(status, output, paths)
    if problem is not None:
        print(output, end="")
        print(f"typecheck: FAILED: {problem}")
        return 1
    where = "" if args.mypy_output is not None else f" in {elapsed:.0f} s"
    print(f"typecheck: mypy errors{where}: {summary(paths)}")

    if args.sync:
        # Only errors of the paths allowed a baseline go in; any other stays an error for the check below.
        keep = [line for line in output.splitlines(keepends=True) if _baselinable(line)]
        status_sync, text = mypy_baseline("sync", "".join(keep), baseline)
        if status_sync != 0:
            print(text, end="")
            print("typecheck: FAILED: mypy-baseline sync")
            return 1

    failed = False
    misplaced = misplaced_entries(baseline)
    if misplaced:
        failed = True
        print(f"typecheck: {baseline.name} lists errors of paths that must have none ({', '.join(BASELINE_PATHS)}")
        print("  are the only ones allowed a baseline); fix them and remove these entries:")
        for line in misplaced:
            print(f"  {line}")
    status_filter, text = mypy_baseline("filter", output, baseline)
    if status_filter != 0:
        failed = True
        print(text, end="")
        print(f"typecheck: 'new' errors are not in {baseline.name}: fix them (only errors of")
        print(f"  {', '.join(BASELINE_PATHS)} may ever be baselined). 'fixed' ones are baseline entries that no")
        print("  longer occur: remove them, or regenerate with `python scripts/typecheck.py --sync`.")
    entries = (
        sum(1 for line in baseline.read_text(encoding="utf-8").splitlines() if line.strip()) if baseline.exists() else 0
    )
    print(f"typecheck: {'FAILED' if failed else 'passed'} ({baseline.name}: {entries} entries)")
    return 1 if failed else 0


def _baselinable(line: str) -> bool:
    m = _LINE.match(line)
    return m is not None and m.group("severity") == "error" and allowed_in_baseline(m.group("path").replace("\\", "/"))


if __name__ == "__main__":
    sys.exit(main())
