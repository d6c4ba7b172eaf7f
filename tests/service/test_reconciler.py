"""The dispatch queue and the reconciler: queue width, lost jobs, dead drivers, spool replay, service restart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from service.core import LOST_BY_CLUSTER, LOST_REASON
from service.dispatcher import DriverState, Submission
from service.errors import Unavailable
from service.testing import FakeDispatcher, driver_events
from tests.service.conftest import tiny_spec

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "job_result.json"


def status(api, job_id: str) -> str:
    return api.client.get(f"/jobs/{job_id}").json()["status"]


def test_queue_runs_at_most_max_running_jobs_oldest_first(make_api, settings) -> None:
    api = make_api(settings.model_copy(update={"max_running_jobs": 1}))
    ids = [api.submit(tiny_spec(name=f"j{i}")) for i in range(3)]
    api.tick()
    assert [status(api, i) for i in ids] == ["running", "queued", "queued"]
    api.tick()
    assert len(api.fake.submissions) == 1
    api.send(ids[0], [{"seq": 1, "type": "job_finished", "result": json.loads(FIXTURE.read_text())}])
    api.tick()
    assert [status(api, i) for i in ids] == ["succeeded", "running", "queued"]
    api.client.post(f"/jobs/{ids[1]}/cancel")
    api.tick()
    assert [status(api, i) for i in ids] == ["succeeded", "cancelled", "running"]
    assert [s.job_id for s in api.fake.submissions] == ids[:1] + ids[1:]


def test_job_lost_by_cluster_without_its_storage_fails_saying_why(api, settings) -> None:
    job_id = api.start()
    shutil.rmtree(settings.storage_path / job_id)  # its storage went away (another disk, deleted)
    api.fake.states.clear()  # the cluster was restarted: it forgot its jobs
    api.tick()
    job = api.client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["error"].startswith(LOST_BY_CLUSTER)
    assert "cannot resume: its storage" in job["error"] and "is gone" in job["error"]
    assert len(api.fake.submissions) == 1


def test_job_lost_by_cluster_resumes_until_max_resumes(make_api, settings) -> None:
    api = make_api(settings.model_copy(update={"max_resumes": 2}))
    job_id = api.start()
    assert (settings.storage_path / job_id).is_dir()  # made at dispatch; its driver's spool and experiment go there
    first = api.fake.submission(job_id)
    api.send(job_id, driver_events(["a"], epochs=1))
    for n in (1, 2):
        api.fake.states.clear()  # the Ray head died with every job
        api.tick()
        job = api.client.get(f"/jobs/{job_id}").json()
        assert job["status"] == "running" and job["resumes"] == n
        assert [r["reason"] for r in job["resume_history"]] == [
            f"{LOST_REASON} (its Ray head died or was restarted)"
        ] * n
        latest = api.fake.submissions[-1]
        assert (latest.job_id, latest.submission_id) == (job_id, f"longtail-{job_id}-r{n}")
        assert latest.secret != first.secret and latest.spec_json == first.spec_json
    # Only the latest driver's secret is taken; what the resumed driver reports adds to what was stored.
    assert (
        api.send(job_id, [{"seq": 50, "type": "epoch", "trial_id": "a", "epoch": 2}], secret=first.secret).status_code
        == 403
    )
    latest = api.fake.submissions[-1].secret
    r = api.send(job_id, [{"seq": 50, "type": "epoch", "trial_id": "a", "epoch": 2, "metrics": {}}], secret=latest)
    assert r.json() == {"accepted": 1, "duplicates": 0}
    assert api.client.get(f"/jobs/{job_id}").json()["progress"]["epochs_reported"] == 2
    resumed = [json.loads(p) for _, kind, p in api.service.store.events_after(job_id) if kind == "resumed"]
    assert [e["resumes"] for e in resumed] == [1, 2]  # in the event log (and the SSE stream) too
    api.fake.states.clear()
    api.tick()
    job = api.client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed" and "resumed 2 times already (LONGTAIL_MAX_RESUMES=2)" in job["error"]
    assert len(api.fake.submissions) == 3


def test_transient_refusal_of_a_resume_is_retried_uncounted(make_api, settings) -> None:
    class Flaky(FakeDispatcher):
        refuse = 0

        async def submit(self, submission: Submission) -> None:
            if self.refuse:
                self.refuse -= 1
                raise Unavailable("the job agent is not up yet")
            await super().submit(submission)

    fake = Flaky()
    api = make_api(settings, fake)
    job_id = api.start()
    fake.states.clear()
    fake.refuse = 2
    api.tick()
    api.tick()
    assert api.client.get(f"/jobs/{job_id}").json()["resumes"] == 1 and len(fake.submissions) == 1
    api.tick()
    job = api.client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "running" and job["resumes"] == 1
    assert [s.submission_id for s in fake.submissions] == [f"longtail-{job_id}", f"longtail-{job_id}-r1"]
    r = api.send(job_id, [{"seq": 1, "type": "trial_started", "trial_id": "a"}], secret=fake.submissions[-1].secret)
    assert r.status_code == 200


def test_job_stopped_outside_is_failed(api) -> None:
    job_id = api.start()
    api.fake.set_state(api.fake.submission(job_id).submission_id, DriverState.STOPPED)
    api.tick()
    assert status(api, job_id) == "failed"


def test_unreachable_cluster_changes_nothing(api) -> None:
    job_id = api.start()
    queued = api.submit()
    api.fake.available = False
    api.tick()
    assert status(api, job_id) == "running" and status(api, queued) == "queued"


def test_submit_failure_fails_the_job_with_reason(make_api, settings) -> None:
    class Broken(FakeDispatcher):
        async def submit(self, submission: Submission) -> None:
            raise RuntimeError("Jobs API said no")

    api = make_api(settings, Broken())
    job_id = api.start()
    job = api.client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed" and "Jobs API said no" in job["error"]


def test_transient_submit_refusal_keeps_job_queued(make_api, settings) -> None:
    from service.errors import Unavailable

    class Warming(FakeDispatcher):
        refusals = 2

        async def submit(self, submission: Submission) -> None:
            if self.refusals:
                self.refusals -= 1
                raise Unavailable("No available agent to submit job, please try again later.")
            await super().submit(submission)

    api = make_api(settings, Warming())
    job_id = api.start()
    assert status(api, job_id) == "queued"
    api.tick()
    assert status(api, job_id) == "queued"
    api.tick()
    assert status(api, job_id) == "running" and len(api.fake.submissions) == 1


def test_spool_and_result_file_are_replayed(api, settings) -> None:
    """The driver finished while the service was down: its spool and result.json complete the job."""
    job_id = api.start()
    events = driver_events(["c", "a"], epochs=2, control="c")
    api.send(job_id, events[:3])  # only the first few reached the service
    job_dir = Path(settings.storage_path) / job_id
    job_dir.mkdir(parents=True, exist_ok=True)  # the service made it at dispatch
    result = json.loads(FIXTURE.read_text())
    with (job_dir / "events.jsonl").open("w") as f:
        for event in events:
            f.write(json.dumps(event) + "\n")
        f.write('{"seq": 99, "type": "job_fini')  # a torn last line is skipped
    (job_dir / "result.json").write_text(json.dumps(result))
    api.fake.set_state(api.fake.submission(job_id).submission_id, DriverState.SUCCEEDED)
    api.tick()
    job = api.client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    results = api.client.get(f"/jobs/{job_id}/results").json()
    assert results["complete"] and results["trials"] == result["trials"]
    assert api.service.store.epoch_rows(job_id)[-1]["trial_id"] == "c"  # spool events stored too
    assert len(api.service.store.epoch_rows(job_id)) == 4


def test_driver_succeeded_without_result_is_failed(api) -> None:
    job_id = api.start()
    api.fake.set_state(api.fake.submission(job_id).submission_id, DriverState.SUCCEEDED)
    api.tick()
    job = api.client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed" and "never reached the service" in job["error"]


def test_service_restart_keeps_running_job(make_api, settings) -> None:
    fake = FakeDispatcher()
    first = make_api(settings, fake)
    job_id = first.start()
    secret = fake.submission(job_id).secret
    events = driver_events(["c", "a"], epochs=3, control="c")
    first.send(job_id, events[:5])
    before = first.client.get(f"/jobs/{job_id}").json()
    first.client.__exit__(None, None, None)  # the service stops; the "cluster" keeps the job

    second = make_api(settings, fake)
    second.tick()
    after = second.client.get(f"/jobs/{job_id}").json()
    assert after == before and after["status"] == "running"
    # The driver resends everything it has (some duplicates) with the same secret.
    r = second.send(job_id, events, secret=secret)
    assert r.json() == {"accepted": len(events) - 5, "duplicates": 5}
    second.send(
        job_id, [{"seq": 100, "type": "job_finished", "result": json.loads(FIXTURE.read_text())}], secret=secret
    )
    assert second.client.get(f"/jobs/{job_id}").json()["status"] == "succeeded"
    assert len(fake.submissions) == 1  # never submitted twice


def test_unwritable_storage_fails_the_job_with_the_reason(make_api, settings, tmp_path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder should be")
    api = make_api(settings.model_copy(update={"storage_path": blocker / "ray_results"}))
    job_id = api.start()
    job = api.client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed" and "cannot be written" in job["error"] and str(blocker) in job["error"]
    assert api.fake.submissions == []  # never sent to Ray
    assert api.client.get("/healthz").status_code == 200  # the service stays up
