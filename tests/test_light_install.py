"""The client-only install: the wheel, installed WITHOUT extras into a fresh venv (dependencies from the package
index), imports no server or training library, says which extra ``serve`` and ``demo`` need, and runs the client
commands against a real uvicorn server of the dev environment (the app with a FakeDispatcher).

Slow-ish (a wheel build, a venv, a pip install: about 30 s with a warm pip cache), and in the default suite.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from support import tiny_spec, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "ray", "fastapi", "starlette", "sqlalchemy", "pydantic_settings", "uvicorn", "matplotlib")


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the project's wheel and its base dependencies only; returns its bin/ folder."""
    tmp = tmp_path_factory.mktemp("light")
    source = tmp / "src"  # build from a copy: no build/ or *.egg-info in the worktree
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("lt_core", "jobs", "service"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp / "dist").glob("longtail_service-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, capture_output=True, timeout=120)
    bin_dir = tmp / "venv" / "bin"
    done = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return bin_dir


def venv_env() -> dict[str, str]:
    """The caller's environment without anything that would point the venv's Python at the dev tree."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "LONGTAIL_URL", "LONGTAIL_TOKEN")
    return {k: v for k, v in os.environ.items() if k not in drop}


def longtail(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "longtail"), *args], capture_output=True, text=True, timeout=120, env=venv_env(), cwd=cwd
    )


def test_the_client_imports_no_server_or_training_library(light_venv: Path, tmp_path: Path) -> None:
    code = (
        "import importlib.util, json, sys\n"
        "import service\n"
        "from service import AsyncClient, Client\n"
        "import service.client, service.cli\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps({'file': service.__file__, 'loaded': sorted(m for m in heavy if m in sys.modules),\n"
        "                  'installed': sorted(m for m in heavy if importlib.util.find_spec(m) is not None)}))\n"
    )
    done = subprocess.run(
        [str(light_venv / "python"), "-c", code], capture_output=True, text=True, env=venv_env(), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert str(light_venv.parent) in seen["file"]  # the installed wheel, not the dev tree
    assert seen["installed"] == []  # no extras: none of them is even installed
    assert seen["loaded"] == []


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_serve_and_demo_name_the_extra_to_install(light_venv: Path, tmp_path: Path, command: str) -> None:
    done = longtail(light_venv, command, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: longtail {command} needs ")
    assert "pip install 'longtail-service[server,train]'" in done.stderr and "[all]" in done.stderr


@pytest.fixture
def server(tmp_path: Path) -> Iterator[object]:
    from tests.service.test_client import LiveServer, make_settings

    live = LiveServer(make_settings(tmp_path / "svc")).start()
    yield live
    live.stop()


def test_the_client_commands_against_a_real_server(light_venv: Path, server: object, tmp_path: Path) -> None:
    url = server.url  # type: ignore[attr-defined]
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(name="light")))
    base = ["--url", url]

    def finish_when_submitted() -> None:
        jobs = wait_for(lambda: httpx.get(f"{url}/jobs").json()["items"], 30, "the submitted job")
        server.finish(jobs[0]["id"])  # type: ignore[attr-defined]

    driver = threading.Thread(target=finish_when_submitted)
    driver.start()
    done = longtail(light_venv, *base, "submit", str(spec), "--wait", cwd=tmp_path)
    driver.join()
    assert done.returncode == 0, done.stderr
    assert "control (ce)" in done.stdout and "gain vs CE" in done.stdout and "succeeded" in done.stderr
    job_id = httpx.get(f"{url}/jobs").json()["items"][0]["id"]

    done = longtail(light_venv, *base, "status", job_id, "--json", cwd=tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout) == httpx.get(f"{url}/jobs/{job_id}").json()
    done = longtail(light_venv, *base, "results", job_id, "--json", cwd=tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout) == httpx.get(f"{url}/jobs/{job_id}/results").json()

    done = longtail(light_venv, *base, "submit", str(spec), "--json", cwd=tmp_path)
    other = json.loads(done.stdout)["id"]
    done = longtail(light_venv, *base, "cancel", other, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f"job {other} cancelled"
    done = longtail(light_venv, *base, "cancel", other, cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.startswith("error: ") and "already cancelled" in done.stderr

    done = longtail(light_venv, *base, "losses", "--json", cwd=tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout) == httpx.get(f"{url}/losses").json()
    done = longtail(light_venv, *base, "datasets", cwd=tmp_path)
    assert done.returncode == 0 and "digits_lt" in done.stdout

    bad = tmp_path / "bad.yaml"  # a spec checked locally, by the spec models of the light install
    bad.write_text("dataset: {name: digits_lt}\nlosses: [{name: focal, gamma: -1}]\n")
    done = longtail(light_venv, *base, "submit", str(bad), cwd=tmp_path)
    assert done.returncode == 1 and "losses[0].gamma: must be >= 0" in done.stderr
