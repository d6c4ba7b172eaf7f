"""The store on a real SQLite file: the transition table, concurrent writers, idempotent events, restart."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from pathlib import Path

import pytest

from service.errors import IdempotencyConflict, IllegalTransition, NotFound, QuotaExceeded
from service.store import SCHEMA_VERSION, TRANSITIONS, JobStatus, JobStore
from service.testing import driver_events


def make_job(store: JobStore, owner: str = "alice", **kwargs):
    defaults = {"owner": owner, "spec": {"name": "j"}, "run_spec": "{}", "name": "j", "metric": "balanced_accuracy"}
    defaults.update(mode="max", trial_total=3)
    job, _ = store.create_job(**{**defaults, **kwargs})
    return job


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def store(db_url: str):
    s = JobStore(db_url)
    yield s
    s.close()


def put_in(store: JobStore, status: JobStatus):
    """A job in ``status``, reached through legal transitions only."""
    job = make_job(store)
    path = {
        JobStatus.QUEUED: [],
        JobStatus.RUNNING: [JobStatus.RUNNING],
        JobStatus.SUCCEEDED: [JobStatus.RUNNING, JobStatus.SUCCEEDED],
        JobStatus.FAILED: [JobStatus.RUNNING, JobStatus.FAILED],
        JobStatus.CANCELLED: [JobStatus.CANCELLED],
    }[status]
    for step in path:
        store.transition(job.id, step)
    return job


def test_sqlite_uses_wal_and_busy_timeout(store: JobStore, db_url: str) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    assert store.schema_version() == SCHEMA_VERSION


@pytest.mark.parametrize(("old", "new"), list(itertools.product(JobStatus, JobStatus)))
def test_transition_table_is_enforced(store: JobStore, old: JobStatus, new: JobStatus) -> None:
    job = put_in(store, old)
    if new in TRANSITIONS[old]:
        updated = store.transition(job.id, new)
        assert updated.status is new
        if new.terminal:
            assert updated.finished_at is not None
    else:
        with pytest.raises(IllegalTransition):
            store.transition(job.id, new)
        assert store.get_job(job.id).status is old


def test_terminal_states_have_no_way_out() -> None:
    assert all(not TRANSITIONS[s] for s in JobStatus if s.terminal)
    assert {s for s in JobStatus if not s.terminal} == {JobStatus.QUEUED, JobStatus.RUNNING}


def test_unknown_job(store: JobStore) -> None:
    with pytest.raises(NotFound):
        store.get_job("nope")
    with pytest.raises(NotFound):
        store.transition("nope", JobStatus.RUNNING)
    with pytest.raises(NotFound):
        store.ingest("nope", [])
    job = make_job(store, owner="alice")
    with pytest.raises(NotFound):
        store.get_job(job.id, owner="bob")


def test_idempotency_and_quota(store: JobStore) -> None:
    a = make_job(store, idempotency_key="k", body_hash="h1")
    b, created = store.create_job(
        owner="alice",
        spec={},
        run_spec="{}",
        name="j",
        metric="m",
        mode="max",
        trial_total=1,
        idempotency_key="k",
        body_hash="h1",
    )
    assert not created and b.id == a.id
    with pytest.raises(IdempotencyConflict):
        make_job(store, idempotency_key="k", body_hash="h2")
    make_job(store, max_active=2)
    with pytest.raises(QuotaExceeded):
        make_job(store, max_active=2)
    make_job(store, owner="bob", max_active=2)  # per owner


def test_concurrent_writers(store: JobStore, db_url: str) -> None:
    """Threads (and a second store on the same file, like a second process) write at once; nothing is lost."""
    other = JobStore(db_url)
    jobs = [make_job(store) for _ in range(4)]
    for job in jobs:
        store.transition(job.id, JobStatus.RUNNING)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            s = store if i % 2 else other
            job = jobs[i % len(jobs)]
            events = driver_events([f"t{i}"], epochs=5, start_seq=1000 * i)
            for event in events:
                s.ingest(job.id, [event])
            for _ in range(5):
                make_job(s, owner=f"owner{i}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(len(store.trial_rows(j.id)) for j in jobs) == 8
    assert sum(len(store.epoch_rows(j.id)) for j in jobs) == 40
    assert store.counts_by_status()["queued"] == 40
    # Racing transitions: exactly one of many concurrent cancels wins.
    job = make_job(store)
    outcomes: list[str] = []

    def cancel() -> None:
        try:
            (store if len(outcomes) % 2 else other).transition(job.id, JobStatus.CANCELLED)
            outcomes.append("ok")
        except IllegalTransition:
            outcomes.append("refused")

    threads = [threading.Thread(target=cancel) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] + ["refused"] * 5
    other.close()


def test_restart_keeps_everything(db_url: str, tmp_path: Path) -> None:
    store = JobStore(db_url)
    job = make_job(store, idempotency_key="k", body_hash="h")
    store.transition(job.id, JobStatus.RUNNING, submission_id="sub-1", secret_hash="abc")
    store.ingest(job.id, driver_events(["a", "b"], epochs=3))
    before = (store.get_job(job.id), store.trial_rows(job.id), store.epoch_rows(job.id), store.events_after(job.id))
    store.close()

    reopened = JobStore(db_url)
    after = (
        reopened.get_job(job.id),
        reopened.trial_rows(job.id),
        reopened.epoch_rows(job.id),
        reopened.events_after(job.id),
    )
    assert after == before
    assert after[0].submission_id == "sub-1" and after[0].secret_hash == "abc"
    # Resent events after the restart are still recognised as duplicates.
    assert reopened.ingest(job.id, driver_events(["a", "b"], epochs=3)) == (0, 10)
    reopened.close()
    # The file is a plain SQLite database with every table.
    tables = {r[0] for r in sqlite3.connect(tmp_path / "jobs.db").execute("select name from sqlite_master")}
    assert {"jobs", "trials", "epochs", "events", "schema_version"} <= tables


def test_ingest_is_idempotent_and_order_free(store: JobStore) -> None:
    events = driver_events(["c", "a", "b"], epochs=4, control="c")
    ordered = make_job(store)
    store.transition(ordered.id, JobStatus.RUNNING)
    assert store.ingest(ordered.id, events) == (len(events), 0)
    shuffled = make_job(store)
    store.transition(shuffled.id, JobStatus.RUNNING)
    for event in reversed(events):
        store.ingest(shuffled.id, [event])
    assert store.ingest(shuffled.id, events) == (0, len(events))

    def view(job_id):
        trials = [
            {k: v for k, v in t.items() if k not in ("job_id", "started_at", "finished_at")}
            for t in store.trial_rows(job_id)
        ]
        return sorted(trials, key=lambda t: t["trial_id"]), store.progress(store.get_job(job_id))

    assert view(ordered.id) == view(shuffled.id)


def test_min_mode_best(store: JobStore) -> None:
    job = make_job(store, metric="nll", mode="min")
    store.transition(job.id, JobStatus.RUNNING)
    store.ingest(
        job.id,
        [
            {"seq": 1, "type": "epoch", "trial_id": "a", "epoch": 1, "metrics": {"nll": 0.9}},
            {"seq": 2, "type": "epoch", "trial_id": "a", "epoch": 2, "metrics": {"nll": 0.4}},
            {"seq": 3, "type": "epoch", "trial_id": "a", "epoch": 3, "metrics": {"nll": float("nan")}},
            {"seq": 4, "type": "epoch", "trial_id": "a", "epoch": 4, "metrics": {"nll": 0.6}},
        ],
    )
    assert store.progress(store.get_job(job.id))["best"] == {"trial_id": "a", "branch": None, "epoch": 2, "value": 0.4}


def test_list_pagination(store: JobStore) -> None:
    ids = [make_job(store).id for _ in range(7)]
    page, cursor = store.list_jobs(owner="alice", limit=3)
    seen = [j.id for j in page]
    while cursor:
        page, cursor = store.list_jobs(owner="alice", limit=3, cursor=cursor)
        seen += [j.id for j in page]
    assert seen == ids[::-1]
    with pytest.raises(ValueError):
        store.list_jobs(owner="alice", cursor="garbage")
