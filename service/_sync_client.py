# Generated from service/_async_client.py by scripts/gen_sync_client.py: do not edit.
"""The client's requests, written once: ``AsyncClient`` here, and ``Client`` in ``_sync_client.py``.

``_sync_client.py`` is generated from this file by ``scripts/gen_sync_client.py`` (unasync: ``async``/``await``
dropped, ``AsyncClient`` -> ``Client``, ``aclose`` -> ``close``, ...); a test fails when it is out of date. Edit this
file, then run the script. What needs no I/O (errors, models, the retry policy, the wait's clock) is in
``_client_core.py``.
"""

from __future__ import annotations

import builtins
import os
import uuid
from collections.abc import Generator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse
from tenacity import Retrying

from service._client_core import (
    Deadline,
    Job,
    ProgressCallback,
    Results,
    ServiceUnavailable,
    SpecLike,
    Transient,
    WaitTimeout,
    _Base,
    _headers,
    _unreachable,
    check_stream,
    checked,
    error_from_response,
    report,
    sleep,
    spec_payload,
    sse_timeout,
    transport_failure,
)


class Client(_Base):
    """A client of the longtail service; use it as a context manager, or close it.

    ``Client`` blocks; ``AsyncClient`` has the same methods as coroutines (``async with AsyncClient(...) as lt:
    await lt.submit(...)``), and its ``wait`` also takes a coroutine function as ``on_progress``.

    Args:
        base_url: the service (default ``$LONGTAIL_URL`` or http://127.0.0.1:8000).
        token: the bearer token (default ``$LONGTAIL_TOKEN``).
        timeout: seconds per request.
        retries: attempts after the first for transient failures (exponential backoff from ``backoff`` seconds,
            capped at ``max_backoff``).
        poll_interval: seconds between polls when ``wait`` cannot follow the event stream.
        on_retry: called as ``on_retry(attempt, reason, delay_s)`` before each retry.
        transport: an ``httpx`` transport (tests).
    """

    def __init__(self, base_url: str | None = None, token: str | None = None, **kwargs: Any) -> None:
        transport = kwargs.pop("transport", None)
        super().__init__(base_url, token, **kwargs)
        self._http = httpx.Client(
            base_url=self.base_url, headers=_headers(self.token), timeout=self.timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport -------------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, idempotent: bool = True, **kwargs: Any) -> httpx.Response:
        try:
            for attempt in Retrying(**self._retry):
                with attempt:
                    try:
                        response = self._http.request(method, path, **kwargs)
                    except httpx.TransportError as exc:
                        raise transport_failure(self.base_url, exc, method, idempotent) from None
                    return checked(response)
        except Transient as exc:
            raise exc.error from None
        raise AssertionError("the retry policy neither returned nor raised")  # pragma: no cover

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        return response.json()

    # -- jobs ------------------------------------------------------------------------------------------------------
    def submit(self, spec: SpecLike, idempotency_key: str | None = None) -> Job:
        """Queue a job from a ``JobSpec``, a dict, or a YAML/JSON file (validated locally first)."""
        body = spec_payload(spec)
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        payload = self._json("POST", "/jobs", json=body, headers=headers)
        return Job.from_payload(payload)

    def get(self, job_id: str) -> Job:
        payload = self._json("GET", f"/jobs/{job_id}")
        return Job.from_payload(payload)

    def list(self, status: Any = None, *, limit: int | None = None, page_size: int = 200) -> builtins.list[Job]:
        """The caller's jobs, newest first (every page; ``limit`` caps the total)."""
        jobs: builtins.list[Job] = []
        params: dict[str, Any] = {"limit": page_size}
        statuses = self._statuses(status)
        if statuses:
            params["status"] = statuses
        while True:
            page = self._json("GET", "/jobs", params=params)
            jobs.extend(Job.from_payload(item) for item in page["items"])
            if not page.get("next_cursor") or (limit is not None and len(jobs) >= limit):
                return jobs[:limit] if limit is not None else jobs
            params["cursor"] = page["next_cursor"]

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (``Conflict`` once it finished)."""
        payload = self._json("POST", f"/jobs/{job_id}/cancel", idempotent=False)
        return Job.from_payload(payload)

    def results(self, job_id: str) -> Results:
        """The job's results (partial, ``complete=False``, until it finished)."""
        payload = self._json("GET", f"/jobs/{job_id}/results")
        return Results.from_payload(payload)

    def logs(self, job_id: str, tail: int = 200) -> str:
        response = self._request("GET", f"/jobs/{job_id}/logs", params={"tail": tail})
        return response.text

    def download_model(
        self,
        job_id: str,
        path: str | os.PathLike[str],
        *,
        trial_id: str | None = None,
        format: str = "checkpoint",  # noqa: A002 - the query name
    ) -> Path:
        """Save the job's model (best finished trial at its selected epoch, or ``trial_id``'s) to ``path``.

        ``format="checkpoint"``: a model file for ``lt_core.load_model``; ``"exported"``: a zip of a ``torch.export``
        program (``model.pt2``) and ``manifest.json``. ``Conflict`` while no trial has finished.
        """
        route = f"/jobs/{job_id}/model" if trial_id is None else f"/jobs/{job_id}/trials/{trial_id}/model"
        response = self._request("GET", route, params={"format": format})
        target = Path(path)
        target.write_bytes(response.content)
        return target

    def predict(
        self,
        job_id: str,
        rows: Any,
        *,
        trial_id: str | None = None,
        posthoc: str | float = "auto",
        top_k: int = 5,
    ) -> dict[str, Any]:
        """Top-k classes per row from the job's model on the service (rows: the input shape, flattened)."""
        import numpy as np

        body: dict[str, Any] = {"rows": np.asarray(rows, dtype=float).reshape(len(rows), -1).tolist(), "top_k": top_k}
        body["posthoc"] = posthoc
        if trial_id is not None:
            body["trial_id"] = trial_id
        return self._json("POST", f"/jobs/{job_id}/predict", json=body, idempotent=True)

    def delete(self, job_id: str) -> dict[str, Any]:
        """Delete a finished job with its checkpoints and rows (``Conflict`` while it is queued or running)."""
        return self._json("DELETE", f"/jobs/{job_id}", idempotent=False)

    def wait(self, job_id: str, timeout: float | None = None, on_progress: ProgressCallback | None = None) -> Job:
        """Wait until the job finished (following its events, else polling); return the final ``Job``.

        ``on_progress(job)`` is called with the job's state whenever something happened. Raises ``WaitTimeout``
        after ``timeout`` seconds (None: no deadline).
        """
        deadline = Deadline(timeout)
        job = self.get(job_id)
        report(on_progress, job)
        last_id: str | None = None
        use_sse = True
        while not job.done:
            remaining = deadline.remaining()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(f"job {job_id} is still {job.status} after {timeout:g} s", job)
            if use_sse:
                try:
                    with closing(self._events(job_id, last_id, remaining)) as events:
                        for event_id in events:
                            last_id = event_id or last_id
                            job = self.get(job_id)
                            report(on_progress, job)
                            if job.done or deadline.passed():
                                break
                except (httpx.TransportError, httpx.HTTPStatusError, ServiceUnavailable):
                    use_sse = False  # no stream (a proxy, an older service): poll
                job = self.get(job_id)
                continue
            sleep(deadline.pause(self.poll_interval))
            previous = job
            job = self.get(job_id)
            if job.progress != previous.progress or job.status != previous.status:
                report(on_progress, job)
        report(on_progress, job)
        return job

    def _events(self, job_id: str, last_id: str | None, remaining: float | None) -> Generator[str | None, None]:
        """The id of each of the job's events (httpx-sse); ends quietly when the stream goes quiet for too long."""
        headers = {"Last-Event-ID": last_id} if last_id else {}
        timeout = sse_timeout(self.timeout, remaining)
        route = f"/jobs/{job_id}/events"
        with connect_sse(self._http, "GET", route, headers=headers, timeout=timeout) as source:
            if source.response.status_code >= 400:
                source.response.read()
                check_stream(source.response)
            try:
                for event in source.iter_sse():
                    if event.data:  # the retry hint and heartbeats carry no data (browsers skip them too)
                        yield event.id or None
            except httpx.ReadTimeout:
                return  # a quiet stream: the caller re-checks the job and the deadline

    # -- catalogs and health ---------------------------------------------------------------------------------------
    def losses(self) -> builtins.list[dict[str, Any]]:
        return self._json("GET", "/losses")

    def datasets(self) -> builtins.list[dict[str, Any]]:
        return self._json("GET", "/datasets")

    def models(self) -> builtins.list[dict[str, Any]]:
        return self._json("GET", "/models")

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    def ready(self) -> dict[str, Any]:
        """``/readyz``'s body (``status`` is "ready" or "unready"); no retries on 503."""
        try:
            response = self._http.get("/readyz")
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from None
        if response.status_code in (200, 503):
            return response.json()
        raise error_from_response(response)
