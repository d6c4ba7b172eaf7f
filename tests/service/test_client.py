"""The Python client against a real uvicorn server (the app with a FakeDispatcher, on a free loopback port).

Jobs are driven the way a Ray driver would: events POSTed to ``/internal/jobs/{id}/events`` with the job's secret.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from support import free_port, tiny_spec
from support import wait_for as wait_until

from service.app import create_app
from service.client import (
    AsyncClient,
    Client,
    Conflict,
    Job,
    NotFound,
    QuotaExceeded,
    Results,
    ServiceUnavailable,
    SpecFileError,
    Unauthorized,
    ValidationFailed,
    WaitTimeout,
)
from service.settings import Settings
from service.testing import FakeDispatcher, driver_events

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "job_result.json"
SECRET_HEADER = "X-Longtail-Driver-Secret"
TOKEN = "client-test-token-1"


class LiveServer:
    """The real app served by uvicorn in a thread; ``stop()`` and ``start()`` again on the same port and store."""

    def __init__(self, settings: Settings, dispatcher: FakeDispatcher | None = None) -> None:
        self.settings = settings
        self.port = settings.port
        self.url = f"http://127.0.0.1:{self.port}"
        self.dispatcher = dispatcher or FakeDispatcher()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LiveServer:
        app = create_app(self.settings, dispatcher=self.dispatcher)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        server = self._server
        wait_until(lambda: server.started or not self._thread.is_alive(), 20, "uvicorn to start")
        assert server.started, "uvicorn did not start"
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=20)
            assert not self._thread.is_alive(), "uvicorn did not stop"
        self._server = self._thread = None

    # -- acting as a job's Ray driver -------------------------------------------------------------------------------
    def secret(self, job_id: str) -> str:
        return wait_until(
            lambda: next((s.secret for s in self.dispatcher.submissions if s.job_id == job_id), None),
            10,
            f"job {job_id} to be dispatched",
        )

    def send(self, job_id: str, events: list[dict[str, Any]]) -> None:
        r = httpx.post(
            f"{self.url}/internal/jobs/{job_id}/events",
            json={"events": events},
            headers={SECRET_HEADER: self.secret(job_id)},
        )
        assert r.status_code == 200, r.text

    def finish(self, job_id: str, result: dict[str, Any] | None = None) -> None:
        """Report a full run: trial events, then ``job_finished`` with the fixture's JobResult."""
        result = result or json.loads(FIXTURE.read_text())
        events = driver_events(
            [t["trial_id"] for t in result["trials"][:2]], epochs=2, control=result["control_trial_id"]
        )
        events.append({"seq": len(events) + 1, "type": "job_finished", "result": result, "time": time.time()})
        self.send(job_id, events)


def make_settings(tmp_path: Path, port: int | None = None, **overrides: Any) -> Settings:
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "state_dir": tmp_path,
        "data_root": tmp_path / "data",
        "port": port or free_port(),
        "reconcile_interval_s": 3600,
        "sse_poll_s": 0.05,
        "sse_heartbeat_s": 0.5,
        "api_tokens": {},
        "max_running_jobs": 10,
        "max_jobs_per_owner": 20,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def live_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def make(**overrides: Any) -> LiveServer:
        server = LiveServer(make_settings(tmp_path / f"s{len(servers)}", **overrides)).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def live(live_factory: Callable[..., LiveServer]) -> LiveServer:
    return live_factory()


@pytest.fixture
def client(live: LiveServer) -> Iterator[Client]:
    with Client(live.url, retries=2, backoff=0.05) as c:
        yield c


# -- happy path ---------------------------------------------------------------------------------------------------
def test_submit_get_list_wait_results(live: LiveServer, client: Client) -> None:
    job = client.submit(tiny_spec())
    assert isinstance(job, Job) and job.name == "tiny" and job.progress.trials_total == 3
    assert job.raw["id"] == job.id and job.job_spec.train.epochs == 2
    assert client.get(job.id).id == job.id
    assert [j.id for j in client.list()] == [job.id]
    wait_until(lambda: client.get(job.id).status == "running", what="dispatch")
    assert [j.id for j in client.list(status="running")] == [job.id]
    assert client.list(status=["succeeded", "failed"]) == []

    # Partial results while running.
    live.send(job.id, driver_events(["t0"], epochs=1))
    partial = client.results(job.id)
    assert isinstance(partial, Results) and partial.complete is False and partial.trials[0]["trial_id"] == "t0"

    seen: list[Job] = []
    finisher = threading.Timer(0.3, live.finish, args=(job.id,))
    finisher.start()
    final = client.wait(job.id, timeout=30, on_progress=seen.append)
    finisher.join()
    assert final.status == "succeeded" and final.done
    assert seen and seen[-1].status == "succeeded"

    results = client.results(job.id)
    fixture = json.loads(FIXTURE.read_text())
    assert results.complete and results.raw["branches"] == fixture["branches"]
    assert results.raw == client._http.get(f"/jobs/{job.id}/results").json()
    rows = results.rows()
    assert rows[0]["is_control"] and rows[0]["gain"] == 0.0
    assert [r["branch"] for r in rows[1:]] == [b["branch"] for b in fixture["branches"]]
    assert rows[1]["many_shot_accuracy"] == fixture["branches"][0]["best_metrics"]["many_shot_accuracy"]


