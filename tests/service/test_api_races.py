"""Concurrent submissions through real uvicorn servers, on SQLite and PostgreSQL: races are closed in the database.

Two servers (each its own app, store and connection pool, like two service processes) share one database.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
from pg import db_url_for
from support import tiny_spec

from service.store import JobStore
from tests.service.conftest import BACKENDS
from tests.service.test_client import LiveServer, make_settings


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return db_url_for(request.param, request, tmp_path)


def two_servers(tmp_path: Path, db_url: str, **overrides) -> list[LiveServer]:
    """Two servers on one database, warmed up by one job each (submitted, then cancelled).

    Nothing is dispatched: each server's FakeDispatcher would take the other's running jobs for lost ones. The
    warm-up request builds FastAPI's lazily made models before the race (two first requests building them at once
    emit a pydantic warning, which pytest turns into an error).
    """
    servers = []
    for i in range(2):
        settings = make_settings(tmp_path / f"s{i}", store_url=db_url, **overrides)
        server = LiveServer(settings).start()
        assert server._server is not None
        server._server.config.app.state.service.kick = lambda: None
        servers.append(server)
        job = httpx.post(f"{server.url}/jobs", json=tiny_spec(), headers={"Idempotency-Key": f"warm-up-{i}"})
        assert job.status_code == 201, job.text
        assert httpx.post(f"{server.url}/jobs/{job.json()['id']}/cancel").status_code == 200
    return servers


def post_at_once(servers: list[LiveServer], n: int, headers: dict[str, str]) -> list[httpx.Response]:
    barrier = threading.Barrier(n)
    responses: list[httpx.Response] = []

    def post(i: int) -> None:
        with httpx.Client(base_url=servers[i % len(servers)].url, timeout=60) as client:
            barrier.wait()
            responses.append(client.post("/jobs", json=tiny_spec(), headers=headers))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return responses


def count_active(db_url: str) -> int:
    store = JobStore(db_url)
    try:
        return store.count_active("local")
    finally:
        store.close()


def test_fifty_posts_with_one_idempotency_key_make_one_job(tmp_path: Path, db_url: str) -> None:
    servers = two_servers(tmp_path, db_url)
    try:
        responses = post_at_once(servers, 50, {"Idempotency-Key": "one-key"})
    finally:
        for s in servers:
            s.stop()
    assert Counter(r.status_code for r in responses) == {201: 50}, [r.text for r in responses if r.status_code != 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 49
    assert count_active(db_url) == 1


def test_quota_of_q_admits_exactly_q(tmp_path: Path, db_url: str) -> None:
    servers = two_servers(tmp_path, db_url, max_jobs_per_owner=4)
    try:
        responses = post_at_once(servers, 24, {})
    finally:
        for s in servers:
            s.stop()
    assert Counter(r.status_code for r in responses) == {201: 4, 429: 20}, [r.text for r in responses]
    assert count_active(db_url) == 4
