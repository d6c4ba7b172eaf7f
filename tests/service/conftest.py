"""Fixtures of the API tests: the real app and a real database, with a FakeDispatcher instead of Ray.

The database is a SQLite file; a module that overrides ``db_url`` with one parametrized over ``BACKENDS`` runs its
tests on SQLite and on a real PostgreSQL server (``tests/pg.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pg import db_url_for
from support import tiny_spec, wait_for  # noqa: F401 - re-exported to the service tests

from service.app import create_app
from service.settings import Settings
from service.testing import FakeDispatcher

ALICE, BOB = "alice-token-0001", "bob-token-00002"
SECRET_HEADER = "X-Longtail-Driver-Secret"


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file (the modules that test the store override it with both backends)."""
    return db_url_for("sqlite", request, tmp_path)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    (tmp_path / "data").mkdir()
    return Settings(
        state_dir=tmp_path,
        store_url=db_url,
        data_root=tmp_path / "data",
        reconcile_interval_s=3600,
        sse_poll_s=0.05,
        sse_heartbeat_s=0.2,
        api_tokens={},
        max_running_jobs=10,
    )


@pytest.fixture
def auth_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_tokens": {ALICE: "alice", BOB: "bob"}})


@pytest.fixture
def fake() -> FakeDispatcher:
    return FakeDispatcher()


class Api:
    """A TestClient plus shortcuts: run the dispatcher loop once, act as a job's driver."""

    def __init__(self, client: TestClient, fake: FakeDispatcher) -> None:
        self.client = client
        self.fake = fake
        self.service = client.app.state.service  # type: ignore[attr-defined]
        # Dispatch only when a test calls tick(): no background pass races with its assertions.
        self.service.kick = lambda: None

    def tick(self) -> None:
        self.client.portal.call(self.service.tick)  # type: ignore[union-attr]

    def submit(self, spec: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> str:
        r = self.client.post("/jobs", json=spec or tiny_spec(), headers=headers or {})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def start(self, spec: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> str:
        job_id = self.submit(spec, headers)
        self.tick()
        return job_id

    def send(self, job_id: str, events: list[dict[str, Any]], secret: str | None = None) -> Any:
        secret = secret if secret is not None else self.fake.submission(job_id).secret
        return self.client.post(
            f"/internal/jobs/{job_id}/events", json={"events": events}, headers={SECRET_HEADER: secret}
        )


@pytest.fixture
def make_api(fake: FakeDispatcher) -> Iterator[Callable[..., Api]]:
    clients: list[TestClient] = []

    def make(settings: Settings, dispatcher: FakeDispatcher | None = None, **kwargs: Any) -> Api:
        client = TestClient(create_app(settings, dispatcher=dispatcher or fake), **kwargs)
        client.__enter__()
        clients.append(client)
        return Api(client, dispatcher or fake)

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: Callable[..., Api], settings: Settings) -> Api:
    return make_api(settings)