def test_results_to_dataframe(live: LiveServer, client: Client) -> None:
    pd = pytest.importorskip("pandas")
    job = client.submit(tiny_spec())
    live.finish(job.id)
    frame = client.results(job.id).to_dataframe()
    assert isinstance(frame, pd.DataFrame) and "control" in frame.index and "gain" in frame.columns


def test_to_dataframe_without_pandas_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pandas(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "pandas":
            raise ImportError("no pandas")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    fixture = json.loads(FIXTURE.read_text())
    results = Results.from_payload({"job_id": "j", "status": "succeeded", "complete": True, **fixture})
    with pytest.raises(ImportError, match="pip install pandas"):
        results.to_dataframe()


def test_cancel_then_conflict(live: LiveServer, client: Client) -> None:
    job = client.submit(tiny_spec())
    cancelled = client.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.done
    with pytest.raises(Conflict) as info:
        client.cancel(job.id)
    assert info.value.status_code == 409 and "already cancelled" in info.value.message


def test_catalogs(client: Client) -> None:
    losses = {entry["name"] for entry in client.losses()}
    assert {
        "ce",
        "focal",
        "label_smoothing",
        "seql",
        "ib",
        "cdt",
        "ldam",
        "balanced_softmax",
        "logit_adjusted",
    } <= losses
    assert "digits_lt" in {entry["name"] for entry in client.datasets()}
    assert {"mlp", "resnet32"} <= {entry["name"] for entry in client.models()}
    assert client.health() == {"status": "ok", "auth": False}
    assert client.ready()["status"] == "ready"


def test_list_follows_the_cursor(client: Client) -> None:
    ids = [client.submit(tiny_spec(name=f"j{i}")).id for i in range(5)]
    listed = client.list(page_size=2)
    assert sorted(j.id for j in listed) == sorted(ids) and len(listed) == 5
    assert len(client.list(page_size=2, limit=3)) == 3


# -- spec files ---------------------------------------------------------------------------------------------------
def test_submit_yaml_and_json_files(client: Client, tmp_path: Path) -> None:
    import yaml

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(name="from-yaml")))
    (tmp_path / "spec.json").write_text(json.dumps(tiny_spec(name="from-json")))
    assert client.submit(tmp_path / "spec.yaml").name == "from-yaml"
    assert client.submit(str(tmp_path / "spec.json")).name == "from-json"


def test_examples_validate_locally() -> None:
    from service.client import load_spec

    for path in sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml")):
        assert load_spec(path)["api_version"] == "v1"


@pytest.mark.parametrize(
    ("text", "suffix", "expected"),
    [
        ("dataset: {name: digits_lt}\nlosses: [{name: focal, gamma: -1}]\n", ".yaml", "losses[0].gamma"),
        ("dataset: {name: digits_lt}\nlosses: [{name: nope}]\n", ".yaml", "losses[0]"),
        ("dataset: [unclosed\n", ".yaml", "invalid YAML at line"),
        ('{"dataset": ', ".json", "invalid JSON at line 1"),
        ("- just\n- a list\n", ".yml", "expected a mapping"),
    ],
)
def test_bad_spec_file_names_file_and_field(
    client: Client, tmp_path: Path, text: str, suffix: str, expected: str
) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    with pytest.raises(SpecFileError) as info:
        client.submit(path)
    message = str(info.value)
    assert str(path) in message and expected in message and "\n" not in message
    assert client.list() == []  # nothing was sent


def test_missing_spec_file(client: Client, tmp_path: Path) -> None:
    with pytest.raises(SpecFileError, match="no such file"):
        client.submit(tmp_path / "missing.yaml")


