"""The store on a real SQLite file and a real PostgreSQL server.

The transition table, concurrent writers, idempotent events, restart, migrations, races closed in the database.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from pg import db_url_for

from service.errors import IdempotencyConflict, IllegalTransition, NotFound, QuotaExceeded
from service.store import (
    SCHEMA_VERSION,
    TRANSITIONS,
    JobStatus,
    JobStore,
    epochs_table,
    events_table,
    jobs_table,
    owners_table,
    trials_table,
)
from service.testing import driver_events
from tests.service.conftest import BACKENDS


def make_job(store: JobStore, owner: str = "alice", **kwargs):
    defaults = {"owner": owner, "spec": {"name": "j"}, "run_spec": "{}", "name": "j", "metric": "balanced_accuracy"}
    defaults.update(mode="max", trial_total=3)
    job, _ = store.create_job(**{**defaults, **kwargs})
    return job


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every test here runs on a SQLite file and on a real PostgreSQL server."""
    return db_url_for(request.param, request, tmp_path)


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
    if not store.is_sqlite:
        pytest.skip("SQLite only")
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
    # The database holds every table, readable without the store.
    tables = set(sa.inspect(sa.create_engine(db_url)).get_table_names())
    assert {"jobs", "trials", "epochs", "events", "alembic_version"} <= tables


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


# -- migrations ---------------------------------------------------------------------------------------------------
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_pre_alembic_database_upgrades_and_loses_nothing(db_url: str) -> None:
    """A database made by the hand-rolled schema_version 1 (its DDL kept in tests/fixtures), with data in it."""
    engine = sa.create_engine(db_url)
    lines = (FIXTURES / f"schema_v1.{engine.dialect.name}.sql").read_text().splitlines()
    ddl = "\n".join(line for line in lines if not line.startswith("--"))
    job_rows = [
        {
            "id": f"job_{i}",
            "owner": owner,
            "name": "old",
            "spec": '{"name": "old"}',
            "run_spec": "{}",
            "status": status,
            "metric": "balanced_accuracy",
            "mode": "max",
            "trial_total": 2,
            "created_at": 100.0 + i,
            "idempotency_key": key,
            "body_hash": "h" if key else None,
            "result": '{"trials": []}' if status == "succeeded" else None,
        }
        for i, (owner, status, key) in enumerate(
            [("alice", "succeeded", "k1"), ("alice", "running", None), ("bob", "queued", "k1")]
        )
    ]
    with engine.begin() as conn:
        for statement in ddl.split(";\n"):
            if statement.strip():
                conn.exec_driver_sql(statement)
        conn.execute(jobs_table.insert(), job_rows)
        conn.execute(
            trials_table.insert(),
            [{"job_id": "job_1", "trial_id": "t", "status": "running", "epochs_reported": 1, "best_value": 0.5}],
        )
        conn.execute(
            epochs_table.insert(),
            [{"job_id": "job_1", "trial_id": "t", "epoch": 1, "value": 0.5, "metrics": "{}", "time": 1.0}],
        )
        conn.execute(
            events_table.insert(),
            [
                {"job_id": "job_1", "seq": None, "type": "status", "payload": '{"status": "queued"}', "time": 1.0},
                {"job_id": "job_1", "seq": 1, "type": "epoch", "payload": "{}", "time": 2.0},
            ],
        )

    def dump(conn) -> dict:  # every row, in the columns the old schema had
        return {
            t: sorted(tuple(r) for r in conn.exec_driver_sql(f"SELECT {', '.join(cols)} FROM {t}").all())
            for t, cols in old_columns.items()
        }

    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        old_columns = {t: [c["name"] for c in inspector.get_columns(t)] for t in ("jobs", "trials", "epochs", "events")}
        before = dump(conn)
    store = JobStore(db_url)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        with engine.connect() as conn:
            assert dump(conn) == before
            assert sorted(conn.execute(sa.select(owners_table.c.owner)).scalars()) == ["alice", "bob"]
            assert "schema_version" not in sa.inspect(conn).get_table_names()
        # The old rows work as before: idempotency keys, the event log's seqs, quotas counting old jobs.
        job, created = store.create_job(
            owner="alice", spec={}, run_spec="{}", name="j", metric="m", mode="max", trial_total=1,
            idempotency_key="k1", body_hash="h",
        )  # fmt: skip
        assert (job.id, created, job.resumes, job.resume_history) == ("job_0", False, 0, ())
        assert store.ingest("job_1", [{"seq": 1, "type": "epoch", "trial_id": "t", "epoch": 1}]) == (0, 1)
        with pytest.raises(QuotaExceeded):
            make_job(store, owner="bob", max_active=1)
        assert [e[1] for e in store.events_after("job_1")] == ["status", "epoch"]
    finally:
        store.close()
    # Opening again is a no-op.
    JobStore(db_url).close()
    with engine.connect() as conn:
        assert len(dump(conn)["jobs"]) == 3
    engine.dispose()


