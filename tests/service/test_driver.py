"""jobs.driver: spooled, ordered, at-least-once delivery to the real app, and the driver's main()."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

import jobs
from jobs import driver
from tests.service.conftest import tiny_spec

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "job_result.json"


class FlakyTransport(httpx.BaseTransport):
    """Fails the first ``failures`` requests (the service is down), then forwards to ``client``."""

    def __init__(self, client, failures: int) -> None:
        self.client = client
        self.failures = failures
        self.calls = 0
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.calls += 1
            if self.calls <= self.failures:
                raise httpx.ConnectError("connection refused", request=request)
        r = self.client.post(str(request.url.path), content=request.read(), headers=dict(request.headers))
        return httpx.Response(r.status_code, content=r.content, headers={"content-type": "application/json"})


def test_sender_delivers_in_order_after_service_comes_back(api, tmp_path: Path) -> None:
    job_id = api.start()
    sub = api.fake.submission(job_id)
    transport = FlakyTransport(api.client, failures=3)
    sender = driver.EventSender(
        job_id,
        "http://svc",
        sub.secret,
        tmp_path / job_id,
        client=httpx.Client(transport=transport),
        max_backoff_s=0.05,
    )
    events = driver_events_without_seq()
    for event in events:
        sender.emit(event)
    assert sender.flush(10)
    sender.close()
    assert transport.calls > 3
    spool = [json.loads(line) for line in (tmp_path / job_id / "events.jsonl").read_text().splitlines()]
    assert [e["seq"] for e in spool] == list(range(1, len(events) + 1))
    stored = api.service.store.events_after(job_id)
    assert [json.loads(p)["seq"] for _, t, p in stored if t != "status"] == [e["seq"] for e in spool]


def test_sender_keeps_spool_when_service_never_answers(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down", request=request)

    sender = driver.EventSender(
        "job_x",
        "http://svc",
        "s",
        tmp_path,
        client=httpx.Client(transport=httpx.MockTransport(refuse)),
        max_backoff_s=0.02,
    )
    sender.emit({"type": "epoch", "trial_id": "a", "epoch": 1, "metrics": {"accuracy": float("nan")}})
    assert not sender.flush(0.2)
    assert sender.pending() == 1
    sender.close()
    (line,) = (tmp_path / "events.jsonl").read_text().splitlines()
    assert json.loads(line)["metrics"] == {"accuracy": None}  # strict JSON
    # A restarted driver continues the numbering.
    again = driver.EventSender(
        "job_x", "http://svc", "s", tmp_path, client=httpx.Client(transport=httpx.MockTransport(refuse))
    )
    assert again.emit({"type": "x"})["seq"] == 2
    again.close()


def driver_events_without_seq() -> list[dict]:
    from service.testing import driver_events

    return [{k: v for k, v in e.items() if k != "seq"} for e in driver_events(["c", "a"], epochs=3, control="c")]


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_main_runs_the_job_and_reports(api, tmp_path: Path, monkeypatch, outcome: str) -> None:
    job_id = api.start(tiny_spec())
    sub = api.fake.submission(job_id)
    result = json.loads(FIXTURE.read_text())
    calls = {}

    def fake_run_job(spec, *, storage_path, on_event=None, ray_address=None):
        calls["spec"], calls["storage_path"] = spec, storage_path
        for event in driver_events_without_seq():
            on_event(event)
        if outcome == "failed":
            raise ValueError("the loss exploded")
        return result

    monkeypatch.setattr(jobs, "run_job", fake_run_job, raising=False)
    real_client = httpx.Client
    monkeypatch.setattr(driver.httpx, "Client", lambda **kw: real_client(transport=FlakyTransport(api.client, 0)))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # not under Ray Jobs: the driver must not join any Ray
    monkeypatch.delenv(driver.SECRET_ENV, raising=False)
    monkeypatch.setenv(driver.SPEC_ENV, sub.spec_json)
    args = ["--job-id", job_id, "--service-url", "http://svc", "--storage-path", str(tmp_path)]
    code = driver.main([*args, "--flush-deadline-s", "10", "--secret-file", sub.secret_file])
    assert calls["spec"].name == "tiny" and calls["storage_path"] == str(tmp_path)
    job = api.client.get(f"/jobs/{job_id}").json()
    if outcome == "succeeded":
        assert code == 0 and job["status"] == "succeeded"
        assert json.loads((tmp_path / job_id / "result.json").read_text()) == result
        assert api.client.get(f"/jobs/{job_id}/results").json()["complete"] is True
    else:
        assert code == 1 and job["status"] == "failed" and "the loss exploded" in job["error"]
        assert "Traceback" not in job["error"].splitlines()[0]


def test_main_without_spec_exits_2(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(driver.SPEC_ENV, raising=False)
    assert driver.main(["--job-id", "j", "--service-url", "http://x", "--storage-path", str(tmp_path)]) == 2


def test_entrypoint_and_env_keep_the_secret_out() -> None:
    from service.dispatcher import Submission, driver_entrypoint, driver_env

    sub = Submission(
        job_id="job_1",
        submission_id="longtail-job_1",
        spec_json="{}",
        secret="s3cret" * 6,
        service_url="http://127.0.0.1:8000",
        storage_path="/tmp/r",
        secret_file="/state/secrets/job_1.secret",
    )
    command = driver_entrypoint(sub, python="/venv/bin/python")
    assert command.startswith("/venv/bin/python -m jobs.driver --job-id job_1")
    assert sub.secret not in command and "{}" not in command
    assert command.endswith("--secret-file /state/secrets/job_1.secret")
    env = driver_env(sub)  # Ray's Jobs API shows runtime_env to anyone who can reach it
    assert sub.secret not in json.dumps(env) and "LONGTAIL_DRIVER_SECRET" not in env
    assert env["LONGTAIL_JOB_SPEC"] == "{}"
    assert str(Path(__file__).resolve().parents[2]) in env["PYTHONPATH"].split(":")


def test_main_resumes_when_an_earlier_driver_left_a_spool(api, tmp_path: Path, monkeypatch) -> None:
    """The job was dispatched again (its cluster lost it): the new driver resumes, numbering after the old spool."""
    from service.testing import driver_events

    job_id = api.start(tiny_spec())
    sub = api.fake.submission(job_id)
    spool = tmp_path / job_id / "events.jsonl"
    spool.parent.mkdir(parents=True, exist_ok=True)
    earlier = driver_events(["a"], epochs=1)  # seq 1..3, delivered before the crash
    api.send(job_id, earlier)
    spool.write_text("".join(json.dumps(e) + "\n" for e in earlier) + '{"seq": 4, "type": "epo')  # torn by the crash
    calls = {}

    def fake_run_job(spec, *, storage_path, on_event=None, experiment_name=None, resume=False, prior_events=()):
        calls.update(resume=resume, prior=[e["seq"] for e in prior_events], name=experiment_name)
        on_event({"type": "epoch", "trial_id": "a", "epoch": 2, "metrics": {"balanced_accuracy": 0.5}})
        return json.loads(FIXTURE.read_text())

    monkeypatch.setattr(jobs, "run_job", fake_run_job, raising=False)
    real_client = httpx.Client
    monkeypatch.setattr(driver.httpx, "Client", lambda **kw: real_client(transport=FlakyTransport(api.client, 0)))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv(driver.SECRET_ENV, sub.secret)
    monkeypatch.setenv(driver.SPEC_ENV, sub.spec_json)
    code = driver.main(
        ["--job-id", job_id, "--service-url", "http://svc", "--storage-path", str(tmp_path), "--flush-deadline-s", "10"]
    )
    assert code == 0 and calls == {"resume": True, "prior": [1, 2, 3], "name": f"tune-{job_id}"}
    new = driver.read_spool(spool)[3:]  # the torn line is skipped, the new events are whole lines after it
    assert [(e["seq"], e["type"]) for e in new] == [(4, "epoch"), (5, "job_finished")]
    assert api.client.get(f"/jobs/{job_id}").json()["status"] == "succeeded"
    assert api.client.get(f"/jobs/{job_id}").json()["progress"]["epochs_reported"] >= 2
