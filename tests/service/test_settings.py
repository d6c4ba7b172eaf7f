"""Settings from the environment, and the import rule: only service/dispatcher.py imports Ray."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.settings import Settings, is_loopback


def test_tokens_short_and_json_forms(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LONGTAIL_API_TOKENS", "tok-aaaaaaaa:alice, tok-bbbbbbbb:bob")
    assert Settings(state_dir=tmp_path).api_tokens == {"tok-aaaaaaaa": "alice", "tok-bbbbbbbb": "bob"}
    monkeypatch.setenv("LONGTAIL_API_TOKENS", '{"tok-cccccccc": "carol"}')
    assert Settings(state_dir=tmp_path).api_tokens == {"tok-cccccccc": "carol"}
    monkeypatch.setenv("LONGTAIL_API_TOKENS", "no-owner")
    with pytest.raises(ValidationError):
        Settings(state_dir=tmp_path)
    monkeypatch.setenv("LONGTAIL_API_TOKENS", "short:alice")
    with pytest.raises(ValidationError):
        Settings(state_dir=tmp_path)


def test_derived_paths_and_env(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LONGTAIL_MAX_RUNNING_JOBS", "3")
    monkeypatch.setenv("LONGTAIL_RAY_ADDRESS", "10.0.0.5:6379")
    s = Settings(state_dir=tmp_path, port=9001)
    assert s.store_url == f"sqlite:///{tmp_path / 'longtail.db'}"
    assert s.storage_path == tmp_path / "ray_results" and s.data_root == tmp_path / "data"
    assert s.public_url == "http://127.0.0.1:9001" and s.max_running_jobs == 3 and s.ray_address == "10.0.0.5:6379"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_only_the_dispatcher_imports_ray() -> None:
    root = Path(__file__).resolve().parents[2] / "service"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            if any(n == "ray" or n.startswith("ray.") for n in names) and path.name != "dispatcher.py":
                offenders.append(str(path))
    assert offenders == []


def test_stop_ray_on_exit_is_off_by_default_and_settable(tmp_path: Path, monkeypatch) -> None:
    from service.cli import commands, main

    assert Settings(state_dir=tmp_path).stop_ray_on_exit is False
    monkeypatch.setenv("LONGTAIL_STOP_RAY_ON_EXIT", "true")
    assert Settings(state_dir=tmp_path).stop_ray_on_exit is True
    served: list[dict[str, Any]] = []
    monkeypatch.setattr(commands, "run_server", lambda overrides, log_level: served.append(overrides))
    assert main(["serve", "--stop-ray-on-exit"]) == 0 and main(["serve"]) == 0
    assert served[0]["stop_ray_on_exit"] is True
    assert "stop_ray_on_exit" not in served[1]  # unset: the setting decides
