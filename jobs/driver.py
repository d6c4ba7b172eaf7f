"""The Ray job driver of one service job: ``python -m jobs.driver --job-id ID --service-url URL --storage-path P``.

It runs ``jobs.run_job`` and delivers each event to the service (``POST /internal/jobs/{id}/events``, the per-job
secret from ``LONGTAIL_DRIVER_SECRET`` in a header). Each event gets a sequence number and is appended to a spool
file (``<storage_path>/<job_id>/events.jsonl``) before it is sent; a background thread sends the spool in order,
retrying with backoff, so a service that is down gets every event once it is back (the service ignores
duplicates). At the end the driver writes ``<storage_path>/<job_id>/result.json``, sends ``job_finished`` (or
``job_failed`` with the traceback's last lines) and flushes the spool until a deadline. The service can also
replay the spool and the result file itself after a restart.

The spec comes from ``--spec-file`` or, by default, the ``LONGTAIL_JOB_SPEC`` environment variable. The secret
comes from ``--secret-file`` (a 0600 file the service writes and removes once the job is final; the Ray job's
environment is public to whoever can reach Ray's Jobs API), or ``LONGTAIL_DRIVER_SECRET`` for a manual run.

A driver that finds a spool of an earlier driver of its job (the service dispatched the job again because its Ray
cluster lost it) resumes: ``run_job(resume=True)`` restores the Tune experiment from its checkpoints, with the
spooled events as what was reported already (none is sent twice).
"""

from __future__ import annotations

import argparse
import collections
import inspect
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import httpx

SECRET_ENV = "LONGTAIL_DRIVER_SECRET"
SPEC_ENV = "LONGTAIL_JOB_SPEC"
SECRET_HEADER = "X-Longtail-Driver-Secret"
BATCH = 200


def finite(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None (strict JSON has no NaN)."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class EventSender:
    """Spool-backed, ordered, at-least-once delivery of events to the service."""

    def __init__(
        self,
        job_id: str,
        service_url: str,
        secret: str,
        spool_dir: Path,
        *,
        client: httpx.Client | None = None,
        max_backoff_s: float = 10.0,
    ) -> None:
        self.url = f"{service_url.rstrip('/')}/internal/jobs/{job_id}/events"
        self.secret = secret
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.spool_path = spool_dir / "events.jsonl"
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._seq = 0
        if self.spool_path.exists():  # a restarted driver continues the numbering; the service has what it has
            text = self.spool_path.read_text()
            if text and not text.endswith("\n"):  # torn by a crash: new events start on a line of their own
                with self.spool_path.open("a") as f:
                    f.write("\n")
            for line in text.splitlines():
                try:
                    self._seq = max(self._seq, int(json.loads(line)["seq"]))
                except (ValueError, KeyError, TypeError):
                    continue
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._client = client or httpx.Client(timeout=httpx.Timeout(10.0, connect=3.0))
        self._max_backoff = max_backoff_s
        self.sent = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="event-sender", daemon=True)
        self._thread.start()

    def emit(self, event: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._seq += 1
            record = finite({**event, "seq": self._seq})
            record.setdefault("time", time.time())
            with self.spool_path.open("a") as f:
                f.write(json.dumps(record, default=str, allow_nan=False) + "\n")
            self._pending.append(record)
            self._idle.clear()
        self._wake.set()
        return record

    def _run(self) -> None:
        backoff = 0.25
        while not self._closed:
            with self._lock:
                batch = [self._pending[i] for i in range(min(BATCH, len(self._pending)))]
                if not batch:
                    self._idle.set()
            if not batch:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                response = self._client.post(self.url, json={"events": batch}, headers={SECRET_HEADER: self.secret})
                if response.status_code in (401, 403, 404, 422):
                    # Permanent: the service will never take these (a wrong secret, an unknown job). Keep them in
                    # the spool (the service can replay it) and stop trying.
                    print(
                        f"[driver] the service refused events ({response.status_code}): {response.text[:300]}",
                        flush=True,
                    )
                    with self._lock:
                        for _ in batch:
                            self._pending.popleft()
                    continue
                response.raise_for_status()
            except httpx.HTTPError as exc:
                self.failures += 1
                if self.failures == 1 or self.failures % 20 == 0:
                    print(f"[driver] cannot reach the service ({exc}); events stay in the spool", flush=True)
                self._wake.wait(backoff)
                self._wake.clear()
                backoff = min(backoff * 2, self._max_backoff)
                continue
            backoff = 0.25
            with self._lock:
                for _ in batch:
                    self._pending.popleft()
                self.sent += len(batch)

    def flush(self, deadline_s: float) -> bool:
        """Wait until every event was delivered or the deadline passed; True when all were delivered."""
        self._wake.set()
        return self._idle.wait(deadline_s)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)
        self._client.close()


