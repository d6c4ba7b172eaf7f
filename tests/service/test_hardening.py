"""Hardening (issue 16), one test per finding, through the real app (TestClient, or a real uvicorn where the
transport matters): authentication before any body is read, driver secrets that cannot be replayed or read, no 500
from any input, strict numbers, dataset path checks, security headers, relative paths, the documented schema."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from support import free_port, wait_for

from service.app import STATIC_DIR, create_app
from service.server import uvicorn_config
from service.settings import Settings
from service.testing import FakeDispatcher, driver_events
from tests.service.conftest import ALICE, BOB, SECRET_HEADER, Api, tiny_spec

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "job_result.json"
ROOT = Path(__file__).resolve().parents[2]


def error(response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
    return body["error"]


def locs(response) -> list[str]:
    return [d["loc"] for d in error(response)["details"]]


@pytest.fixture
def auth_api(make_api, auth_settings: Settings) -> Api:
    api = make_api(auth_settings)
    api.client.headers["Authorization"] = f"Bearer {ALICE}"
    return api


# -- a real uvicorn, for what only a socket shows ---------------------------------------------------------------------
class Served:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.fake = FakeDispatcher()
        self.app = create_app(settings, dispatcher=self.fake)
        self.server = uvicorn.Server(uvicorn_config(self.app, settings, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), 20, "uvicorn to start")
        assert self.server.started
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.settings.port), timeout=10)
        return sock


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or 10 s pass)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def read_one_response(sock: socket.socket) -> bytes:
    """One whole response on a kept-alive connection: its head, then ``Content-Length`` bytes of body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {data!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


@pytest.fixture
def served(auth_settings: Settings):
    cfg = auth_settings.model_copy(
        update={"port": free_port(), "header_read_timeout_s": 0.5, "body_read_timeout_s": 0.5}
    )
    with Served(cfg) as s:
        yield s


# -- 1. authentication before any body is read ------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/internal/jobs/job_x/events", "/jobs"])
def test_unauthenticated_large_body_is_refused_before_it_is_read(served: Served, path: str) -> None:
    sock = served.connect()
    declared = 60 << 20
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    sock.sendall(head.encode() + b"[" * 1024)  # a sliver of the 60 MiB: the answer cannot have waited for the rest
    raw = read_response(sock)
    sock.close()
    status_line, _, rest = raw.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 401"), raw[:300]
    headers = rest.split(b"\r\n\r\n", 1)[0].lower()
    assert b"connection: close" in headers and b"x-content-type-options: nosniff" in headers


def test_post_jobs_without_token_and_with_garbage_is_401(auth_api: Api) -> None:
    r = auth_api.client.post("/jobs", content=b"not json", headers={"Authorization": ""})
    assert r.status_code == 401 and error(r)["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer" and r.headers["connection"] == "close"


def test_internal_without_secret_is_401_before_the_body_is_parsed(api: Api) -> None:
    job_id = api.start()
    r = api.client.post(f"/internal/jobs/{job_id}/events", content=b"{not json")
    assert r.status_code == 401 and error(r)["code"] == "unauthorized"
    r = api.client.post(f"/internal/jobs/{job_id}/events", content=b"{not json", headers={SECRET_HEADER: "wrong"})
    assert r.status_code == 403


def test_internal_has_its_own_small_body_cap(make_api, settings: Settings) -> None:
    assert Settings().max_event_body_bytes == 16 << 20  # 200 events a batch, a 65-trial x 500-epoch result ~9 MB
    api = make_api(settings.model_copy(update={"max_event_body_bytes": 4096}))
    job_id = api.start()
    events = driver_events(["a"], epochs=40)
    r = api.send(job_id, events)
    assert r.status_code == 413 and error(r)["code"] == "payload_too_large"
    assert api.send(job_id, events[:3]).status_code == 200


def test_deploy_proxies_cap_bodies_and_do_not_forward_internal() -> None:
    text = (ROOT / "deploy" / "README.md").read_text()
    nginx = text[text.index("```nginx") :].split("```", 2)[1]
    assert "client_max_body_size" in nginx
    assert re.search(r"location\s+(\^~\s+)?/internal/\s*\{\s*return 404;", nginx), nginx
    caddy = text[text.index("longtail.example.com {") :].split("```", 1)[0]
    assert "request_body" in caddy and "max_size" in caddy
    assert re.search(r"respond\s+/internal/\*\s+404", caddy), caddy


# -- 2. driver credentials --------------------------------------------------------------------------------------------
def test_finished_job_results_cannot_be_changed_with_the_old_secret(api: Api) -> None:
    job_id = api.start()
    secret = api.fake.submission(job_id).secret
    final = json.loads(FIXTURE.read_text())
    assert api.send(job_id, [{"seq": 1, "type": "job_finished", "result": final}]).status_code == 200
    before = api.client.get(f"/jobs/{job_id}/results").json()
    forged = {"seq": 900004, "type": "job_finished", "result": {"forged": True, "trials": []}}
    r = api.send(job_id, [forged], secret=secret)
    assert r.status_code == 403 and "expired" in error(r)["message"]
    r = api.send(job_id, [{"seq": 900005, "type": "epoch", "trial_id": "x", "epoch": 1, "metrics": {}}], secret=secret)
    assert r.status_code == 403
    api.service.results_cache.discard(job_id)  # read it from the store again
    after = api.client.get(f"/jobs/{job_id}/results").json()
    assert after == before and "forged" not in after


def test_store_keeps_a_final_result_even_when_replayed(api: Api) -> None:
    job_id = api.start()
    final = json.loads(FIXTURE.read_text())
    api.send(job_id, [{"seq": 1, "type": "job_finished", "result": final}])
    # The reconciler's spool replay goes to the store directly: a second job_finished changes nothing either.
    api.service.ingest(job_id, [{"seq": 2, "type": "job_finished", "result": {"forged": True, "trials": []}}])
    api.service.results_cache.discard(job_id)
    assert "forged" not in api.client.get(f"/jobs/{job_id}/results").json()


def test_cancelled_job_secret_expires(api: Api) -> None:
    job_id = api.start()
    secret_file = Path(api.fake.submission(job_id).secret_file)
    assert secret_file.is_file()
    assert api.client.post(f"/jobs/{job_id}/cancel").status_code == 200
    assert not secret_file.exists()
    r = api.send(job_id, driver_events(["a"], epochs=1))
    assert r.status_code == 403


def test_secret_is_in_a_private_file_only(api: Api, settings: Settings) -> None:
    job_id = api.start()
    sub = api.fake.submission(job_id)
    path = Path(sub.secret_file)
    assert path.read_text() == sub.secret and path.parent == settings.secrets_dir
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sub.secret not in sub.spec_json
    # No file under the state folder that another user could read holds the secret.
    for file in settings.state_dir.rglob("*"):
        if file.is_file() and file.stat().st_mode & 0o044:
            assert sub.secret.encode() not in file.read_bytes(), file
    api.send(job_id, [{"seq": 1, "type": "job_finished", "result": json.loads(FIXTURE.read_text())}])
    assert not path.exists()  # expired with the job


def test_sweep_removes_secrets_of_final_and_unknown_jobs(api: Api, settings: Settings) -> None:
    stray = settings.secrets_dir / "job_gone.secret"
    stray.write_text("x")
    api.tick()
    assert not stray.exists()


@pytest.mark.parametrize(
    "event",
    [
        {"seq": 1, "type": "epoch", "epoch": 1},  # no trial_id
        {"seq": 1, "type": "epoch", "trial_id": "t", "epoch": "abc"},
        {"seq": 1, "type": "epoch", "trial_id": "t", "epoch": 10**20},
        {"seq": 1, "type": "trial_started"},
        {"seq": 1, "type": "trial_finished", "trial_id": ["x"]},
        {"seq": 1, "type": "job_finished", "result": {"trials": [{"best": "x"}]}},
        {"seq": 1, "type": "job_finished", "result": {"trials": "abc"}},
        {"seq": 1, "type": "job_failed", "error": {"a": 1}},
        {"seq": 1, "type": "Bad Type!"},
        {"seq": 10**30, "type": "epoch", "trial_id": "t", "epoch": 1},
    ],
)
def test_malformed_event_is_422_not_500(api: Api, event: dict[str, Any]) -> None:
    job_id = api.start()
    r = api.send(job_id, [event])
    assert r.status_code == 422, r.text
    assert all(loc.startswith("events[0]") for loc in locs(r)) and ".epoch." not in "".join(locs(r))
    assert api.client.get(f"/jobs/{job_id}").json()["status"] == "running"


def test_unknown_event_type_is_kept(api: Api) -> None:
    job_id = api.start()
    r = api.send(job_id, [{"seq": 1, "type": "gpu_stats", "util": 0.5}])
    assert r.json() == {"accepted": 1, "duplicates": 0}


# -- 3. no 500 from any input -----------------------------------------------------------------------------------------
def test_list_cursor_is_signed_bounded_and_owner_bound(make_api, auth_settings: Settings) -> None:
    import base64

    api = make_api(auth_settings)
    alice = {"Authorization": f"Bearer {ALICE}"}
    for _ in range(3):
        api.submit(headers=alice)
    page = api.client.get("/jobs", params={"limit": 1}, headers=alice).json()
    cursor = page["next_cursor"]
    nxt = api.client.get("/jobs", params={"limit": 1, "cursor": cursor}, headers=alice)
    assert nxt.status_code == 200 and nxt.json()["items"][0]["id"] != page["items"][0]["id"]
    huge = base64.urlsafe_b64encode(b"n:99999999999999999999").decode().rstrip("=")
    forged_num = base64.urlsafe_b64encode(b"n:2").decode().rstrip("=")
    for bad in (huge, huge + "." + cursor.rsplit(".", 1)[1], forged_num, cursor[:-1] + "0", "!!", "."):
        r = api.client.get("/jobs", params={"cursor": bad}, headers=alice)
        assert r.status_code == 422 and error(r)["code"] == "invalid_parameter", (bad, r.text)
    r = api.client.get("/jobs", params={"cursor": cursor}, headers={"Authorization": f"Bearer {BOB}"})
    assert r.status_code == 422  # a cursor is bound to its owner


@pytest.mark.parametrize(
    "params, headers",
    [
        ({"after": "99999999999999999999"}, {}),
        ({"after": "-1"}, {}),
        ({"after": "3"}, {}),  # a bare number: ids are signed
        ({}, {"Last-Event-ID": "99999999999999999999"}),
        ({}, {"Last-Event-ID": "99999999999999999999.0123456789abcdef"}),
        ({}, {"Last-Event-ID": "abc"}),
        ({}, {"Last-Event-ID": "-5"}),
        ({}, {"Last-Event-ID": "3.0123456789abcdef"}),  # a forged signature
    ],
)
def test_event_stream_position_is_validated(api: Api, params: dict, headers: dict) -> None:
    job_id = api.submit()
    r = api.client.get(f"/jobs/{job_id}/events", params=params, headers=headers)
    assert r.status_code == 422 and error(r)["code"] == "invalid_parameter", r.text


def sse_ids(text: str) -> list[str]:
    return re.findall(r"^id: (\S+)$", text, re.M)


def test_event_ids_are_signed_per_job_and_resume(api: Api) -> None:
    job_id, other = api.start(), api.start()
    api.client.post(f"/jobs/{job_id}/cancel")
    api.client.post(f"/jobs/{other}/cancel")
    with api.client.stream("GET", f"/jobs/{job_id}/events") as r:
        ids = sse_ids("".join(r.iter_text()))
    assert r.status_code == 200 and len(ids) >= 2 and all(re.fullmatch(r"\d+\.[0-9a-f]{16}", i) for i in ids)
    with api.client.stream("GET", f"/jobs/{job_id}/events", headers={"Last-Event-ID": ids[0]}) as r:
        assert sse_ids("".join(r.iter_text())) == ids[1:]
    with api.client.stream("GET", f"/jobs/{job_id}/events", params={"after": ids[0]}) as r:
        assert sse_ids("".join(r.iter_text())) == ids[1:]
    r = api.client.get(f"/jobs/{other}/events", headers={"Last-Event-ID": ids[0]})  # another job's id
    assert r.status_code == 422


def npz_spec(path: str, name: str = "npz") -> dict[str, Any]:
    return tiny_spec(dataset={"name": name, "path": path})


@pytest.mark.parametrize(
    "path, kind",
    [
        ("a\x00b.npz", "path_invalid"),
        ("x" * 5000, "path_invalid"),
        ("d/" + "y" * 300 + ".npz", "path_invalid"),
        ("", "path_invalid"),
        (".", "path_not_file"),
        ("folder", "path_not_file"),
        ("fifo", "path_not_file"),
        ("missing.npz", "path_missing"),
    ],
)
def test_dataset_path_must_name_a_regular_file(api: Api, settings: Settings, path: str, kind: str) -> None:
    assert settings.data_root is not None
    (settings.data_root / "folder").mkdir(exist_ok=True)
    if not (settings.data_root / "fifo").exists():
        os.mkfifo(settings.data_root / "fifo")
    r = api.client.post("/jobs", json=npz_spec(path))
    assert r.status_code == 422, r.text
    assert error(r)["details"][0]["loc"] == "dataset.path" and error(r)["details"][0]["type"] == kind


def test_directory_datasets_need_a_directory(api: Api, settings: Settings) -> None:
    assert settings.data_root is not None
    (settings.data_root / "cifar").mkdir()
    (settings.data_root / "a.npz").write_bytes(b"x")
    r = api.client.post("/jobs", json=npz_spec("a.npz", "cifar10_lt"))
    assert r.status_code == 422 and error(r)["details"][0]["type"] == "path_not_directory"
    assert api.client.post("/jobs", json=npz_spec("cifar", "cifar10_lt")).status_code == 201
    assert api.client.post("/jobs", json=npz_spec("a.npz")).status_code == 201


def test_500_closes_the_connection(make_api, settings: Settings, monkeypatch) -> None:
    api = make_api(settings, raise_server_exceptions=False)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(api.service.store, "list_jobs", boom)
    r = api.client.get("/jobs")
    assert r.status_code == 500 and r.headers["connection"] == "close" and error(r)["code"] == "internal_error"


# -- 5. non-finite and absurd numbers ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content",
    [
        b'{"name": "x", "dataset": {"name": "digits_lt", "imbalance_factor": Infinity}}',
        b'{"name": "x", "dataset": {"name": "digits_lt", "imbalance_factor": NaN}}',
        b'{"name": "x", "dataset": {"name": "digits_lt", "imbalance_factor": -Infinity}}',
        b'{"name": "x", "dataset": {"name": "digits_lt", "imbalance_factor": 1e999}}',
    ],
)
def test_non_finite_numbers_are_refused(api: Api, content: bytes) -> None:
    r = api.client.post("/jobs", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422 and error(r)["code"] == "validation_error", r.text
    assert api.client.get("/jobs").json()["items"] == []


@pytest.mark.parametrize(
    "overrides, loc",
    [
        ({"train": {"epochs": 2, "seed": 10**30}}, "train.seed"),
        ({"train": {"epochs": 2, "seed": 2**32}}, "train.seed"),
        ({"dataset": {"name": "digits_lt", "seed": -1}}, "dataset.seed"),
        ({"tune": {"seed": 2**40}}, "tune.seed"),
        ({"train": {"epochs": 2, "warmup_epochs": 10**20}}, "train.warmup_epochs"),
        ({"losses": [{"name": "focal", "gamma": {"choice": [1, 10**300]}}]}, "losses[0].gamma.choice[1]"),
    ],
)
def test_absurd_integers_are_refused(api: Api, overrides: dict, loc: str) -> None:
    r = api.client.post("/jobs", json=tiny_spec(**overrides))
    assert r.status_code == 422 and loc in locs(r), r.text


def test_largest_seed_is_accepted(api: Api) -> None:
    r = api.client.post("/jobs", json=tiny_spec(train={"epochs": 2, "seed": 2**32 - 1}))
    assert r.status_code == 201 and r.json()["spec"]["train"]["seed"] == 2**32 - 1


# -- 6. security headers ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/ui/", "/ui/app.js", "/ui/app.css", "/healthz", "/jobs", "/jobs/job_none"])
def test_security_headers_everywhere(auth_api: Api, path: str) -> None:
    for headers in ({}, {"Authorization": ""}):
        r = auth_api.client.get(path, headers=headers)
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"


def test_ui_page_has_no_inline_script_style_or_cdn() -> None:
    for file in (f for f in STATIC_DIR.rglob("*") if f.is_file()):
        text = file.read_text()
        assert not re.search(r"https?://", text.replace("http://www.w3.org/2000/svg", "")), file
        if file.suffix == ".html":
            for tag in re.findall(r"<script\b[^>]*>", text):
                assert "src=" in tag, tag
            assert "<style" not in text and not re.search(r"\sstyle=", text)
            assert not re.search(r"\son[a-z]+=", text)  # no inline event handlers


# -- 7. smaller items -------------------------------------------------------------------------------------------------
def test_owner_sees_paths_relative_to_the_storage_root(api: Api, settings: Settings) -> None:
    job_id = api.start()
    storage = str(settings.storage_path)
    ckpt = f"{storage}/tune-{job_id}/trial_a/checkpoint_000001"
    event = {"seq": 1, "type": "epoch", "trial_id": "a", "epoch": 1, "metrics": {}, "checkpoint_path": ckpt}
    api.send(job_id, [event])
    final = json.loads(FIXTURE.read_text())
    final["trials"][0]["checkpoint_path"] = ckpt
    api.send(job_id, [{"seq": 2, "type": "job_finished", "result": final}])
    with api.client.stream("GET", f"/jobs/{job_id}/events") as r:
        stream = "".join(r.iter_text())
    results = api.client.get(f"/jobs/{job_id}/results").text
    assert f"tune-{job_id}/trial_a/checkpoint_000001" in stream and f"tune-{job_id}/trial_a" in results
    for text in (stream, results):
        assert storage not in text and str(settings.state_dir) not in text
    api.fake.log_text[api.fake.submission(job_id).submission_id] = (
        f"saved to {storage}/tune-{job_id}/x\nsession /tmp/ray/session_2026-11-29_10-00-00_1_2/logs/job.log\n"
        f"data {settings.data_root}/a.npz\n"
    )
    logs = api.client.get(f"/jobs/{job_id}/logs").text
    assert f"saved to tune-{job_id}/x" in logs and "data data/a.npz" in logs and "<ray-session>/logs" in logs
    assert "/tmp/ray" not in logs and storage not in logs


def test_openapi_declares_bearer_and_matches_real_responses(auth_api: Api) -> None:
    schema = auth_api.client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (LONGTAIL_API_TOKENS)",
    }
    paths = schema["paths"]
    assert paths["/jobs"]["post"]["security"] == [{"bearer": []}]
    assert paths["/internal/jobs/{job_id}/events"]["post"]["security"] == [{"driverSecret": []}]
    assert "security" not in paths["/healthz"]["get"]
    logs_404 = paths["/jobs/{job_id}/logs"]["get"]["responses"]["404"]["content"]
    assert list(logs_404) == ["application/json"]
    r = auth_api.client.get("/jobs/job_nope/logs")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert "422" in paths["/jobs"]["get"]["responses"] and "422" in paths["/jobs/{job_id}/events"]["get"]["responses"]


def test_partial_headers_are_dropped(served: Served) -> None:
    sock = served.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
    assert read_response(sock) == b""  # closed by the server after header_read_timeout_s (0.5 s), not 10 s
    sock.close()


def test_short_body_gets_408(served: Served) -> None:
    sock = served.connect()
    head = f"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\nContent-Length: 1000\r\n\r\n"
    sock.sendall(head.encode() + b'{"name": ')  # fewer bytes than announced, then silence
    raw = read_response(sock)
    sock.close()
    assert raw.startswith(b"HTTP/1.1 408"), raw[:300]
    assert b"request_timeout" in raw and b"connection: close" in raw.lower()


def test_keep_alive_connection_gets_the_header_deadline_again(served: Served) -> None:
    sock = served.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    first = read_one_response(sock)  # its head and body may arrive in separate reads
    assert first.startswith(b"HTTP/1.1 200")
    sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # a second request that stalls in its headers
    assert read_response(sock) == b""
    sock.close()


def test_spool_replay_skips_malformed_events(api: Api) -> None:
    job_id = api.start()
    spool = api.service.job_dir(job_id) / "events.jsonl"
    spool.parent.mkdir(parents=True, exist_ok=True)
    good = driver_events(["a"], epochs=1)
    bad = [{"seq": 90, "type": "epoch", "epoch": "abc"}, {"seq": 91, "type": "trial_started"}]
    spool.write_text("\n".join(json.dumps(e) for e in [*good, *bad]) + "\n{torn")
    (spool.parent / "result.json").write_text(json.dumps({"trials": "not a list"}))
    assert api.service.replay_spool(job_id) is True
    stored = [json.loads(p)["seq"] for _, kind, p in api.service.store.events_after(job_id) if kind != "status"]
    assert stored == [e["seq"] for e in good]
    assert api.client.get(f"/jobs/{job_id}").json()["status"] == "running"  # the malformed result was not taken
