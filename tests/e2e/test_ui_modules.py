"""The web UI's ES modules in a real headless Chromium: parameter paths shown as-is, and the page's own logic.

1. A running job whose trials and epochs are written through the store (as its driver would report them), with
   trial configs in the one parameter-path scheme (``loss.<param>``, ``branch.<param>``, ``train.<param>``,
   ``config_id``): the job page shows ``loss.gamma`` and ``branch.start_epoch`` as they are.
2. The modules the page loads, imported in the page with ``import()`` and called through ``page.evaluate``: the
   fallback gain follows the job's mode, the mode is read from ``spec.tune.mode``, the poll's change key is one
   JSON document, and a gain the result carries is shown as sent.

Skipped only where Playwright or Chromium is missing (see ``test_browser.py``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import serve_in_thread
from test_browser import CHROMIUM_ARGS, OWNER, TOKEN, VIEWPORT, chromium_path, ui_settings

from service.app import create_app
from service.dispatcher import DriverState
from service.settings import Settings
from service.store import JobStatus, JobStore
from service.testing import FakeDispatcher
from service.validation import parse_spec

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SUBMISSION = "fake-submission"

SPEC: dict[str, Any] = {
    "name": "lt-param-paths",
    "dataset": {"name": "digits_lt", "imbalance_factor": 13},
    "model": {"name": "mlp", "hidden_sizes": [32]},
    "losses": [{"name": "focal", "gamma": 2.0}, {"name": "ib", "alpha": 1000.0, "start_epoch": 3}],
    "train": {"epochs": 4, "batch_size": 64, "lr": 0.05},
    "tune": {"metric": "balanced_accuracy"},
}
# Trial configs as the planner writes them: one parameter-path scheme, plus the identity key config_id.
TRIALS: list[dict[str, Any]] = [
    {
        "trial_id": "t_control",
        "branch": "control",
        "branch_index": -1,
        "is_control": True,
        "config": {"config_id": "control/0", "train.seed": 0},
        "value": 0.70,
    },
    {
        "trial_id": "t_focal",
        "branch": "focal",
        "branch_index": 0,
        "config": {"config_id": "focal/0", "loss.gamma": 2.0, "branch.reweighting": "none", "train.seed": 0},
        "value": 0.74,
    },
    {
        "trial_id": "t_ib",
        "branch": "ib",
        "branch_index": 1,
        "config": {
            "config_id": "ib/0",
            "loss.alpha": 1000.0,
            "branch.start_epoch": 3,
            "branch.reweighting": "none",
            "train.seed": 0,
        },
        "value": 0.78,
    },
]


def metrics(value: float) -> dict[str, float]:
    """An epoch's test metrics and the same on validation (``val_``, which selects the epoch and the config)."""
    test = {
        "accuracy": value,
        "balanced_accuracy": value,
        "many_shot_accuracy": min(1.0, value + 0.1),
        "medium_shot_accuracy": value,
        "few_shot_accuracy": value - 0.1,
        "nll": 1.0 - value,
        "ece": 0.05,
    }
    return test | {f"val_{k}": v for k, v in test.items()}


