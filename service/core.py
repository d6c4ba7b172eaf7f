"""The job service's logic between the routers, the store and the dispatcher.

``JobService`` accepts jobs (validation, data root, cluster feasibility, quota, idempotency), runs the dispatch
queue (at most ``max_running_jobs`` on Ray, oldest first), ingests driver events, cancels, and reconciles the store
with what the cluster says (a background task, also run once at start-up):

- a running job the cluster no longer knows (the Ray head died: a crash, a reboot) -> dispatched again, and its
  driver resumes the Tune experiment from its checkpoints (``jobs.driver``); the job records how many times and why.
  It fails only when it cannot resume: its storage is gone, or it resumed ``max_resumes`` times;
- a driver that failed -> failed with its last log lines; one that finished but whose events were lost -> its
  spool file / ``result.json`` under the storage path are replayed (events are idempotent).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sys
import threading
from pathlib import Path
from typing import Any

from cachetools import LRUCache
from pydantic import TypeAdapter, ValidationError

from service.dispatcher import PROJECT_ROOT, Dispatcher, DriverState, Submission
from service.errors import (
    Forbidden,
    IdempotencyConflict,
    IllegalTransition,
    NoModel,
    NotFound,
    SpecRejected,
    Unauthorized,
    Unavailable,
)
from service.schemas import DriverEvent
from service.settings import Settings
from service.store import JobRecord, JobStatus, JobStore
from service.validation import feasibility_details, parse_spec, resolve_dataset_paths, val_split_details

logger = logging.getLogger("service.core")

_EVENT: TypeAdapter[Any] = TypeAdapter(DriverEvent)
MAX_SUBMIT_ATTEMPTS = 20
_RAY_SESSION = re.compile(r"/[\w./-]*?/ray/session_[\w.-]+")
LOST_REASON = "the Ray cluster no longer knows this job"
LOST_BY_CLUSTER = f"{LOST_REASON} (it was restarted?)"


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def body_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def submission_id_for(job_id: str) -> str:
    return f"longtail-{job_id}"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (0600, in a 0700 folder), never through a symlink."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_or_create_key(path: Path) -> bytes:
    """A random 32-byte key kept in a private file (created on first use), e.g. to sign list cursors."""
    try:
        key = bytes.fromhex(path.read_text().strip())
        if len(key) >= 32:
            return key
    except (OSError, ValueError):
        pass
    key = secrets.token_bytes(32)
    write_private(path, key.hex())
    return key


def relative_paths(value: Any, roots: list[tuple[str, str]]) -> Any:
    """A copy of an event with every absolute path under one of ``roots`` (prefix, label) made relative to it.

    Owners see ``checkpoint_path`` as ``tune-job_x/trial/checkpoint_000003``, never the server's directories.
    """
    if isinstance(value, str):
        for prefix, label in roots:
            if value == prefix:
                return label or "."
            if value.startswith(prefix + "/"):
                rest = value[len(prefix) + 1 :]
                return f"{label}/{rest}" if label else rest
        return value
    if isinstance(value, dict):
        return {k: relative_paths(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [relative_paths(v, roots) for v in value]
    return value


class Notifier:
    """Wakes SSE streams when something was stored; callable from any thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: set[asyncio.Event] = set()
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def waiter(self) -> asyncio.Event:
        event = asyncio.Event()
        with self._lock:
            self._waiters.add(event)
        return event

    def discard(self, event: asyncio.Event) -> None:
        with self._lock:
            self._waiters.discard(event)

    def notify(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._lock:
            waiters = list(self._waiters)
        for event in waiters:
            loop.call_soon_threadsafe(event.set)


MODEL_CACHE_SIZE = 4  # models kept in memory for /model and /predict


class ResultsCache:
    """The response bodies of finished jobs' results (immutable once stored), the most recently used kept."""

    def __init__(self, max_entries: int = 32) -> None:
        self._entries: LRUCache[str, tuple[str, bytes]] = LRUCache(maxsize=max_entries)  # job id -> (owner, body)
        self._lock = threading.Lock()

    def get(self, job_id: str, owner: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(job_id)
        return entry[1] if entry is not None and entry[0] == owner else None

    def put(self, job_id: str, owner: str, body: bytes) -> None:
        with self._lock:
            self._entries[job_id] = (owner, body)

    def discard(self, job_id: str) -> None:
        with self._lock:
            self._entries.pop(job_id, None)


class JobService:
    def __init__(self, settings: Settings, store: JobStore, dispatcher: Dispatcher) -> None:
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher
        self.notifier = Notifier()
        self.results_cache = ResultsCache()
        # (job id, trial id, epoch) -> (weights, manifest) of the models served last: a checkpoint is read once
        self._models: LRUCache[tuple[str, str, int], tuple[dict[str, Any], dict[str, Any]]] = LRUCache(
            maxsize=MODEL_CACHE_SIZE
        )
        self._models_lock = threading.Lock()
        self._kick: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._submitting: set[str] = set()
        self._submit_attempts: dict[str, int] = {}
        self._resume_retry: dict[str, str] = {}  # job id -> its resume submission that Ray did not take yet
        self._tick_lock: asyncio.Lock | None = None
        assert settings.secrets_dir is not None and settings.storage_path is not None and settings.data_root is not None
        self.secrets_dir = Path(settings.secrets_dir)
        self.cursor_key = load_or_create_key(self.secrets_dir / "cursor.key")
        # Longest first: a storage path inside the data root (or the other way round) keeps its own label.
        roots = [(str(settings.storage_path), ""), (str(settings.data_root), "data")]
        roots.append((str(settings.state_dir), "state"))
        self.path_roots = sorted(roots, key=lambda r: -len(r[0]))

    # -- lifecycle -------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.notifier.bind(asyncio.get_running_loop())
        self._kick = asyncio.Event()
        self._tick_lock = asyncio.Lock()
        await self.dispatcher.start()
        self._task = asyncio.create_task(self._loop(), name="longtail-reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.dispatcher.stop()

    def kick(self) -> None:
        """Run the dispatch/reconcile loop now (thread-safe)."""
        loop, kick = self.notifier._loop, self._kick
        if loop is not None and kick is not None and not loop.is_closed():
            loop.call_soon_threadsafe(kick.set)

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reconciler tick failed")
            assert self._kick is not None
            try:
                await asyncio.wait_for(self._kick.wait(), timeout=self.settings.reconcile_interval_s)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()

    async def tick(self) -> None:
        """One pass: refresh the cluster view, reconcile running jobs, start queued ones."""
        assert self._tick_lock is not None
        async with self._tick_lock:
            try:
                await self.dispatcher.refresh()
            except Unavailable as exc:
                logger.warning("%s", exc.message)
                return
            await self.reconcile()
            await self.dispatch()
            self.sweep_secrets()

    # -- accepting jobs --------------------------------------------------------------------------------------------
    def create(self, owner: str, body: Any, idempotency_key: str | None) -> tuple[JobRecord, bool]:
        digest = body_hash(body) if idempotency_key is not None else None
        if idempotency_key is not None:
            # A retry returns the stored job even if the cluster changed since: check before validating.
            existing = self._by_idempotency_key(owner, idempotency_key, digest)
            if existing is not None:
                return existing, False
        spec = parse_spec(body, self.settings)
        assert self.settings.data_root is not None
        run_spec = resolve_dataset_paths(spec, self.settings.data_root)
        split = val_split_details(run_spec)
        if split:
            raise SpecRejected("the validation split cannot be made", split)
        infeasible = feasibility_details(spec, self.dispatcher.node_resources())
        if infeasible:
            raise SpecRejected("the job cannot run on this Ray cluster", infeasible)
        job, created = self.store.create_job(
            owner=owner,
            spec=spec.model_dump(mode="json"),
            run_spec=run_spec.model_dump_json(),
            name=spec.name,
            metric=spec.selection_metric,  # what the progress's best so far is chosen on
            mode=spec.tune.resolved_mode,
            trial_total=spec.trial_count(),
            idempotency_key=idempotency_key,
            body_hash=digest,
            max_active=self.settings.max_jobs_per_owner,
        )
        if created:
            self.kick()
            self.notifier.notify()
        return job, created

    def _by_idempotency_key(self, owner: str, key: str, digest: str | None) -> JobRecord | None:
        # create_job checks it again inside its transaction (two concurrent first requests).
        found = self.store.find_idempotent(owner, key)
        if found is None:
            return None
        job, stored_digest = found
        if stored_digest != digest:
            raise IdempotencyConflict("this Idempotency-Key was used with a different body", {"job_id": job.id})
        return job

    # -- dispatch --------------------------------------------------------------------------------------------------
    async def dispatch(self) -> None:
        running = len(self.store.jobs_with_status(JobStatus.RUNNING))
        free = self.settings.max_running_jobs - running
        if free <= 0:
            return
        for job in self.store.jobs_with_status(JobStatus.QUEUED, limit=free):
            await self._start_job(job)

    async def _start_job(self, job: JobRecord) -> None:
        """Submit a queued job; it becomes running once Ray accepted it.

        A transient refusal (the cluster is unreachable, its job agent not up yet) leaves the job queued for the
        next pass, up to ``MAX_SUBMIT_ATTEMPTS``; any other error fails the job with the reason.
        """
        problem = self._storage_problem(job.id)
        if problem is not None:
            self._fail(job.id, problem)
            return
        secret = secrets.token_urlsafe(32)
        sub_id = submission_id_for(job.id)
        if not self.store.prepare_dispatch(job.id, sub_id, secret_hash(secret)):
            return  # cancelled meanwhile
        submission = self._submission(job, sub_id, secret)
        self._submitting.add(job.id)
        try:
            await self.dispatcher.submit(submission)
        except Unavailable as exc:
            attempts = self._submit_attempts.get(job.id, 0) + 1
            self._submit_attempts[job.id] = attempts
            logger.warning("submitting %s failed (attempt %d): %s", job.id, attempts, exc.message)
            if attempts >= MAX_SUBMIT_ATTEMPTS:
                self._fail(job.id, f"could not submit the job to Ray after {attempts} attempts: {exc.message}")
            return
        except Exception as exc:  # any other failure to submit fails the job with the reason, never the loop
            logger.warning("submitting %s failed: %s", job.id, exc)
            self._fail(job.id, f"could not submit the job to Ray: {exc}")
            return
        finally:
            self._submitting.discard(job.id)
        self._submit_attempts.pop(job.id, None)
        try:
            self.store.transition(job.id, JobStatus.RUNNING)
        except IllegalTransition:  # cancelled while submitting
            await self.dispatcher.cancel(sub_id)
            return
        logger.info("job %s submitted to Ray as %s", job.id, sub_id)
        self.notifier.notify()

    def _storage_problem(self, job_id: str) -> str | None:
        """Why the job's folder under the storage path cannot be written (read-only, full, not a folder), or None.

        Checked before the job goes to Ray: the driver keeps its spool and Tune its checkpoints there.
        """
        job_dir = self.job_dir(job_id)
        probe = job_dir / ".write-test"
        try:
            job_dir.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            return f"the storage path {self.settings.storage_path} cannot be written ({type(exc).__name__}: {exc})"
        return None

    def _fail(self, job_id: str, error: str) -> None:
        try:
            self.store.transition(job_id, JobStatus.FAILED, error=error)
        except IllegalTransition:
            pass
        self.expire_secret(job_id)
        self.notifier.notify()

    # -- driver secrets --------------------------------------------------------------------------------------------
    def secret_file(self, job_id: str) -> Path:
        return self.secrets_dir / f"{job_id}.secret"

    def expire_secret(self, job_id: str) -> None:
        """Remove a job's secret file (its hash no longer opens /internal either: the job is final)."""
        self.secret_file(job_id).unlink(missing_ok=True)

    def sweep_secrets(self) -> None:
        """Remove the secret files of jobs that are final or unknown (missed by a crash between the two writes)."""
        for path in self.secrets_dir.glob("*.secret"):
            job_id = path.name[: -len(".secret")]
            try:
                final = self.store.get_job(job_id).status.terminal
            except NotFound:
                final = True
            if final:
                path.unlink(missing_ok=True)

    # -- reconciling -----------------------------------------------------------------------------------------------
    async def reconcile(self) -> None:
        for job in self.store.jobs_with_status(JobStatus.RUNNING):
            if job.id in self._submitting or job.submission_id is None:
                continue
            try:
                await self._reconcile_job(job)
            except Unavailable:
                raise
            except Exception:
                logger.exception("reconciling %s failed", job.id)

    async def _reconcile_job(self, job: JobRecord) -> None:
        assert job.submission_id is not None
        info = await self.dispatcher.get_driver(job.submission_id)
        if info.state in (DriverState.PENDING, DriverState.RUNNING):
            self._resume_retry.pop(job.id, None)  # a resubmission that timed out got through after all
            return
        # The driver is gone: first take whatever it left on disk (events it could not deliver, its result).
        if self.replay_spool(job.id) and self.store.get_job(job.id).status.terminal:
            return
        if info.state is DriverState.UNKNOWN:
            await self._resume(job)
        elif info.state is DriverState.STOPPED:
            self._fail(job.id, "the Ray job was stopped outside the service")
        elif info.state is DriverState.FAILED:
            tail = await self._log_tail(job.submission_id)
            reason = f"the driver failed: {info.message}".strip()
            self._fail(job.id, reason + (f"\n--- last log lines ---\n{tail}" if tail else ""))
        elif info.state is DriverState.SUCCEEDED:
            self._fail(job.id, "the driver exited but its final result never reached the service")

    async def _resume(self, job: JobRecord) -> None:
        """Dispatch a running job the cluster lost again; its driver resumes from the experiment's checkpoints."""
        job_dir = self.job_dir(job.id)
        if not job_dir.is_dir():
            self._fail(job.id, f"{LOST_BY_CLUSTER}; it cannot resume: its storage {job_dir} is gone")
            return
        retry = self._resume_retry.get(job.id)
        if retry is not None and retry == job.submission_id:
            submission_id = job.submission_id  # the last resume never reached Ray: submit it again, uncounted
        else:
            if job.resumes >= self.settings.max_resumes:
                self._fail(
                    job.id,
                    f"{LOST_BY_CLUSTER}; it cannot resume: it resumed {job.resumes} times already "
                    f"(LONGTAIL_MAX_RESUMES={self.settings.max_resumes})",
                )
                return
            submission_id = f"{submission_id_for(job.id)}-r{job.resumes + 1}"
        secret = secrets.token_urlsafe(32)
        reason = f"{LOST_REASON} (its Ray head died or was restarted)"
        if retry is not None and retry == job.submission_id:
            updated = self.store.set_driver_secret(job.id, secret_hash(secret))
        else:
            updated = self.store.record_resume(
                job.id,
                submission_id=submission_id,
                secret_hash=secret_hash(secret),
                reason=reason,
                max_resumes=self.settings.max_resumes,
            )
        if updated is None:
            return  # cancelled or finished meanwhile
        submission = self._submission(job, submission_id, secret)
        self._submitting.add(job.id)
        try:
            await self.dispatcher.submit(submission)
        except Unavailable as exc:
            self._resume_retry[job.id] = submission_id
            logger.warning("resubmitting %s failed (will retry): %s", job.id, exc.message)
            return
        except Exception as exc:
            self._fail(job.id, f"{LOST_BY_CLUSTER}; resubmitting it to resume failed: {exc}")
            return
        finally:
            self._submitting.discard(job.id)
        self._resume_retry.pop(job.id, None)
        logger.info("job %s resumes as %s (resume %d)", job.id, submission_id, updated.resumes)
        self.notifier.notify()

    def _submission(self, job: JobRecord, submission_id: str, secret: str) -> Submission:
        """What the dispatcher sends to Ray for ``job``; writes the driver's secret file first.

        The driver reads its secret from a 0600 file: the Ray job's env vars and entrypoint are public to anyone
        who can reach Ray's Jobs API or read its logs.
        """
        assert self.settings.storage_path is not None
        secret_file = self.secret_file(job.id)
        write_private(secret_file, secret)
        return Submission(
            job_id=job.id,
            submission_id=submission_id,
            spec_json=job.run_spec,
            secret=secret,
            secret_file=str(secret_file),
            service_url=str(self.settings.public_url),
            storage_path=str(self.settings.storage_path),
        )

    async def _log_tail(self, submission_id: str) -> str:
        try:
            text = await self.dispatcher.logs(submission_id)
        except Unavailable:
            return ""
        return "\n".join(text.splitlines()[-self.settings.log_tail_lines :])

    def job_dir(self, job_id: str) -> Path:
        assert self.settings.storage_path is not None
        return Path(self.settings.storage_path) / job_id

    def replay_spool(self, job_id: str) -> bool:
        """Ingest the driver's spool (``events.jsonl``) and ``result.json`` if present; True if anything was read."""
        found = False
        spool = self.job_dir(job_id) / "events.jsonl"
        if spool.is_file():
            events = []
            for line in spool.read_text().splitlines():
                try:  # the same typed check as over HTTP; a torn last line or a malformed event is skipped
                    events.append(_EVENT.validate_json(line).model_dump(exclude_unset=True))
                except ValidationError:
                    continue
            if events:
                found = True
                self.ingest(job_id, events)
        result_file = self.job_dir(job_id) / "result.json"
        if result_file.is_file() and not self.store.get_job(job_id).status.terminal:
            try:
                result = json.loads(result_file.read_text())
            except json.JSONDecodeError:
                result = None
            if isinstance(result, dict):
                seq = (self.store.max_seq(job_id) or 0) + 1_000_000
                try:
                    event = _EVENT.validate_python({"seq": seq, "type": "job_finished", "result": result})
                except ValidationError:
                    logger.warning("job %s: %s does not hold a valid JobResult", job_id, result_file)
                else:
                    found = True
                    self.ingest(job_id, [event.model_dump(exclude_unset=True)])
        if found:
            self.notifier.notify()
        return found

    # -- cancel, events, logs --------------------------------------------------------------------------------------
    # -- models and deletion ---------------------------------------------------------------------------------------
    def job_result(self, job: JobRecord) -> dict[str, Any]:
        """The stored JobResult of a finished job, else the partial one built from the store."""
        from service.results import partial_result

        stored = self.store.result_json(job.id) if job.status.terminal else None
        return json.loads(stored) if stored else partial_result(self.store, job)

    def model_checkpoint(self, job: JobRecord, trial_id: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(checkpoint state, manifest) of a trial's selected epoch: ``trial_id``'s, or the best finished trial's.

        Raises:
            NotFound: an unknown trial of this job.
            NoModel: no finished trial (or this one has not finished), or its selected epoch's checkpoint is gone.
        """
        from jobs.model_out import checkpoint_at_epoch, model_manifest
        from jobs.results import is_better

        result = self.job_result(job)
        trials = result.get("trials") or []
        finished = [t for t in trials if t.get("status") in ("succeeded", "stopped") and t.get("selected")]
        if trial_id is not None:
            if not any(t["trial_id"] == trial_id for t in trials):
                raise NotFound(f"trial {trial_id!r} not found in job {job.id}")
            chosen = next((t for t in finished if t["trial_id"] == trial_id), None)
            if chosen is None:
                raise NoModel(f"trial {trial_id} has not finished with a selected epoch yet")
        else:
            chosen = None
            for t in finished:
                if chosen is None or is_better(t.get("selection_value"), chosen.get("selection_value"), job.mode):
                    chosen = t
            if chosen is None:
                raise NoModel(f"job {job.id} has no finished trial yet", {"status": str(job.status)})
        epoch = int(chosen["selected"]["epoch"])
        key = (job.id, str(chosen["trial_id"]), epoch)
        with self._models_lock:
            cached = self._models.get(key)
        if cached is not None:
            return cached
        assert self.settings.storage_path is not None
        state = checkpoint_at_epoch(self.settings.storage_path, job.id, chosen["trial_id"], epoch)
        if state is None:
            raise NoModel(f"the checkpoint of trial {chosen['trial_id']} at its selected epoch {epoch} is not kept")
        manifest = model_manifest(
            state, job_id=job.id, trial_id=chosen["trial_id"], branch=chosen.get("branch"), job_name=job.name
        )
        entry = ({"model": state["model"]}, manifest)  # the weights only: no optimizer state, no history
        with self._models_lock:
            self._models[key] = entry
        return entry

    def delete_job(self, job: JobRecord) -> list[str]:
        """Delete a finished job's rows and its files under the storage path; returns the removed folders (relative).

        Raises:
            IllegalTransition: the job is queued or running (409: cancel it first).
        """
        from jobs.model_out import remove_job_artifacts

        self.store.delete_job(job.id, job.owner)
        self.results_cache.discard(job.id)
        with self._models_lock:
            for key in [k for k in self._models if k[0] == job.id]:
                del self._models[key]
        self.expire_secret(job.id)
        assert self.settings.storage_path is not None
        removed = remove_job_artifacts(self.settings.storage_path, job.id)
        self.notifier.notify()
        return [p.name for p in removed]

    async def cancel(self, job: JobRecord) -> JobRecord:
        if job.status.terminal:
            raise IllegalTransition(f"job {job.id} is already {job.status}", {"status": str(job.status)})
        if job.submission_id:  # running, or queued with a submission that may have reached Ray
            await self.dispatcher.cancel(job.submission_id)
        updated = self.store.transition(job.id, JobStatus.CANCELLED, error="cancelled by the user")
        self.expire_secret(job.id)
        self.notifier.notify()
        self.kick()
        return updated

    def check_driver_secret(self, job_id: str, secret: str | None) -> JobRecord:
        """The job whose driver holds ``secret``: 401 without one, 403 for a wrong one and once the job is final."""
        if not secret:
            raise Unauthorized("missing driver secret")
        try:
            job = self.store.get_job(job_id)
        except NotFound:
            raise Forbidden("invalid driver secret") from None
        expected = job.secret_hash or ""
        if not hmac.compare_digest(secret_hash(secret), expected):
            raise Forbidden("invalid driver secret")
        if job.status.terminal:
            raise Forbidden(f"job {job.id} is {job.status}: its driver secret has expired", {"status": str(job.status)})
        return job

    def ingest(self, job_id: str, events: list[dict[str, Any]]) -> tuple[int, int]:
        events = [relative_paths(e, self.path_roots) for e in events]
        accepted, duplicates = self.store.ingest(job_id, events)
        if accepted:
            self.notifier.notify()
            if any(e.get("type") in ("job_finished", "job_failed") for e in events):
                if self.store.get_job(job_id).status.terminal:
                    self.expire_secret(job_id)
                self.kick()  # a slot is free: start the next queued job
        return accepted, duplicates

    def relative_text(self, text: str) -> str:
        """``text`` (a log) with the server's absolute directories replaced by relative names."""
        for prefix, label in self.path_roots:
            text = text.replace(prefix + "/", f"{label}/" if label else "").replace(prefix, label or ".")
        text = _RAY_SESSION.sub("<ray-session>", text)
        for prefix, label in ((sys.prefix, "<python>"), (str(PROJECT_ROOT), "<service>")):
            text = text.replace(prefix, label)
        return text

    async def logs(self, job: JobRecord, tail: int) -> str:
        if job.submission_id is None:
            return ""
        try:
            text = await self.dispatcher.logs(job.submission_id)
        except Unavailable:
            text = ""
        if not text and job.error and "--- last log lines ---" in job.error:
            text = job.error.split("--- last log lines ---\n", 1)[1]
        lines = self.relative_text(text).splitlines()
        return "\n".join(lines[-tail:]) + ("\n" if lines else "")
