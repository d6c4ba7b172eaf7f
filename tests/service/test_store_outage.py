"""The database goes away while the service runs (a real PostgreSQL server stopped, then started again).

The API answers 503 ``store_unavailable`` (not 500) meanwhile; a real driver ``EventSender`` keeps its events in its
spool and delivers every one once the database is back, without a restart of the service.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pg import PgServer, start_server
from support import tiny_spec, wait_for

from jobs.driver import EventSender
from tests.service.test_client import LiveServer, make_settings


@pytest.fixture
def own_pg() -> Iterator[PgServer]:
    """A server of this test's own (the session's one must not be stopped under the other tests)."""
    server = start_server()
    try:
        yield server
    finally:
        server.discard()


def test_database_outage_is_503_and_the_driver_spool_delivers_afterwards(tmp_path: Path, own_pg: PgServer) -> None:
    url = own_pg.url(own_pg.create_db())
    live = LiveServer(make_settings(tmp_path / "s", store_url=url)).start()
    sender = None
    try:
        job_id = httpx.post(f"{live.url}/jobs", json=tiny_spec()).json()["id"]
        sender = EventSender(job_id, live.url, live.secret(job_id), tmp_path / "spool", max_backoff_s=0.5)
        sender.emit({"type": "trial_started", "trial_id": "a", "branch": "focal", "branch_index": 0,
                     "is_control": False, "config": {}})  # fmt: skip
        assert sender.flush(10)

        own_pg.stop()
        r = httpx.get(f"{live.url}/jobs/{job_id}", timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
        assert r.headers["retry-after"] == "5"
        assert httpx.post(f"{live.url}/jobs", json=tiny_spec(), timeout=30).status_code == 503
        for epoch in (1, 2):
            sender.emit({"type": "epoch", "trial_id": "a", "epoch": epoch, "metrics": {"balanced_accuracy": 0.5}})
        wait_for(lambda: sender.failures >= 1, 20, "the driver to meet the outage")
        assert sender.pending() == 2
        assert len((tmp_path / "spool" / "events.jsonl").read_text().splitlines()) == 3

        own_pg.start()
        assert sender.flush(30), "the spooled events were not delivered after the database came back"
        job = httpx.get(f"{live.url}/jobs/{job_id}", timeout=30).json()
        assert job["status"] == "running" and job["progress"]["epochs_reported"] == 2
    finally:
        if sender is not None:
            sender.close()
        live.stop()