def running_job(store: JobStore, settings: Settings) -> str:
    """A running job with three finished trials of one epoch each, written through the store's API."""
    spec = parse_spec(SPEC, settings)
    job, _ = store.create_job(
        owner=OWNER,
        spec=spec.model_dump(mode="json"),
        run_spec=spec.model_dump_json(),
        name=spec.name,
        metric=spec.tune.metric,
        mode=spec.tune.resolved_mode,
        trial_total=spec.trial_count(),
    )
    store.prepare_dispatch(job.id, SUBMISSION, "not-a-real-secret-hash")
    store.transition(job.id, JobStatus.RUNNING)
    events: list[dict[str, Any]] = []
    for t in TRIALS:
        started = {k: t[k] for k in ("trial_id", "branch", "branch_index", "config")}
        started |= {"is_control": t.get("is_control", False), "config_id": t["config"]["config_id"], "seed": 0}
        events.append({"type": "trial_started", **started})
        events.append({"type": "epoch", "trial_id": t["trial_id"], "epoch": 1, "metrics": metrics(t["value"])})
        events.append({"type": "trial_finished", "trial_id": t["trial_id"], "status": "succeeded"})
    store.ingest(job.id, [{"seq": i, "time": time.time(), **e} for i, e in enumerate(events, start=1)])
    assert store.get_job(job.id).status is JobStatus.RUNNING
    return job.id


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(base URL, job id) of a uvicorn server in a thread over a store holding ``running_job``."""
    settings = ui_settings(tmp_path)
    store = JobStore(f"sqlite:///{tmp_path / 'longtail.db'}")
    job_id = running_job(store, settings)
    dispatcher = FakeDispatcher()
    dispatcher.set_state(SUBMISSION, DriverState.RUNNING)  # the job's driver runs: the reconciler leaves it be
    app = create_app(settings, dispatcher=dispatcher, store=store)
    try:
        with serve_in_thread(app) as url:
            yield url, job_id
    finally:
        store.close()


@pytest.fixture
def browser_page(server: tuple[str, str]) -> Iterator[tuple[Any, list[str]]]:
    """A Chromium page signed in (the token in sessionStorage before any script runs) and the errors it logs."""
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(10_000)
            page.add_init_script(f"sessionStorage.setItem('longtail.apiToken', {TOKEN!r});")
            page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
            yield page, problems
        finally:
            browser.close()


def test_job_page_shows_parameter_paths_as_is(server: tuple[str, str], browser_page: tuple[Any, list[str]]) -> None:
    base, job_id = server
    page, problems = browser_page
    page.goto(f"{base}/ui/#/jobs/{job_id}")
    page.wait_for_selector('#results-table tr.branch-row[data-branch="ib"]')

    configs = {
        row.get_attribute("data-branch"): row.locator("td.config").inner_text()
        for row in page.locator("#results-table tr.branch-row").all()
    }
    assert set(configs) >= {"focal", "ib"}, configs
    assert "loss.gamma=2" in configs["focal"], configs
    assert "loss.alpha=1000" in configs["ib"] and "branch.start_epoch=3" in configs["ib"], configs
    # No path is shortened: every key=value pair starts with its section; seeds and config_id are left out.
    pairs = [p for text in configs.values() for p in text.split(", ") if "=" in p]
    assert pairs and all(re.match(r"(loss|branch|train|model)\.\w+=", p) for p in pairs), pairs
    assert not any("seed" in p or "config_id" in p for p in pairs), pairs
    # The trials written through the store are the trials table's rows.
    trial_ids = page.locator("#trials-table tr.trial-row").evaluate_all("rows => rows.map(r => r.dataset.trialId)")
    assert sorted(trial_ids) == sorted(t["trial_id"] for t in TRIALS)
    # The job runs: the page follows its event stream, which replays the stored events into the event log.
    page.wait_for_function("() => document.getElementById('live-state').textContent === 'live'")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#event-log li')]"
        ".some(li => li.textContent.endsWith('trial t_ib started (ib)'))"
    )
    assert not problems, problems  # no console error, no uncaught exception


def evaluate_module(page: Any, base: str, body: str) -> Any:
    """Run `body` (an async function body with the page's modules bound to m, api and results) in the page."""
    page.goto(f"{base}/ui/")
    page.wait_for_selector("#main")
    script = (
        "async () => { const m = await import('/ui/js/job/model.js');"
        " const api = await import('/ui/js/api.js');"
        " const results = await import('/ui/js/job/results.js');"
        f" {body} }}"
    )
    return page.evaluate(script)


# A result as an older service sends it while the job runs: no `branches`, so the page ranks the trials itself.
NLL_RESULT = {
    "metric": "nll",
    "control_trial_id": "c",
    "trials": [
        {"trial_id": "c", "branch": "control", "is_control": True, "best": {"value": 0.5, "metrics": {}}},
        {"trial_id": "f", "branch": "focal", "branch_index": 0, "best": {"value": 0.4, "metrics": {}}},
        {"trial_id": "l", "branch": "ldam", "branch_index": 1, "best": {"value": 0.6, "metrics": {}}},
    ],
}


def render_gains(page: Any, base: str, result: dict[str, Any], job: dict[str, Any]) -> dict[str, list[str]]:
    """{branch: [gain text, gain cell class]} of the results table the page renders for `result` and `job`."""
    body = (
        "const section = document.createElement('section');"
        f" const ctx = {{ sections: {{ results: section }}, state: {{ job: {json.dumps(job)} }} }};"
        f" results.renderResults(ctx, {json.dumps(result)}, '');"
        " return Object.fromEntries([...section.querySelectorAll('tr.branch-row')].map(r => {"
        "   const cell = r.querySelectorAll('td')[6];"
        "   return [r.dataset.branch, [cell.textContent, cell.className]]; }));"
    )
    return evaluate_module(page, base, body)


def test_fallback_gain_follows_the_mode_of_the_job(
    server: tuple[str, str], browser_page: tuple[Any, list[str]]
) -> None:
    base, _ = server
    page, _ = browser_page
    # nll: lower is better. Focal's 0.4 beats the control's 0.5 (+0.1), ldam's 0.6 loses to it (-0.1).
    got = evaluate_module(
        page,
        base,
        f"const rows = m.branchRows({json.dumps(NLL_RESULT)}, 'min');"
        " return [m.fallbackGain(0.4, 0.5, 'min'), m.fallbackGain(0.6, 0.5, 'max'),"
        " Object.fromEntries(rows.filter(r => !r.isControl).map(r => [r.branch, r.gain]))];",
    )
    assert got[0] == pytest.approx(0.1) and got[1] == pytest.approx(0.1), got
    assert got[2] == {"focal": pytest.approx(0.1), "ldam": pytest.approx(-0.1)}, got
    # Rendered for a job minimising nll (its mode from the job: the result does not say): focal is the better one.
    gains = render_gains(page, base, NLL_RESULT, {"progress": {"mode": "min", "metric": "nll"}, "spec": {}})
    assert gains["focal"][0] == "+0.1000" and "gain-pos" in gains["focal"][1], gains
    assert gains["ldam"][0] == "-0.1000" and "gain-neg" in gains["ldam"][1], gains


def test_mode_is_read_from_spec_tune_mode(server: tuple[str, str], browser_page: tuple[Any, list[str]]) -> None:
    base, _ = server
    page, _ = browser_page
    got = evaluate_module(
        page,
        base,
        "return ["
        " m.resolveMode(null, { progress: {}, spec: { tune: { mode: 'min' } } }),"
        " m.resolveMode(null, { progress: {}, spec: { mode: 'min', tune: { mode: 'max' } } }),"
        " m.resolveMode(null, { progress: { mode: 'min' }, spec: { tune: { mode: null } } }),"
        " m.resolveMode({ mode: 'max' }, { progress: { mode: 'min' } }),"
        " m.resolveMode(null, null)];",
    )
    assert got == ["min", "max", "min", "max", "max"]
    # Rendered: a result and a JobRead that do not say, a spec whose tune.mode is min: the sign follows it.
    gains = render_gains(page, base, NLL_RESULT, {"progress": {}, "spec": {"tune": {"mode": "min", "metric": "nll"}}})
    assert gains["focal"][0] == "+0.1000" and "gain-pos" in gains["focal"][1], gains


def test_poll_key_is_one_json_document(server: tuple[str, str], browser_page: tuple[Any, list[str]]) -> None:
    base, _ = server
    page, _ = browser_page
    got = evaluate_module(
        page,
        base,
        "const job = { status: 'running', progress: { trials_done: 1, best: { value: 0.5 } } };"
        " const later = { status: 'running', progress: { trials_done: 2, best: { value: 0.5 } } };"
        " return [JSON.parse(m.progressKey(job)), m.progressKey(job) === m.progressKey(later), m.progressKey(null)];",
    )
    assert got[0] == {"status": "running", "progress": {"trials_done": 1, "best": {"value": 0.5}}}
    assert got[1] is False and got[2] == ""


def test_gain_sent_by_the_service_is_shown_as_sent(
    server: tuple[str, str], browser_page: tuple[Any, list[str]]
) -> None:
    base, _ = server
    page, _ = browser_page
    # The service's gain is the mean of paired differences by seed: 0.07, not best_value - control_value (0.1).
    result = {
        "metric": "nll",
        "mode": "min",
        "control_trial_id": "c",
        "trials": NLL_RESULT["trials"],
        "branches": [
            {"branch": "focal", "best_trial_id": "f", "best_value": 0.4, "control_value": 0.5, "gain": 0.07},
            {"branch": "ldam", "best_trial_id": "l", "best_value": 0.6, "control_value": 0.5, "gain": None},
        ],
    }
    gains = render_gains(page, base, result, {"progress": {"mode": "max"}, "spec": {"tune": {"mode": "max"}}})
    assert gains["focal"][0] == "+0.0700" and "gain-pos" in gains["focal"][1], gains
    # No gain sent (no paired seed): none invented, but the row is still marked worse in the result's mode.
    assert gains["ldam"][0] == "–" and "gain-neg" in gains["ldam"][1], gains


def _control_seed(trial_id: str, value: float) -> dict[str, Any]:
    return {
        "trial_id": trial_id,
        "branch": "control",
        "is_control": True,
        "best": {"value": value, "metrics": metrics(value)},
    }


def render_rows(page: Any, base: str, result: dict[str, Any]) -> dict[str, list[str]]:
    """{branch: the cells' texts} of the results table the page renders for `result`."""
    body = (
        "const section = document.createElement('section');"
        " const ctx = { sections: { results: section }, state: { job: { progress: {}, spec: {} } } };"
        f" results.renderResults(ctx, {json.dumps(result)}, '');"
        " return Object.fromEntries([...section.querySelectorAll('tr.branch-row')].map(r =>"
        "   [r.dataset.branch, [...r.querySelectorAll('td')].map(td => td.textContent)]));"
    )
    return evaluate_module(page, base, body)


def test_the_control_row_shows_the_services_mean_over_seeds(
    server: tuple[str, str], browser_page: tuple[Any, list[str]]
) -> None:
    base, _ = server
    page, _ = browser_page
    # Two control seeds (0.70, 0.60: a mean of 65.0% the page could compute) and the service's summary, which says
    # otherwise (43.2% over 5 seeds): the page shows the service's figures.
    result: dict[str, Any] = {
        "metric": "balanced_accuracy",
        "mode": "max",
        "control_trial_id": "c0",
        "trials": [_control_seed("c0", 0.70), _control_seed("c1", 0.60)],
        "branches": [],
        "control_summary": {
            "n_seeds": 5,
            "test_mean": 0.4321,
            "best_metrics": {"balanced_accuracy": 0.4321, "few_shot_accuracy": 0.1234},
        },
        "control_posthoc": {"method": "logit_adjustment", "tau": 1.0, "test_mean": 0.7, "gain": 0.02, "n_seeds": 5},
    }
    # significant as the service says, although the interval sent includes 0
    result["control_posthoc"] |= {"gain_ci95": [-0.01, 0.05], "significant": True, "metrics": {}}
    rows = render_rows(page, base, result)
    control = rows["control (ce)"]
    assert control[1] == "43.2%" and control[4] == "12.3%" and control[6] == "5", control
    posthoc = next(cells for branch, cells in rows.items() if branch.startswith("CE + post-hoc LA"))
    assert posthoc[0].startswith("CE + post-hoc LA") and "✓" in posthoc[5], posthoc
    # A result stored by an older driver (no control_summary, no significant): the page's own mean and rule.
    del result["control_summary"], result["control_posthoc"]["significant"]
    rows = render_rows(page, base, result)
    control = rows["control (ce)"]
    assert control[1] == "65.0%" and control[6] == "2", control
    posthoc = next(cells for branch, cells in rows.items() if branch.startswith("CE + post-hoc LA"))
    assert "✓" not in posthoc[5], posthoc


def test_parameter_paths_and_events_in_the_modules(
    server: tuple[str, str], browser_page: tuple[Any, list[str]]
) -> None:
    base, _ = server
    page, _ = browser_page
    trials = [{"trial_id": t["trial_id"], "config": t["config"]} for t in TRIALS]
    sse = json.dumps('event: epoch\ndata: {"trial_id": "a",\ndata: "epoch": 2}')
    got = evaluate_module(
        page,
        base,
        f"const result = {{ trials: {json.dumps(trials)} }};"
        " const shown = m.configKeysToShow(result);"
        " return [[...shown].sort(), m.configText(result.trials[2].config, shown),"
        f" api.parseEvent({sse}), api.parseEvent(': ping')];",
    )
    assert got[0] == ["branch.reweighting", "branch.start_epoch", "loss.alpha", "loss.gamma"], got
    assert got[1] == "loss.alpha=1000, branch.start_epoch=3", got
    assert got[2] == {"type": "epoch", "data": {"trial_id": "a", "epoch": 2}} and got[3] is None, got


def test_sign_out_and_a_rejected_token_show_the_token_form(
    server: tuple[str, str], browser_page: tuple[Any, list[str]]
) -> None:
    """The chrome module's token form, reached through the api module's 401 handler and the sign-out button."""
    base, job_id = server
    page, _ = browser_page
    page.goto(f"{base}/ui/#/jobs/{job_id}")
    page.wait_for_selector("#job-page")
    page.click("#sign-out")
    page.wait_for_selector("#token-form", state="visible")  # the service says it wants a token: the form again
    assert page.evaluate("() => sessionStorage.getItem('longtail.apiToken')") is None
    assert page.locator("#job-page").count() == 0

    # A token the API rejects (a 401 on the job's request): the form says so, and nothing keeps polling.
    page.fill("#token-input", "not-the-right-token-0123")
    page.press("#token-input", "Enter")
    page.wait_for_function("() => document.getElementById('token-reason').textContent.includes('rejected')")
    assert page.locator("#token-panel").is_visible() and page.locator("#main").inner_text() == ""

    # The right one: the job page again.
    page.fill("#token-input", TOKEN)
    page.press("#token-input", "Enter")
    page.wait_for_selector("#token-panel", state="hidden")
    page.wait_for_selector('#results-table tr.branch-row[data-branch="ib"]')