# -- races closed in the database ---------------------------------------------------------------------------------
def race(stores: list[JobStore], n: int, fn) -> tuple[list, list[BaseException]]:
    """Run ``fn(store)`` in ``n`` threads at once, spread over ``stores`` (each one like its own process)."""
    barrier = threading.Barrier(n)
    results: list = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results.append(fn(stores[i % len(stores)]))
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_one_idempotency_key_makes_one_job_across_processes(db_url: str) -> None:
    stores = [JobStore(db_url) for _ in range(4)]
    try:
        results, errors = race(
            stores, 50, lambda s: make_job(s, owner="alice", idempotency_key="same", body_hash="h").id
        )
        assert not errors
        assert len(results) == 50 and len(set(results)) == 1
        assert stores[0].counts_by_status()["queued"] == 1
    finally:
        for s in stores:
            s.close()


def test_quota_admits_exactly_q_across_processes(db_url: str) -> None:
    stores = [JobStore(db_url) for _ in range(4)]
    try:
        results, errors = race(stores, 24, lambda s: make_job(s, owner="alice", max_active=5).id)
        assert len(results) == 5 and len(set(results)) == 5
        assert len(errors) == 19 and all(isinstance(e, QuotaExceeded) for e in errors)
        assert stores[0].count_active("alice") == 5
    finally:
        for s in stores:
            s.close()


def test_concurrent_batches_of_one_trial_count_every_epoch(db_url: str) -> None:
    """Two processes ingest interleaved batches of one trial: the read-modify-write of its counters loses nothing."""
    stores = [JobStore(db_url) for _ in range(2)]
    try:
        job = make_job(stores[0])
        stores[0].transition(job.id, JobStatus.RUNNING)
        events = driver_events(["a"], epochs=20)
        results, errors = race(stores, len(events), lambda s: s.ingest(job.id, [events.pop()]))
        assert not errors and sum(r[0] for r in results) == len(events) + len(results)
        (trial,) = stores[0].trial_rows(job.id)
        assert trial["epochs_reported"] == 20 and len(stores[0].epoch_rows(job.id)) == 20
    finally:
        for s in stores:
            s.close()


def test_the_store_package_exports_its_names_from_one_place() -> None:
    import service.store as store
    from service.store import jobs, projection, schema

    assert sorted(store.__all__) == sorted(
        [
            "ACTIVE",
            "MIGRATIONS_DIR",
            "SCHEMA_VERSION",
            "TRANSITIONS",
            "TRIAL_TERMINAL",
            "JobRecord",
            "JobStatus",
            "JobStore",
            "StoreUnavailable",
            "decode_cursor",
            "encode_cursor",
            "epochs_table",
            "events_table",
            "jobs_table",
            "metadata",
            "new_job_id",
            "owners_table",
            "trials_table",
        ]
    )
    assert store.JobStore is jobs.JobStore and store.jobs_table is schema.jobs_table
    assert store.TRIAL_TERMINAL is projection.TRIAL_TERMINAL
    assert (store.MIGRATIONS_DIR / "env.py").is_file() and (store.MIGRATIONS_DIR / "versions").is_dir()
    assert set(schema.metadata.tables) == {"jobs", "trials", "epochs", "events", "owners"}
