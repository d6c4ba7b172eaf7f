"""Property checks: schemathesis-generated requests for every operation of /openapi.json, sent with a valid token,
never get a 5xx nor a response the schema does not document (status, content type, body); hypothesis-generated
JobSpec-ish bodies for POST /jobs are either accepted (201) or refused with a field path."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.settings import Settings
from service.testing import FakeDispatcher

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation.modes import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

TOKEN = "fuzz-token-0001"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "data").mkdir()
    cfg = Settings(
        state_dir=root,
        data_root=root / "data",
        reconcile_interval_s=3600,
        max_jobs_per_owner=10**6,
        # Generous limits, and a cluster of unknown size (no feasibility refusals): generated specs that the schema
        # allows get through to a 201.
        max_trials_per_job=10**6,
        max_epochs=10**6,
        max_workers_per_trial=10**6,
        sse_poll_s=0.01,
        api_tokens={TOKEN: "fuzzer"},
    )
    with TestClient(create_app(cfg, dispatcher=FakeDispatcher(nodes=[])), raise_server_exceptions=False) as c:
        c.app.state.service.kick = lambda: None
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        yield c


def _schema():
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(state_dir=Path(tmp), api_tokens={TOKEN: "fuzzer"}), dispatcher=FakeDispatcher())
        raw = app.openapi()
    # Every operation, /jobs/{job_id}/events included: a generated job id never names a job (ids are random), so
    # no never-ending stream of a running job is opened.
    loaded = schemathesis.openapi.from_dict(raw)
    # The coverage phase enumerates thousands of JobSpec variants at collection time (~45 s); fuzzing is enough here.
    loaded.config.phases.coverage.enabled = False
    return loaded


schema = _schema()
# POST /jobs again with schema-valid specs only (a fixed seed: the test below checks that some were accepted).
positive_jobs = _schema().include(path="/jobs", method="POST")
positive_jobs.config.generation.update(modes=[GenerationMode.POSITIVE])


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx_or_off_schema(case: Any, client: TestClient) -> None:
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    kwargs.pop("timeout", None)
    # Negative cases may put non-ASCII characters in header values; HTTP carries header bytes (servers decode them
    # as latin-1), while the test client encodes str values as ASCII: hand it the bytes.
    headers = {}
    for name, value in (kwargs.get("headers") or {}).items():
        try:
            headers[name] = value.encode("ascii") if isinstance(value, str) else value
        except UnicodeEncodeError:
            try:
                headers[name] = value.encode("latin-1")
            except UnicodeEncodeError:
                return  # not expressible as HTTP header bytes at all: no request to send
    if "headers" in kwargs:
        kwargs["headers"] = headers
    response = client.request(
        **{
            k: v
            for k, v in kwargs.items()
            if k in ("method", "url", "headers", "params", "json", "content", "data", "cookies")
        }
    )
    assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])
    if response.headers.get("content-type", "").startswith("application/json") and response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
    case.validate_response(response, checks=CHECKS)


@positive_jobs.parametrize()
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_generated_specs_are_created_or_refused_on_schema(case: Any, client: TestClient) -> None:
    response = client.post("/jobs", json=case.body)
    assert response.status_code in (201, 422), response.text[:500]
    case.validate_response(response, checks=CHECKS)


def test_generated_specs_created_jobs(client: TestClient) -> None:
    """The schema-driven runs above exercised POST /jobs with valid generated specs, not only refusals."""
    counts = client.app.state.service.store.counts_by_status()
    assert counts["queued"] > 0, counts


_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
_domain = st.one_of(
    st.fixed_dictionaries({"choice": st.lists(_scalar, max_size=3)}),
    st.fixed_dictionaries({"uniform": st.lists(st.floats(-2, 2), min_size=0, max_size=3)}),
    st.fixed_dictionaries({"grid": st.lists(st.floats(0, 3), min_size=1, max_size=3)}),
)
_loss = st.fixed_dictionaries(
    {"name": st.sampled_from(["ce", "focal", "ldam", "ib", "seql", "bogus"])},
    optional={
        "gamma": st.one_of(_scalar, _domain),
        "start_epoch": st.integers(-1, 5),
        "label": st.text(max_size=5),
        "reweighting": st.fixed_dictionaries({"scheme": st.sampled_from(["none", "inverse", "x"])}),
    },
)
_body = st.fixed_dictionaries(
    {},
    optional={
        "dataset": st.one_of(
            _scalar,
            st.fixed_dictionaries(
                {"name": st.sampled_from(["digits_lt", "synthetic_lt", "npz", "cifar10_lt", "nope"])},
                optional={"path": st.sampled_from(["a.npz", "../x", "/etc/passwd", ""]), "num_classes": _scalar},
            ),
        ),
        "losses": st.one_of(_scalar, st.lists(_loss, max_size=4)),
        "train": st.fixed_dictionaries(
            {},
            optional={
                "epochs": _scalar,
                "lr": st.one_of(_scalar, _domain),
                "milestones": st.lists(st.integers(-2, 40), max_size=3),
            },
        ),
        "tune": st.fixed_dictionaries(
            {},
            optional={
                "num_samples": _scalar,
                "search": st.sampled_from(["grid", "tpe"]),
                "metric": st.sampled_from(["nll", "accuracy", "x"]),
            },
        ),
        "scaling": st.fixed_dictionaries(
            {}, optional={"num_workers": _scalar, "cpus_per_worker": _scalar, "use_gpu": st.booleans()}
        ),
        "name": _scalar,
    },
)


@given(body=_body)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_post_jobs_never_500(client: TestClient, body: dict) -> None:
    content = json.dumps(body, allow_nan=True)
    r = client.post("/jobs", content=content, headers={"content-type": "application/json"})
    assert r.status_code in (201, 422), r.text
    if r.status_code == 422:
        details = r.json()["error"]["details"]
        assert details and all("loc" in d and d["msg"] for d in details)