# -- typed errors -------------------------------------------------------------------------------------------------
def test_422_carries_field_details(client: Client) -> None:
    with pytest.raises(ValidationFailed) as info:
        client.submit(tiny_spec(losses=[{"name": "focal", "gamma": -1}], train={"epochs": 0}))
    err = info.value
    assert err.status_code == 422 and err.code == "invalid_spec"
    assert set(err.field_errors) >= {"losses[0].gamma", "train.epochs"}
    assert "losses[0].gamma" in str(err)


def test_401_without_or_with_a_wrong_token(live_factory: Callable[..., LiveServer]) -> None:
    server = live_factory(api_tokens={TOKEN: "alice"})
    for token in (None, "wrong-token-123"):
        with Client(server.url, token=token, retries=0) as anonymous, pytest.raises(Unauthorized) as info:
            anonymous.list()
        assert info.value.status_code == 401 and "bearer token" in info.value.message
    with Client(server.url, token=TOKEN) as alice:
        job = alice.submit(tiny_spec())
        assert job.owner == "alice" and alice.get(job.id).id == job.id


def test_404_for_an_unknown_job(client: Client) -> None:
    with pytest.raises(NotFound) as info:
        client.get("job_0000000000000000")
    assert info.value.status_code == 404 and "job_0000000000000000" in info.value.message
    with pytest.raises(NotFound):
        client.results("job_0000000000000000")
    with pytest.raises(NotFound):
        client.wait("job_0000000000000000", timeout=5)


def test_409_idempotency_key_reused_with_another_body(client: Client) -> None:
    first = client.submit(tiny_spec(), idempotency_key="key-1")
    assert client.submit(tiny_spec(), idempotency_key="key-1").id == first.id
    with pytest.raises(Conflict) as info:
        client.submit(tiny_spec(name="other"), idempotency_key="key-1")
    assert info.value.code == "idempotency_conflict" and info.value.details == {"job_id": first.id}


def test_429_quota(live_factory: Callable[..., LiveServer]) -> None:
    server = live_factory(max_jobs_per_owner=1)
    with Client(server.url) as c:
        c.submit(tiny_spec())
        with pytest.raises(QuotaExceeded) as info:
            c.submit(tiny_spec())
    assert info.value.status_code == 429


def test_unreachable_service() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    retries: list[int] = []
    with Client(url, retries=2, backoff=0.01, on_retry=lambda n, reason, delay: retries.append(n)) as c:
        with pytest.raises(ServiceUnavailable) as info:
            c.list()
    assert retries == [1, 2]
    assert info.value.message == f"cannot reach the longtail service at {url} (connection refused)"


def test_wait_deadline(live: LiveServer, client: Client) -> None:
    job = client.submit(tiny_spec())
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as info:
        client.wait(job.id, timeout=0.5)
    assert time.monotonic() - started < 5
    assert info.value.job is not None and info.value.job.id == job.id and not info.value.job.done


# -- transient failures -------------------------------------------------------------------------------------------
def test_retries_across_a_service_restart(live: LiveServer) -> None:
    retried = threading.Event()
    with Client(live.url, retries=40, backoff=0.05, max_backoff=0.25, on_retry=lambda *_: retried.set()) as c:
        job = c.submit(tiny_spec())
        live.stop()
        outcome: dict[str, Any] = {}

        def calls_while_down() -> None:
            try:
                outcome["job"] = c.get(job.id)
                outcome["submitted"] = c.submit(tiny_spec(name="during-restart"))
            except Exception as exc:  # reported below
                outcome["error"] = exc

        worker = threading.Thread(target=calls_while_down)
        worker.start()
        assert retried.wait(10), "the client never retried"
        live.start()  # same port, same SQLite store
        worker.join(timeout=30)
        assert "error" not in outcome, outcome.get("error")
        assert outcome["job"].id == job.id
        assert sorted(j.name for j in c.list()) == ["during-restart", "tiny"]


class FlakyTransport(httpx.BaseTransport):
    """Answers 503 (then 502) before passing requests through; ``/events`` always fails with 502."""

    def __init__(self, failures: int = 2) -> None:
        self.inner = httpx.HTTPTransport()
        self.failures = failures
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if request.url.path.endswith("/events"):
            return httpx.Response(502, text="bad gateway")
        if self.failures > 0:
            self.failures -= 1
            return httpx.Response(
                503 if self.failures else 502, json={"error": {"code": "unavailable", "message": "busy"}}
            )
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_503_and_502_are_retried(live: LiveServer) -> None:
    transport = FlakyTransport(failures=2)
    with Client(live.url, retries=3, backoff=0.01, transport=transport) as c:
        assert c.losses()
    assert transport.calls == 3
    with Client(live.url, retries=1, backoff=0.01, transport=FlakyTransport(failures=5)) as c:
        with pytest.raises(ServiceUnavailable, match="503"):
            c.losses()