def read_spool(path: Path) -> list[dict[str, Any]]:
    """The events an earlier driver of this job spooled (a torn last line is skipped); [] when there was none."""
    events = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and isinstance(event.get("seq"), int):
            events.append(event)
    return events


def _on_sigterm(signum: int, frame: Any) -> None:
    # Cancelled (the Jobs API's stop_job): leave now. Tune would otherwise go on scheduling trials until the
    # SIGKILL; exiting makes Ray reclaim this driver's actors and placement groups at once.
    print("[driver] stopped (SIGTERM): exiting", flush=True)
    os._exit(128 + signal.SIGTERM)


def _connect_ray() -> None:
    """Join the cluster (RAY_ADDRESS, set by the Jobs API) before run_job, then take over SIGTERM from Ray."""
    if not os.environ.get("RAY_ADDRESS"):
        return  # not under Ray Jobs (tests, a manual run): run_job connects as it sees fit
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=False, configure_logging=False)
    signal.signal(signal.SIGTERM, _on_sigterm)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.driver", description=__doc__.split("\n\n")[0])
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--spec-file", type=Path, help=f"the JobSpec JSON (default: ${SPEC_ENV})")
    parser.add_argument("--service-url", required=True)
    parser.add_argument("--storage-path", required=True)
    parser.add_argument("--flush-deadline-s", type=float, default=120.0)
    parser.add_argument("--secret-file", type=Path, help=f"the per-job secret (default: ${SECRET_ENV})")
    args = parser.parse_args(argv)

    # Tune saves its experiment state every few seconds (default: 10 s or more): a resumed run reruns less.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    secret = args.secret_file.read_text().strip() if args.secret_file else os.environ.get(SECRET_ENV, "")
    spec_text = args.spec_file.read_text() if args.spec_file else os.environ.get(SPEC_ENV)
    if not spec_text:
        print(f"[driver] no spec: pass --spec-file or set {SPEC_ENV}", file=sys.stderr)
        return 2
    job_dir = Path(args.storage_path) / args.job_id
    prior_events = read_spool(job_dir / "events.jsonl")
    sender = EventSender(args.job_id, args.service_url, secret, job_dir)
    code = 0
    try:
        _connect_ray()
        from jobs import run_job
        from jobs.model_out import experiment_name
        from jobs.spec import JobSpec

        spec = JobSpec.model_validate_json(spec_text)
        print(f"[driver] job {args.job_id}: {spec.trial_count()} trials of {spec.name!r}", flush=True)
        kwargs: dict[str, Any] = {}
        if "experiment_name" in inspect.signature(run_job).parameters:
            kwargs["experiment_name"] = experiment_name(args.job_id)  # one Tune experiment folder per service job
        if prior_events:
            print(f"[driver] resuming job {args.job_id} ({len(prior_events)} events reported before)", flush=True)
            kwargs.update(resume=True, prior_events=prior_events)
        result = run_job(spec, storage_path=str(Path(args.storage_path).absolute()), on_event=sender.emit, **kwargs)
        result = finite(result)
        from jobs.model_out import keep_checkpoints_setting, prune_checkpoints

        try:  # retention only: a failure here must not fail a finished job
            pruned = prune_checkpoints(args.storage_path, args.job_id, result, keep_checkpoints_setting())
            if pruned:
                print(f"[driver] removed {len(pruned)} checkpoints (LONGTAIL_KEEP_CHECKPOINTS)", flush=True)
        except Exception as exc:
            print(f"[driver] checkpoints not pruned: {type(exc).__name__}: {exc}", flush=True)
        _write_atomic(job_dir / "result.json", json.dumps(result, default=str, allow_nan=False))
        sender.emit({"type": "job_finished", "result": result})
        print(f"[driver] job {args.job_id} finished", flush=True)
    except Exception as exc:  # report any failure to the service, then exit non-zero
        tb = traceback.format_exc()
        print(tb, file=sys.stderr, flush=True)
        last = "\n".join(tb.strip().splitlines()[-15:])
        sender.emit({"type": "job_failed", "error": f"{type(exc).__name__}: {exc}\n{last}"})
        code = 1
    delivered = sender.flush(args.flush_deadline_s)
    if not delivered:
        print(f"[driver] {sender.pending()} events not delivered; they stay in {sender.spool_path}", flush=True)
    sender.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
