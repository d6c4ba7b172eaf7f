"""The web UI's static files: ES modules served as JavaScript, a complete module graph, all in the package data."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from service.app import STATIC_DIR
from service.settings import Settings
from tests.service.conftest import Api

ROOT = Path(__file__).resolve().parents[2]
# `import ... from "./x.js"`, `export ... from "./x.js"`, `import "./x.js"` and `import("./x.js")`.
SPECIFIER = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(?\s*)["']([^"']+)["']""")


def static_files(suffix: str) -> list[Path]:
    return sorted(f for f in STATIC_DIR.rglob(f"*{suffix}") if f.is_file())


def test_every_module_is_served_as_javascript(make_api: Callable[..., Api], settings: Settings) -> None:
    # A system whose mime table maps .js to text/plain (a Windows registry entry) must still serve JavaScript:
    # browsers refuse to run a module script with any other type.
    mimetypes.add_type("text/plain", ".js")
    try:
        api = make_api(settings)
        modules = static_files(".js")
        assert len(modules) > 5, modules  # the entry module and the modules under js/
        for file in modules:
            path = f"/ui/{file.relative_to(STATIC_DIR).as_posix()}"
            r = api.client.get(path)
            assert r.status_code == 200, path
            assert r.headers["content-type"].split(";")[0] == "text/javascript", (path, r.headers["content-type"])
            assert r.headers["x-content-type-options"] == "nosniff"
        assert api.client.get("/ui/app.css").headers["content-type"].startswith("text/css")
    finally:
        mimetypes.add_type("text/javascript", ".js")


def test_index_loads_the_entry_module() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts == ['<script type="module" src="/ui/app.js">'], scripts


def test_module_graph_is_complete_and_local() -> None:
    """Every import names a relative path to a file that exists: no bare names (no bundler, no import map)."""
    reached: set[Path] = set()
    todo = [STATIC_DIR / "app.js"]
    while todo:
        file = todo.pop()
        if file in reached:
            continue
        reached.add(file)
        for spec in SPECIFIER.findall(file.read_text()):
            assert spec.startswith(("./", "../")) and spec.endswith(".js"), f"{file.name}: import {spec!r}"
            target = (file.parent / spec).resolve()
            assert target.is_file(), f"{file.name}: import {spec!r} names no file"
            assert STATIC_DIR in target.parents, f"{file.name}: import {spec!r} leaves service/static"
            todo.append(target)
    # Every module is reached from the entry module (none is left behind by a split).
    assert reached == set(static_files(".js")), sorted(str(p) for p in set(static_files(".js")) - reached)


def test_static_files_are_package_data() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["service"]
    package = STATIC_DIR.parent
    covered = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    missing = [f for f in STATIC_DIR.rglob("*") if f.is_file() and f not in covered]
    assert not missing, missing