def test_wait_falls_back_to_polling(live: LiveServer) -> None:
    with Client(live.url, retries=0, poll_interval=0.05, transport=FlakyTransport(failures=0)) as c:
        job = c.submit(tiny_spec())
        finisher = threading.Timer(0.2, live.finish, args=(job.id,))
        finisher.start()
        final = c.wait(job.id, timeout=30)
        finisher.join()
    assert final.status == "succeeded"


# -- the async twin -----------------------------------------------------------------------------------------------
def test_async_client(live: LiveServer) -> None:
    async def scenario() -> None:
        async with AsyncClient(live.url, retries=1, backoff=0.01) as c:
            job = await c.submit(tiny_spec())
            assert (await c.get(job.id)).id == job.id
            assert [j.id for j in await c.list()] == [job.id]
            assert {"focal", "ldam"} <= {e["name"] for e in await c.losses()}
            assert await c.datasets() and await c.models()
            seen: list[str] = []

            async def on_progress(j: Job) -> None:
                seen.append(str(j.status))

            finisher = threading.Timer(0.3, live.finish, args=(job.id,))
            finisher.start()
            final = await c.wait(job.id, timeout=30, on_progress=on_progress)
            finisher.join()
            assert final.status == "succeeded" and seen[-1] == "succeeded"
            assert (await c.results(job.id)).complete
            other = await c.submit(tiny_spec(name="second"))
            assert (await c.cancel(other.id)).status == "cancelled"
            with pytest.raises(Conflict):
                await c.cancel(other.id)
            with pytest.raises(NotFound):
                await c.get("job_0000000000000000")
            with pytest.raises(ValidationFailed) as info:
                await c.submit(tiny_spec(losses=[{"name": "focal", "gamma": -1}]))
            assert "losses[0].gamma" in info.value.field_errors
            with pytest.raises(WaitTimeout):
                await c.wait((await c.submit(tiny_spec(name="third"))).id, timeout=0.3)

    asyncio.run(scenario())


# -- the JobResult model end to end ------------------------------------------------------------------------------
def _repeats_events() -> list[dict[str, Any]]:
    """The events of a 2-seed job (control + focal + ldam), with validation and test metrics."""
    events: list[dict[str, Any]] = []
    rows = [("control", -1, "control/0", 0.50), ("focal", 0, "focal/0", 0.58), ("ldam", 1, "ldam/0", 0.61)]
    for seed in (0, 1):
        for branch, index, config_id, base in rows:
            tid = f"{branch}-{seed}"
            config = {"loss.gamma": 2.0, "config_id": config_id, "train.seed": seed}
            events.append(
                {
                    "type": "trial_started",
                    "trial_id": tid,
                    "branch": branch,
                    "branch_index": index,
                    "is_control": branch == "control",
                    "config": config,
                    "config_id": config_id,
                    "seed": seed,
                }
            )
            for epoch, (dv, dt) in enumerate([(0.00, 0.00), (0.05, 0.01), (0.02, 0.06)], 1):
                test = round(base + dt + 0.03 * seed * (1 + index), 4)  # the control is the same on both seeds
                metrics = {
                    "epoch": epoch,
                    "balanced_accuracy": test,
                    "accuracy": test,
                    "val_balanced_accuracy": round(base + dv, 4),
                    "val_accuracy": round(base + dv, 4),
                    "per_class_accuracy": [test, test],
                }
                events.append({"type": "epoch", "trial_id": tid, "epoch": epoch, "metrics": metrics})
            events.append({"type": "trial_finished", "trial_id": tid, "status": "succeeded", "error": None})
    for i, e in enumerate(events, 1):
        e.update(seq=i, time=1000.0 + i)
    return events


