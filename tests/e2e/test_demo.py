"""``longtail demo --quick`` as a user runs it: a child service with its own Ray, the nine-loss digits comparison,
the results table, and everything stopped at the end."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.cli import quick_demo_spec

pytestmark = pytest.mark.e2e

DEADLINE_S = 420


def test_demo_quick() -> None:
    longtail = shutil.which("longtail", path=str(Path(sys.executable).parent))
    cmd = [longtail] if longtail else [sys.executable, "-m", "service.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LONGTAIL_") and k != "RAY_ADDRESS"}
    env["PYTHONUNBUFFERED"] = "1"
    done = subprocess.run(
        cmd + ["demo", "--quick"], capture_output=True, text=True, timeout=DEADLINE_S, env=env, stdin=subprocess.DEVNULL
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Traceback" not in output

    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("loss "))
    for column in ("balanced acc", "many", "medium", "few", "gain vs CE", "95% CI", "seeds", "best config"):
        assert column in header, header
    rows = {line.split()[0]: line for line in lines[lines.index(header) + 2 :] if line and not line.startswith(" ")}
    assert "control" in rows and "ref" in rows["control"]
    for branch in quick_demo_spec()["losses"]:
        label = branch.get("label") or branch["name"]
        assert label in rows, f"no row for {label}:\n{done.stdout}"
        # a signed gain in points with its spread over the 3 seeds, its 95% CI, and the seed count
        assert re.search(r"\s[+-]\d+\.\d ± \d+\.\d\s+\[[+-]\d+\.\d, [+-]\d+\.\d\]\s+3(\s|$)", rows[label]), rows[label]
    assert re.search(r"\s3(\s|$)", rows["control"]), rows["control"]
    assert any(line.startswith("Selected on validation") for line in lines), done.stdout
    assert "selected on validation, test only reported, over 3 seeds per config" in done.stdout

    url = re.search(r"Full results: (http://127\.0\.0\.1:\d+)/jobs/", done.stdout)
    assert url, done.stdout
    with pytest.raises(httpx.ConnectError):  # the child service is gone
        httpx.get(f"{url.group(1)}/healthz", timeout=2)
    state = re.search(r"state: (\S+)\)", done.stdout)
    assert state and not Path(state.group(1)).exists()  # the temporary state dir was removed
