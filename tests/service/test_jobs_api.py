"""The REST API through TestClient: every endpoint, status code and bad input of issue 5 (FakeDispatcher, no Ray).

Every test that touches the store runs on a SQLite file and on a real PostgreSQL server.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from pathlib import Path

import pytest
from pg import db_url_for

from service.dispatcher import DriverState
from service.testing import FakeDispatcher, driver_events
from tests.service.conftest import ALICE, BACKENDS, BOB, SECRET_HEADER, Api, tiny_spec

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "job_result.json"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return db_url_for(request.param, request, tmp_path)


def error_locs(response) -> list[str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    return [d["loc"] for d in body["error"]["details"]]


# -- POST /jobs ---------------------------------------------------------------------------------------------------
def test_create_returns_201_location_and_queued(api: Api) -> None:
    r = api.client.post("/jobs", json=tiny_spec())
    assert r.status_code == 201
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "queued" and job["owner"] == "local" and job["name"] == "tiny"
    assert job["progress"]["trials_total"] == 3  # two branches + the control
    assert job["spec"]["train"]["epochs"] == 2 and job["spec"]["tune"]["metric"] == "balanced_accuracy"


def test_queued_job_is_dispatched_with_secret_and_resolved_spec(api: Api) -> None:
    job_id = api.start()
    assert api.client.get(f"/jobs/{job_id}").json()["status"] == "running"
    (sub,) = api.fake.submissions
    assert sub.job_id == job_id and len(sub.secret) >= 32
    assert json.loads(sub.spec_json)["name"] == "tiny"
    assert Path(sub.storage_path).is_absolute()


def test_idempotency_key_returns_same_job(api: Api) -> None:
    headers = {"Idempotency-Key": "k-1"}
    first = api.client.post("/jobs", json=tiny_spec(), headers=headers)
    again = api.client.post("/jobs", json=tiny_spec(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert len(api.client.get("/jobs").json()["items"]) == 1
    # Key order of the JSON body does not matter.
    reordered = dict(reversed(list(tiny_spec().items())))
    assert api.client.post("/jobs", json=reordered, headers=headers).json()["id"] == first.json()["id"]


def test_idempotency_key_with_other_body_is_409(api: Api) -> None:
    headers = {"Idempotency-Key": "k-2"}
    assert api.client.post("/jobs", json=tiny_spec(), headers=headers).status_code == 201
    r = api.client.post("/jobs", json=tiny_spec(name="other"), headers=headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_conflict"


def test_idempotency_keys_are_per_owner(make_api, auth_settings) -> None:
    api = make_api(auth_settings)
    a = api.client.post("/jobs", json=tiny_spec(), headers={"Idempotency-Key": "k", "Authorization": f"Bearer {ALICE}"})
    b = api.client.post("/jobs", json=tiny_spec(), headers={"Idempotency-Key": "k", "Authorization": f"Bearer {BOB}"})
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (tiny_spec(losses=[{"name": "focal", "gamma": -1}]), "losses[0].gamma"),
        (tiny_spec(losses=[{"name": "focal"}, {"name": "ib", "start_epoch": 5}]), "losses[1].start_epoch"),
        (tiny_spec(losses=[{"name": "nope"}]), "losses[0]"),
        (tiny_spec(losses=[]), "losses"),
        (tiny_spec(train={"epochs": 0}), "train.epochs"),
        (tiny_spec(train={"epochs": 501}), "train.epochs"),
        (tiny_spec(tune={"num_samples": 40}), "tune.num_samples"),
        (tiny_spec(model={"name": "mlp", "hidden_sizes": [0]}), "model.hidden_sizes"),
        (tiny_spec(scaling={"cpus_per_worker": -1}), "scaling.cpus_per_worker"),
        (tiny_spec(bogus=1), "bogus"),
        ({"losses": [{"name": "ce"}]}, "dataset"),
        (tiny_spec(losses=[{"name": "focal", "gamma": {"uniform": [2, 1]}}]), "losses[0].gamma.uniform"),
    ],
)
def test_invalid_spec_is_422_naming_the_field(api: Api, body: dict, loc: str) -> None:
    r = api.client.post("/jobs", json=body)
    assert r.status_code == 422, r.text
    assert loc in error_locs(r), r.json()


def test_422_lists_every_invalid_field(api: Api) -> None:
    body = tiny_spec(losses=[{"name": "focal", "gamma": -1}], train={"epochs": 0}, scaling={"num_workers": 0})
    locs = error_locs(api.client.post("/jobs", json=body))
    assert {"losses[0].gamma", "train.epochs", "scaling.num_workers"} <= set(locs)


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b'"x"', b"", b'{"dataset": '])
def test_malformed_body_is_422(api: Api, content: bytes) -> None:
    r = api.client.post("/jobs", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


def test_oversized_body_is_413_by_content_length(make_api, settings) -> None:
    api = make_api(settings.model_copy(update={"max_body_bytes": 2048}))
    spec = tiny_spec(name="x" * 100, losses=[{"name": "focal", "label": f"b{i}"} for i in range(60)])
    r = api.client.post("/jobs", json=spec)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_oversized_streamed_body_is_413(make_api, settings) -> None:
    api = make_api(settings.model_copy(update={"max_body_bytes": 2048}))

    def chunks():
        yield b'{"name": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    r = api.client.post("/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_quota_is_429(make_api, settings) -> None:
    api = make_api(settings.model_copy(update={"max_jobs_per_owner": 2}))
    api.submit()
    second = api.submit()
    r = api.client.post("/jobs", json=tiny_spec())
    assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
    api.client.post(f"/jobs/{second}/cancel")  # a finished job frees its slot
    assert api.client.post("/jobs", json=tiny_spec()).status_code == 201


@pytest.mark.parametrize(
    ("scaling", "loc"),
    [
        ({"cpus_per_worker": 4}, "scaling.cpus_per_worker"),
        ({"num_workers": 3, "cpus_per_worker": 0.99}, "scaling.num_workers"),
        ({"use_gpu": True}, "scaling.gpus_per_worker"),
        ({"num_workers": 2, "cpus_per_worker": 1.0}, "scaling.cpus_per_worker"),  # 2 workers + trial driver > 2 CPU
    ],
)
def test_infeasible_on_cluster_is_422_with_reason(api: Api, scaling: dict, loc: str) -> None:
    r = api.client.post("/jobs", json=tiny_spec(scaling=scaling))
    assert r.status_code == 422, r.text
    assert error_locs(r) == [loc]
    assert "CPU" in r.json()["error"]["details"][0]["msg"]


def test_feasible_on_bigger_cluster(make_api, settings) -> None:
    api = make_api(settings, FakeDispatcher(nodes=[{"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1}]))
    r = api.client.post("/jobs", json=tiny_spec(scaling={"num_workers": 2, "use_gpu": True, "cpus_per_worker": 4}))
    assert r.status_code == 201, r.text


def test_workers_per_trial_limit(make_api, settings) -> None:
    api = make_api(settings.model_copy(update={"max_workers_per_trial": 1}), FakeDispatcher(nodes=[{"CPU": 64}]))
    r = api.client.post("/jobs", json=tiny_spec(scaling={"num_workers": 2}))
    assert r.status_code == 422 and error_locs(r) == ["scaling.num_workers"]


def test_limits_are_checked_at_submission_only(make_api, settings) -> None:
    # A job accepted under the deployment's limits still reads (its spec, its partial results) once they are lowered.
    job_id = make_api(settings).start()  # 3 trials of 2 epochs
    lowered = make_api(settings.model_copy(update={"max_trials_per_job": 2, "max_epochs": 1}))
    r = lowered.client.post("/jobs", json=tiny_spec())
    assert r.status_code == 422 and error_locs(r) == ["train.epochs", "tune.num_samples"], r.text
    assert r.json()["error"]["code"] == "invalid_spec"
    lowered.send(job_id, driver_events(["c", "a"], epochs=2, control="c"))
    assert lowered.client.get(f"/jobs/{job_id}").json()["spec"]["train"]["epochs"] == 2
    partial = lowered.client.get(f"/jobs/{job_id}/results").json()
    assert partial["complete"] is False and partial["best_trial"]["trial_id"] == "a"


# -- data root ----------------------------------------------------------------------------------------------------
def npz_spec(path: str) -> dict:
    return tiny_spec(dataset={"name": "npz", "path": path})


def test_dataset_path_resolves_inside_data_root(api: Api, settings) -> None:
    (settings.data_root / "sets").mkdir()
    (settings.data_root / "sets" / "mine.npz").write_bytes(b"npz")
    job_id = api.start(npz_spec("sets/mine.npz"))
    run_spec = json.loads(api.fake.submission(job_id).spec_json)
    assert run_spec["dataset"]["path"] == str((settings.data_root / "sets" / "mine.npz").resolve())
    # The job as shown keeps what the user sent.
    assert api.client.get(f"/jobs/{job_id}").json()["spec"]["dataset"]["path"] == "sets/mine.npz"


def test_symlink_inside_data_root_is_fine(api: Api, settings) -> None:
    (settings.data_root / "real.npz").write_bytes(b"npz")
    os.symlink(settings.data_root / "real.npz", settings.data_root / "link.npz")
    assert api.client.post("/jobs", json=npz_spec("link.npz")).status_code == 201


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "missing", "symlinked_dir"])
def test_dataset_path_escapes_are_422(api: Api, settings, tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside.npz"
    outside.write_bytes(b"secret")
    if kind == "dotdot":
        path = "../outside.npz"
    elif kind == "absolute":
        path = str(outside)
    elif kind == "symlink":
        os.symlink(outside, settings.data_root / "escape.npz")
        path = "escape.npz"
    elif kind == "symlinked_dir":
        os.symlink(tmp_path, settings.data_root / "up")
        path = "up/outside.npz"
    else:
        path = "nowhere.npz"
    r = api.client.post("/jobs", json=npz_spec(path))
    assert r.status_code == 422, r.text
    assert error_locs(r) == ["dataset.path"]


# -- auth ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("header", [None, "Bearer wrong-token-x", "Basic abc", "Bearer"])
def test_missing_or_invalid_token_is_401(make_api, auth_settings, header) -> None:
    api = make_api(auth_settings)
    headers = {"Authorization": header} if header else {}
    for method, path in [
        ("GET", "/jobs"),
        ("POST", "/jobs"),
        ("GET", "/jobs/x"),
        ("GET", "/losses"),
        ("GET", "/metrics"),
        ("GET", "/readyz"),
        ("POST", "/jobs/x/cancel"),
    ]:
        r = api.client.request(method, path, headers=headers, json=tiny_spec() if method == "POST" else None)
        assert r.status_code == 401, (method, path, r.text)
        assert r.json()["error"]["code"] == "unauthorized"
    assert api.client.get("/healthz").status_code == 200


def test_other_owners_job_is_404(make_api, auth_settings) -> None:
    api = make_api(auth_settings)
    alice = {"Authorization": f"Bearer {ALICE}"}
    bob = {"Authorization": f"Bearer {BOB}"}
    job_id = api.submit(headers=alice)
    assert api.client.get(f"/jobs/{job_id}", headers=alice).json()["owner"] == "alice"
    for path in ["", "/results", "/events", "/logs", "/plots/per-class.png"]:
        r = api.client.get(f"/jobs/{job_id}{path}", headers=bob)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
    assert api.client.post(f"/jobs/{job_id}/cancel", headers=bob).status_code == 404
    assert api.client.get("/jobs", headers=bob).json()["items"] == []
    missing = api.client.get("/jobs/job_doesnotexist", headers=bob)
    assert (
        missing.json()["error"]["message"].replace("job_doesnotexist", job_id)
        == api.client.get(f"/jobs/{job_id}", headers=bob).json()["error"]["message"]
    )


def test_no_tokens_refuses_public_bind(settings) -> None:
    from service.app import create_app

    with pytest.raises(RuntimeError, match="without API tokens"):
        create_app(settings.model_copy(update={"host": "0.0.0.0"}), dispatcher=FakeDispatcher())


def test_no_tokens_logs_unauthenticated(settings, caplog) -> None:
    from service.app import create_app

    with caplog.at_level(logging.WARNING, logger="service"):
        create_app(settings, dispatcher=FakeDispatcher())
    assert "unauthenticated" in caplog.text


# -- GET /jobs ----------------------------------------------------------------------------------------------------
def test_list_is_newest_first_with_filter_and_cursor(api: Api) -> None:
    ids = [api.submit(tiny_spec(name=f"j{i}")) for i in range(5)]
    api.client.post(f"/jobs/{ids[1]}/cancel")
    page = api.client.get("/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]
    seen = [j["id"] for j in page["items"]]
    while page["next_cursor"]:
        page = api.client.get("/jobs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
        seen += [j["id"] for j in page["items"]]
    assert seen == ids[::-1]
    cancelled = api.client.get("/jobs", params={"status": "cancelled"}).json()["items"]
    assert [j["id"] for j in cancelled] == [ids[1]]
    both = api.client.get("/jobs", params=[("status", "cancelled"), ("status", "queued")]).json()["items"]
    assert len(both) == 5


@pytest.mark.parametrize("params", [{"status": "runnning"}, {"limit": 0}, {"limit": 1000}, {"cursor": "!!"}])
def test_list_bad_query_is_422(api: Api, params) -> None:
    r = api.client.get("/jobs", params=params)
    assert r.status_code == 422 and r.json()["error"]["details"]


def test_unknown_job_and_route_are_404_json(api: Api) -> None:
    for path in ["/jobs/nope", "/jobs/nope/results", "/nowhere"]:
        r = api.client.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert api.client.delete("/jobs").status_code == 405


# -- driver events, progress, results -----------------------------------------------------------------------------
def test_driver_events_drive_progress(api: Api) -> None:
    job_id = api.start()
    events = driver_events(["c", "a", "b"], epochs=3, control="c")
    r = api.send(job_id, events[:7])
    assert r.json() == {"accepted": 7, "duplicates": 0}
    progress = api.client.get(f"/jobs/{job_id}").json()["progress"]
    assert progress["trials_done"] == 1 and progress["trials_running"] == 1 and progress["epochs_reported"] == 4
    # The best so far is chosen on validation (selection "val", the default): its value is the validation metric's.
    assert progress["metric"] == "val_balanced_accuracy"
    assert progress["best"] == {"trial_id": "c", "branch": "ce", "epoch": 3, "value": pytest.approx(0.28)}


def test_duplicate_events_are_ignored(api: Api) -> None:
    job_id = api.start()
    events = driver_events(["a"], epochs=2)
    api.send(job_id, events)
    again = api.send(job_id, events)
    assert again.json() == {"accepted": 0, "duplicates": len(events)}
    assert api.client.get(f"/jobs/{job_id}").json()["progress"]["epochs_reported"] == 2


def test_out_of_order_events_end_up_the_same(api: Api) -> None:
    job_id = api.start()
    events = driver_events(["c", "a"], epochs=2, control="c")
    api.send(job_id, list(reversed(events[4:])))
    api.send(job_id, events[:4][::-1])
    results = api.client.get(f"/jobs/{job_id}/results").json()
    by_id = {t["trial_id"]: t for t in results["trials"]}
    assert by_id["a"]["status"] == "succeeded" and by_id["a"]["branch"] == "loss1"
    assert [h["epoch"] for h in by_id["a"]["history"]] == [1, 2]
    assert results["control_trial_id"] == "c"


@pytest.mark.parametrize(("secret", "status"), [("", 401), (None, 401), ("wrong", 403)])
def test_internal_events_need_the_job_secret(api: Api, secret, status) -> None:
    job_id = api.start()
    headers = {} if secret is None else {SECRET_HEADER: secret}
    r = api.client.post(f"/internal/jobs/{job_id}/events", json={"events": []}, headers=headers)
    assert r.status_code == status
    # Another job's secret does not work either.
    other = api.start()
    r = api.send(job_id, [], secret=api.fake.submission(other).secret)
    assert r.status_code == 403


def test_internal_events_unknown_job_is_403(api: Api) -> None:
    r = api.client.post("/internal/jobs/nope/events", json={"events": []}, headers={SECRET_HEADER: "x" * 40})
    assert r.status_code == 403


def test_internal_events_bad_batch_is_422(api: Api) -> None:
    job_id = api.start()
    r = api.send(job_id, [{"type": "epoch"}])  # no seq
    assert r.status_code == 422 and "events[0].seq" in error_locs(r)


def test_results_partial_then_complete(api: Api) -> None:
    job_id = api.start()
    api.send(job_id, driver_events(["c", "a"], epochs=2, control="c"))
    partial = api.client.get(f"/jobs/{job_id}/results").json()
    assert partial["complete"] is False and partial["status"] == "running" and partial["dataset"] is None
    assert partial["best_trial"]["trial_id"] == "a"
    # one row per branch of the spec, those without results yet included
    assert [b["branch"] for b in partial["branches"]] == ["focal", "ldam"]
    (branch,) = [b for b in partial["branches"] if b["best_trial_id"] == "a"]
    assert branch["gain"] == pytest.approx(0.05)
    assert all(b["best_value"] is None for b in partial["branches"] if b is not branch)
    trial = next(t for t in partial["trials"] if t["trial_id"] == "a")
    assert trial["best"]["epoch"] == 2 and trial["final"]["per_class_accuracy"] == [0.25, 0.25]
    assert "per_class_accuracy" not in trial["history"][0]

    final = json.loads(FIXTURE.read_text())
    api.send(job_id, [{"seq": 100, "type": "job_finished", "result": final}])
    done = api.client.get(f"/jobs/{job_id}/results").json()
    assert done["complete"] is True and done["status"] == "succeeded"
    assert {k: v for k, v in done.items() if k not in ("job_id", "status", "complete")} == final
    job = api.client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["finished_at"] >= job["started_at"]
    assert job["progress"]["trials_done"] == len(final["trials"]) + 2  # the fixture's trials + the two sent


def test_job_failed_event_marks_failed(api: Api) -> None:
    job_id = api.start()
    api.send(job_id, [{"seq": 1, "type": "job_failed", "error": "ValueError: boom"}])
    job = api.client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed" and "boom" in job["error"]
    assert api.client.get(f"/jobs/{job_id}/results").json()["complete"] is False


# -- cancel -------------------------------------------------------------------------------------------------------
def test_cancel_queued_running_and_finished(api: Api) -> None:
    queued = api.submit()
    r = api.client.post(f"/jobs/{queued}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"

    running = api.start()
    r = api.client.post(f"/jobs/{running}/cancel")
    assert r.json()["status"] == "cancelled"
    assert api.fake.cancelled == [api.fake.submission(running).submission_id]
    # What the killed driver still sends is stored but does not resurrect the job.
    api.send(running, [{"seq": 1, "type": "job_failed", "error": "SIGTERM"}])
    assert api.client.get(f"/jobs/{running}").json()["status"] == "cancelled"

    for job_id in (queued, running):
        r = api.client.post(f"/jobs/{job_id}/cancel")
        assert r.status_code == 409 and r.json()["error"]["code"] == "illegal_transition"


def test_cancel_succeeded_job_is_409(api: Api) -> None:
    job_id = api.start()
    api.send(job_id, [{"seq": 1, "type": "job_finished", "result": json.loads(FIXTURE.read_text())}])
    assert api.client.post(f"/jobs/{job_id}/cancel").status_code == 409


# -- SSE ----------------------------------------------------------------------------------------------------------
def parse_sse(text: str) -> list[dict]:
    messages = []
    for block in text.split("\n\n"):
        fields: dict = {}
        for line in block.splitlines():
            if line.startswith(":"):
                fields.setdefault("comments", []).append(line)
                continue
            key, _, value = line.partition(": ")
            fields[key] = value
        if "data" in fields:
            fields["data"] = json.loads(fields["data"])
            messages.append(fields)
    return messages


def test_events_replay_and_resume(api: Api) -> None:
    job_id = api.start()
    events = driver_events(["a"], epochs=2)
    api.send(job_id, events)
    api.send(job_id, [{"seq": 50, "type": "job_failed", "error": "x"}])
    r = api.client.get(f"/jobs/{job_id}/events")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    messages = parse_sse(r.text)
    kinds = [m["event"] for m in messages]
    assert kinds == ["status", "status", "trial_started", "epoch", "epoch", "trial_finished", "job_failed", "status"]
    assert [m["data"].get("status") for m in messages if m["event"] == "status"] == ["queued", "running", "failed"]
    resume_after = messages[3]["id"]
    rest = parse_sse(api.client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": resume_after}).text)
    assert [m["id"] for m in rest] == [m["id"] for m in messages[4:]]


def test_events_stream_live_until_terminal(api: Api) -> None:
    job_id = api.start()
    got: list[dict] = []
    sent = threading.Event()

    def driver() -> None:
        sent.wait(5)
        api.service.ingest(job_id, driver_events(["a"], epochs=1))
        api.service.ingest(job_id, [{"seq": 99, "type": "job_failed", "error": "done"}])

    thread = threading.Thread(target=driver)
    thread.start()
    with api.client.stream("GET", f"/jobs/{job_id}/events") as r:
        buffer = ""
        for chunk in r.iter_text():
            buffer += chunk
            if "event: status" in buffer:
                sent.set()  # the stream is live: now the driver reports
        got = parse_sse(buffer)
    thread.join()
    assert [m["event"] for m in got][-3:] == ["trial_finished", "job_failed", "status"]
    assert ": heartbeat" in buffer or len(got) >= 6


# -- logs, metrics, health, catalogs, openapi, plots, ui ----------------------------------------------------------
def test_logs_tail(api: Api) -> None:
    queued = api.submit()
    assert api.client.get(f"/jobs/{queued}/logs").text == ""
    job_id = api.start()
    api.fake.log_text[api.fake.submission(job_id).submission_id] = "\n".join(f"line {i}" for i in range(500))
    r = api.client.get(f"/jobs/{job_id}/logs", params={"tail": 3})
    assert r.status_code == 200 and r.text == "line 497\nline 498\nline 499\n"
    assert r.headers["content-type"].startswith("text/plain")


def test_metrics_text(api: Api) -> None:
    job_id = api.start()
    api.send(
        job_id,
        [
            {
                "seq": 1,
                "type": "trial_started",
                "trial_id": "a",
                "branch": "focal",
                "branch_index": 0,
                "is_control": False,
                "config": {},
            }
        ],
    )
    api.submit()
    r = api.client.get("/metrics")
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = metric_samples(r.text)
    assert samples["longtail_jobs", (("status", "running"),)] == 1
    assert samples["longtail_jobs", (("status", "queued"),)] == 1
    assert samples["longtail_trials_running", ()] == 1
    assert samples["longtail_events_ingested_total", ()] == 1
    inf_bucket = (("le", "+Inf"), ("method", "POST"), ("route", "/jobs"))
    assert samples["longtail_http_request_duration_seconds_bucket", inf_bucket] == 2
    assert samples["longtail_http_requests_total", (("method", "POST"), ("route", "/jobs"), ("status", "201"))] == 2
    routes = {dict(labels)["route"] for _, labels in samples if "route" in dict(labels)}
    assert routes == {"/jobs", "/internal/jobs/{job_id}/events"}  # route templates, never a job's own path
    assert not any(name.endswith("_created") for name, _ in samples)  # the series exposed before prometheus_client


def test_two_apps_in_one_process_keep_their_own_metrics(make_api, settings, tmp_path: Path) -> None:
    first = make_api(settings)
    other_dir = tmp_path / "other"
    (other_dir / "data").mkdir(parents=True)
    second = make_api(settings.model_copy(update={"state_dir": other_dir, "data_root": other_dir / "data"}))
    first.submit()
    first.submit()
    second.submit()
    counts = []
    for api in (first, second):
        samples = metric_samples(api.client.get("/metrics").text)
        counts.append(
            samples["longtail_http_requests_total", (("method", "POST"), ("route", "/jobs"), ("status", "201"))]
        )
    assert counts == [2, 1]
    assert first.client.app.state.metrics.registry is not second.client.app.state.metrics.registry


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a Prometheus text exposition: (name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_health_and_ready(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok", "auth": False}
    assert api.client.get("/readyz").json() == {"status": "ready", "store": "ok", "ray": "ok"}
    api.fake.available = False
    r = api.client.get("/readyz")
    assert r.status_code == 503 and r.json()["ray"] == "fake cluster down"


def test_catalogs(api: Api) -> None:
    from jobs.spec import BRANCH_MODELS

    losses = api.client.get("/losses").json()
    assert [entry["name"] for entry in losses] == list(BRANCH_MODELS)
    focal = next(entry for entry in losses if entry["name"] == "focal")
    gamma = next(p for p in focal["parameters"] if p["name"] == "gamma")
    assert gamma == {**gamma, "type": "number", "default": 1.0, "searchable": True, "ge": 0}
    datasets = {entry["name"]: entry for entry in api.client.get("/datasets").json()}
    assert datasets["npz"]["path_params"] == ["path"] and datasets["digits_lt"]["path_params"] == []
    models = {entry["name"] for entry in api.client.get("/models").json()}
    assert models == {"mlp", "resnet32", "resnet18", "resnet34", "resnet50", "resnext50_32x4d", "timm:<arch>"}


def test_openapi_documents_jobspec_body(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    body = schema["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/JobSpec"}
    assert "FocalSpec" in schema["components"]["schemas"]
    assert api.client.get("/docs").status_code == 200


def test_unexpected_error_is_500_with_logged_id(make_api, settings, caplog, monkeypatch) -> None:
    api = make_api(settings, raise_server_exceptions=False)
    job_id = api.submit()

    def boom(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api.service.store, "progress", boom)
    with caplog.at_level(logging.ERROR, logger="service.errors"):
        r = api.client.get(f"/jobs/{job_id}")
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["code"] == "internal_error" and "secret internals" not in r.text and "Traceback" not in r.text
    assert error["details"]["error_id"] in caplog.text and "secret internals" in caplog.text


def test_plots(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from service import plots

    calls: list[str] = []
    render = plots.render_plot
    monkeypatch.setattr(plots, "render_plot", lambda kind, *a, **kw: calls.append(kind) or render(kind, *a, **kw))
    job_id = api.start()
    assert api.client.get(f"/jobs/{job_id}/plots/per-class.png").status_code == 409
    assert api.client.get(f"/jobs/{job_id}/plots/nope.png").status_code == 404
    assert api.client.get(f"/jobs/{job_id}/plots/per-class.gif").status_code == 404
    api.send(job_id, [{"seq": 1, "type": "job_finished", "result": json.loads(FIXTURE.read_text())}])
    png = api.client.get(f"/jobs/{job_id}/plots/per-class.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    # a finished job's figure is rendered once, then served from memory
    assert api.client.get(f"/jobs/{job_id}/plots/per-class.png").content == png.content
    assert calls.count("per-class") == 2  # the 409 attempt while running, and one render after the job finished
    svg = api.client.get(f"/jobs/{job_id}/plots/curves.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content
    assert (
        api.client.get(f"/jobs/{job_id}/plots/curves", params={"format": "svg"})
        .headers["content-type"]
        .startswith("image/svg+xml")
    )


def test_ui_is_mounted(api: Api) -> None:
    for path in ("/ui", "/ui/"):
        r = api.client.get(path)
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    for asset in ("app.js", "app.css"):
        assert api.client.get(f"/ui/{asset}").status_code == 200


def test_driver_state_failed_marks_job_failed_with_log_tail(api: Api) -> None:
    job_id = api.start()
    sub = api.fake.submission(job_id)
    api.fake.log_text[sub.submission_id] = "starting\nTraceback...\nMemoryError: out of memory"
    api.fake.set_state(sub.submission_id, DriverState.FAILED, "Job entrypoint command failed with exit code 1")
    api.tick()
    job = api.client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed" and "exit code 1" in job["error"] and "MemoryError: out of memory" in job["error"]
    assert "MemoryError" in api.client.get(f"/jobs/{job_id}/logs").text


# -- impossible evaluation settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"dataset": {"name": "digits_lt", "test_per_class": 1}}, "evaluation.val_fraction"),
        ({"evaluation": {"val_fraction": 0}}, "evaluation.val_fraction"),
        ({"evaluation": {"epoch": "first"}}, "evaluation.epoch"),
        ({"tune": {"repeats": 21}}, "tune.repeats"),
        ({"tune": {"repeats": 0}}, "tune.repeats"),
    ],
)
def test_impossible_evaluation_settings_are_a_422_naming_the_field(api: Api, overrides: dict, loc: str) -> None:
    r = api.client.post("/jobs", json=tiny_spec(**overrides))
    assert r.status_code == 422, r.text
    assert loc in error_locs(r), r.json()


def test_an_npz_too_small_for_a_validation_split_is_a_422(api: Api, settings) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.normal(size=(12, 3)), "y_train": np.repeat(np.arange(3), 4)}
    np.savez(settings.data_root / "thin.npz", **arrays, x_test=rng.normal(size=(4, 3)), y_test=np.array([0, 1, 2, 2]))
    r = api.client.post("/jobs", json=npz_spec("thin.npz"))
    assert r.status_code == 422 and error_locs(r) == ["evaluation.val_fraction"]
    assert "class 0 (1 test item(s)), class 1 (1 test item(s))" in r.text
    # chosen on test, or with a validation split of its own, the same file is fine
    assert (
        api.client.post("/jobs", json=npz_spec("thin.npz") | {"evaluation": {"selection": "test"}}).status_code == 201
    )
    own = {"x_val": rng.normal(size=(3, 3)), "y_val": np.arange(3)}
    np.savez(
        settings.data_root / "own.npz", **arrays, x_test=rng.normal(size=(4, 3)), y_test=np.array([0, 1, 2, 2]), **own
    )
    assert api.client.post("/jobs", json=npz_spec("own.npz")).status_code == 201


def test_plots_without_matplotlib_say_which_extra(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import service

    monkeypatch.setitem(sys.modules, "service.plots", None)  # what a service without the plots extra sees
    monkeypatch.delattr(service, "plots", raising=False)
    job_id = api.start()
    r = api.client.get(f"/jobs/{job_id}/plots/per-class.png")
    assert r.status_code == 501 and r.json()["error"]["code"] == "plots_unavailable"
    assert "longtail-service[plots]" in r.json()["error"]["message"]