def test_the_job_result_round_trips_through_the_store_the_rest_payload_and_the_client(
    live: LiveServer, client: Client
) -> None:
    from jobs.results import JobResult, ResultCollector
    from service.schemas import JobResults

    body = tiny_spec(tune={"repeats": 2}, train={"epochs": 3})
    job = client.submit(body)
    spec = job.job_spec
    events = _repeats_events()
    collector = ResultCollector(spec, {"name": "digits_lt", "fingerprint": "f" * 64})
    for e in events:
        collector.apply(e)
    expected = collector.result()
    for t in expected["trials"]:  # the epoch selected on validation: epoch 2 (val +0.05), not 3 (test +0.06)
        assert t["selected"]["epoch"] == 2
    focal = expected["branches"][0]
    assert (
        focal["n_seeds"] == 2 and focal["gain"] == pytest.approx((0.08 + 0.11) / 2) and focal["gain_ci95"] is not None
    )

    # While running: the partial result is computed from the stored epochs exactly as the driver computes it.
    live.send(job.id, events)
    partial = client.results(job.id)
    assert not partial.complete and partial.dataset is None
    assert partial.raw["branches"] == expected["branches"]
    assert partial.raw["control_summary"] == expected["control_summary"] and expected["control_summary"]["n_seeds"] == 2
    assert partial.raw["control_posthoc"] == expected["control_posthoc"]
    for mine, theirs in zip(
        sorted(partial.raw["trials"], key=lambda t: t["trial_id"]),
        sorted(expected["trials"], key=lambda t: t["trial_id"]),
        strict=True,
    ):
        assert {k: v for k, v in mine.items() if k != "checkpoint_path"} == {
            k: v for k, v in theirs.items() if k != "checkpoint_path"
        }
    assert partial.raw["best_trial"] == expected["best_trial"] and partial.selected_on == "val"
    # the store's progress chose its best on validation too
    assert client.get(job.id).progress.best.value == pytest.approx(expected["best_trial"]["selection_value"])

    # Finished: the driver's JobResult is stored, served and read back unchanged.
    live.send(job.id, [{"seq": len(events) + 1, "type": "job_finished", "result": expected, "time": 2000.0}])
    results = client.results(job.id)
    assert results.complete and results.raw == {"job_id": job.id, "status": "succeeded", "complete": True, **expected}
    assert isinstance(results, JobResults) and JobResult.model_validate(expected) == JobResult.model_validate(
        {k: v for k, v in results.raw.items() if k not in ("job_id", "status", "complete")}
    )
    assert results.branches[0].gain_ci95 == tuple(focal["gain_ci95"]) and results.repeats == 2
    rows = results.rows()
    assert rows[0]["is_control"] and rows[0]["n_seeds"] == 2
    assert rows[1]["n_seeds"] == 2 and rows[1]["gain_std"] == pytest.approx(focal["gain_std"])

    # The model is published: /openapi.json describes the result's fields.
    schema = client._http.get("/openapi.json").json()["components"]["schemas"]
    assert {"gain", "gain_std", "gain_ci95", "significant", "n_seeds", "config_id"} <= set(
        schema["BranchResult"]["properties"]
    )
    assert {"seed", "config_id", "selected"} <= set(schema["TrialResult"]["properties"])
    assert {"selected_on", "repeats", "control_summary", "control_posthoc"} <= set(schema["JobResults"]["properties"])
    assert {"n_seeds", "test_mean", "best_metrics", "seed_epochs"} <= set(schema["ControlSummary"]["properties"])
    assert "significant" in schema["PosthocSummary"]["properties"]


# -- the control row: the server's figures, a fallback for older results ----------------------------------------
def _with_control_seeds() -> dict[str, Any]:
    """The fixture with a second control seed (its metrics 0.1 lower): what the control's mean is over."""
    result = json.loads(FIXTURE.read_text())
    control = next(t for t in result["trials"] if t["trial_id"] == result["control_trial_id"])
    second = json.loads(json.dumps(control)) | {"trial_id": "control_seed1"}
    second["best"]["metrics"] = {
        k: v - 0.1 if isinstance(v, float) else v for k, v in second["best"]["metrics"].items()
    }
    result["trials"].append(second)
    return result


def _payload(result: dict[str, Any]) -> Results:
    return Results.from_payload({"job_id": "j", "status": "succeeded", "complete": True, **result})


def test_the_control_row_shows_the_servers_mean_over_seeds_and_significance() -> None:
    result = _with_control_seeds()
    # The server's figures differ from what the client would compute from the trials (the mean of the two seeds):
    # the row must show the server's.
    server_metrics = {
        "balanced_accuracy": 0.4321,
        "accuracy": 0.4444,
        "many_shot_accuracy": 0.5,
        "few_shot_accuracy": 0.3,
    }
    result["control_summary"] |= {"n_seeds": 7, "test_mean": 0.4321, "test_std": 0.01, "best_metrics": server_metrics}
    # significant by the server although the interval sent includes 0: the client reads it, it does not recompute it
    result["control_posthoc"] = {"method": "logit_adjustment", "tau": 1.0, "test_mean": 0.8, "gain": 0.02}
    result["control_posthoc"] |= {"gain_ci95": [-0.01, 0.05], "significant": True, "n_seeds": 7, "metrics": {}}
    rows = _payload(result).rows()
    control, posthoc = rows[0], rows[1]
    assert control["is_control"] and control["n_seeds"] == 7 and control["best_value"] == 0.4321
    assert control["balanced_accuracy"] == 0.4321 and control["accuracy"] == 0.4444
    assert control["many_shot_accuracy"] == 0.5 and control["medium_shot_accuracy"] is None
    assert control["test_std"] == 0.01
    assert posthoc["is_posthoc"] and posthoc["significant"] is True and posthoc["n_seeds"] == 7


def test_a_result_stored_without_the_control_summary_still_reads_and_falls_back() -> None:
    """A result of an older driver: no control_summary, control_posthoc without significant."""
    from jobs.results import JobResult

    result = _with_control_seeds()
    del result["control_summary"]
    result["control_posthoc"] = {"method": "logit_adjustment", "tau": 1.0, "test_mean": 0.8, "gain": 0.02}
    result["control_posthoc"] |= {"gain_ci95": [0.01, 0.05], "n_seeds": 2, "metrics": {}}
    assert JobResult.model_validate(result).control_summary is None
    rows = _payload(result).rows()
    control, posthoc = rows[0], rows[1]
    seeds = [t for t in result["trials"] if t["is_control"]]
    assert control["n_seeds"] == 2
    assert control["balanced_accuracy"] == pytest.approx(
        sum(t["best"]["metrics"]["balanced_accuracy"] for t in seeds) / 2
    )
    assert posthoc["significant"] is True  # the interval excludes 0: the branches' rule, applied by the client
    result["control_posthoc"]["gain_ci95"] = [-0.01, 0.05]
    assert _payload(result).rows()[1]["significant"] is False


# -- one implementation -------------------------------------------------------------------------------------------
def test_the_sync_client_is_generated_from_the_async_one() -> None:
    """``Client`` is ``AsyncClient`` through unasync: the committed file is what the script generates now."""
    import importlib.util
    import inspect

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("gen_sync_client", root / "scripts" / "gen_sync_client.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.TARGET.read_text(encoding="utf-8") == gen.generate(), "run: python scripts/gen_sync_client.py"
    # the same public methods, coroutines on one side only
    public = {n for n in dir(AsyncClient) if not n.startswith("_")}
    assert public - {"aclose"} == {n for n in dir(Client) if not n.startswith("_")} - {"close"}
    assert {"submit", "wait", "download_model", "predict", "delete"} <= public
    for name in public:
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name
        assert not inspect.iscoroutinefunction(getattr(Client, "close" if name == "aclose" else name)), name


def test_heartbeats_and_the_retry_hint_are_not_events(live: LiveServer, client: Client) -> None:
    """httpx-sse yields the stream's ``retry:`` line and heartbeats as empty events; the client skips them."""
    job = client.submit(tiny_spec())
    live.send(job.id, driver_events(["t0"], epochs=1))
    from contextlib import closing

    ids = []
    with closing(client._events(job.id, None, remaining=1.0)) as events:
        for event_id in events:
            ids.append(event_id)
            if len(ids) == 3:  # trial_started, one epoch, trial_finished
                break
    assert len(ids) == 3 and all(ids) and len(set(ids)) == 3


def test_the_client_and_the_cli_load_no_server_or_training_library() -> None:
    """In the full install too: ``from service import Client, AsyncClient`` and the CLI import none of them (a fresh
    interpreter; tests/test_light_install.py checks the same where they are not even installed)."""
    import subprocess
    import sys

    import service.cli
    import service.client

    code = (
        "import sys, service\n"
        "from service import AsyncClient, Client\n"
        "import service.cli\n"
        "heavy = ('torch', 'numpy', 'ray', 'fastapi', 'starlette', 'sqlalchemy', 'pydantic_settings', 'psutil')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout + done.stderr
    for module in (service.client, service.cli):  # every exported name resolves (service.cli's lazily)
        assert all(getattr(module, name) is not None for name in module.__all__)
