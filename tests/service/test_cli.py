"""The ``longtail`` CLI through its entry point (``main([...])``, and the installed script once), against a real
uvicorn server with a FakeDispatcher."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from jobs.spec import JobSpec
from service.cli import DEMO_SPEC, format_config, main, quick_demo_spec
from tests.service.test_client import FIXTURE, TOKEN, LiveServer, free_port, make_settings, tiny_spec, wait_until

ROOT = Path(__file__).resolve().parents[2]
LOSS_ROWS = ("focal", "ldam-drw", "label_smoothing", "ib")  # the fixture's branches


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def make(**overrides: Any) -> LiveServer:
        started = LiveServer(make_settings(tmp_path / f"s{len(servers)}", **overrides)).start()
        servers.append(started)
        return started

    yield make
    for started in servers:
        started.stop()


@pytest.fixture
def server(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server()


def submit(server: LiveServer, **overrides: Any) -> str:
    r = httpx.post(f"{server.url}/jobs", json=tiny_spec(**overrides))
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture
def finished(server: LiveServer) -> str:
    job_id = submit(server)
    server.finish(job_id)
    return job_id


# -- reading ------------------------------------------------------------------------------------------------------
def test_results_json_is_the_rest_payload(server: LiveServer, finished: str, capsys) -> None:
    code, out, _ = run(capsys, "--url", server.url, "results", finished, "--json")
    assert code == 0
    assert json.loads(out) == httpx.get(f"{server.url}/jobs/{finished}/results").json()


def test_status_json_is_the_rest_payload(server: LiveServer, finished: str, capsys) -> None:
    code, out, _ = run(capsys, "--url", server.url, "status", finished, "--json")
    assert code == 0 and json.loads(out) == httpx.get(f"{server.url}/jobs/{finished}").json()


def test_results_table(server: LiveServer, finished: str, capsys) -> None:
    code, out, _ = run(capsys, "--url", server.url, "results", finished)
    assert code == 0
    lines = out.splitlines()
    header = lines[0]
    for column in ("loss", "balanced acc", "many", "medium", "few", "gain vs CE (pts)", "best config"):
        assert column in header
    control = next(line for line in lines if line.startswith("control (ce)"))
    assert "78.2" in control and "ref" in control  # the fixture's control: balanced accuracy 0.7823
    focal = next(line for line in lines if line.startswith("focal"))
    assert "82.4" in focal and "+4.2" in focal and "gamma=" in focal
    ldam = next(line for line in lines if line.startswith("ldam-drw"))
    assert ldam.startswith("ldam-drw *")  # the best trial of the job
    for branch in LOSS_ROWS:
        assert any(line.startswith(branch) for line in lines), branch
    # Columns line up: every row is as wide as its cells, separated by two spaces.
    assert lines[1].replace(" ", "").strip("-") == ""


def test_results_csv(server: LiveServer, finished: str, capsys) -> None:
    code, out, _ = run(capsys, "--url", server.url, "results", finished, "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["branch"] for r in rows] == ["control", "focal", "ldam-drw", "label_smoothing", "ib"]
    assert float(rows[1]["gain"]) == pytest.approx(0.0419)
    assert json.loads(rows[1]["config"])["loss.gamma"] == 2.0


def test_results_plots(server: LiveServer, finished: str, capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "--url", server.url, "results", finished, "--plots", str(tmp_path / "plots"))
    assert code == 0
    files = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert files == ["calibration.png", "curves.png", "per-class.png", "shots.png"]
    assert all((tmp_path / "plots" / f).stat().st_size > 5000 for f in files)
    assert "plots:" in out


def test_results_plots_before_any_epoch(server: LiveServer, capsys, tmp_path: Path) -> None:
    job_id = submit(server)
    code, _, err = run(capsys, "--url", server.url, "results", job_id, "--plots", str(tmp_path / "p"))
    assert_one_line_error(code, err, "no plots for job")


def test_status_lists_jobs(server: LiveServer, finished: str, capsys) -> None:
    other = submit(server, name="second")
    code, out, _ = run(capsys, "--url", server.url, "status")
    assert code == 0
    assert finished in out and other in out and "succeeded" in out
    code, out, _ = run(capsys, "--url", server.url, "status", "--status", "succeeded")
    assert finished in out and other not in out
    code, out, _ = run(capsys, "--url", server.url, "status", finished)
    assert code == 0 and "succeeded" in out and f"/jobs/{finished}/results" in out


def test_catalog_commands(server: LiveServer, capsys) -> None:
    code, out, _ = run(capsys, "--url", server.url, "losses")
    assert code == 0 and "focal" in out and "gamma=1.0~" in out
    code, out, _ = run(capsys, "--url", server.url, "losses", "--json")
    assert json.loads(out) == httpx.get(f"{server.url}/losses").json()
    code, out, _ = run(capsys, "--url", server.url, "datasets")
    assert code == 0 and "digits_lt" in out
    code, out, _ = run(capsys, "--url", server.url, "models")
    assert code == 0 and "resnet32" in out


# -- writing ------------------------------------------------------------------------------------------------------
def test_submit_and_cancel(server: LiveServer, capsys, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(name="cli")))
    code, out, _ = run(capsys, "--url", server.url, "submit", str(spec))
    assert code == 0 and out.startswith("submitted job job_")
    job_id = out.split()[2]
    code, out, _ = run(capsys, "--url", server.url, "cancel", job_id)
    assert code == 0 and out.strip() == f"job {job_id} cancelled"
    code, _, err = run(capsys, "--url", server.url, "cancel", job_id)
    assert_one_line_error(code, err, "already cancelled")


def test_submit_json_is_the_created_job(server: LiveServer, capsys, tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(tiny_spec()))
    code, out, _ = run(capsys, "--url", server.url, "submit", str(spec), "--json")
    job = json.loads(out)
    stored = httpx.get(f"{server.url}/jobs/{job['id']}").json()
    assert code == 0 and job.keys() == stored.keys() and job["status"] in ("queued", "running")
    moving = ("status", "started_at", "progress")  # the job may have been dispatched since
    assert {k: v for k, v in job.items() if k not in moving} == {k: v for k, v in stored.items() if k not in moving}


def test_submit_wait_shows_progress_then_the_table(server: LiveServer, capsys, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec()))

    def drive() -> None:
        jobs = wait_until(lambda: httpx.get(f"{server.url}/jobs").json()["items"], 10, "the submitted job")
        server.finish(jobs[0]["id"])

    driver = threading.Thread(target=drive)
    driver.start()
    code, out, err = run(capsys, "--url", server.url, "submit", str(spec), "--wait")
    driver.join()
    assert code == 0, err
    assert "trials" in err and "succeeded" in err  # the progress display (stderr)
    assert "control (ce)" in out and "gain vs CE" in out and "Full results:" in out and "/ui/#/jobs/" in out


def test_submit_wait_on_a_failed_job(server: LiveServer, capsys, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec()))

    def drive() -> None:
        jobs = wait_until(lambda: httpx.get(f"{server.url}/jobs").json()["items"], 10, "the submitted job")
        server.send(jobs[0]["id"], [{"seq": 1, "type": "job_failed", "error": "boom: out of memory"}])

    driver = threading.Thread(target=drive)
    driver.start()
    code, _, err = run(capsys, "--url", server.url, "submit", str(spec), "--wait")
    driver.join()
    assert code == 1 and "failed: boom: out of memory" in err and "Traceback" not in err


# -- errors -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("dataset: {name: digits_lt}\nlosses: [{name: focal, gamma: -1}]\n", "losses[0].gamma: must be >= 0"),
        ("dataset: {name: digits_lt}\nlosses: [{name: focal}]\ntrain: {epochs: 5, bogus: 1}\n", "train.bogus"),
        ("losses: [\n", "invalid YAML at line"),
    ],
)
def test_bad_spec_file_is_one_line(server: LiveServer, capsys, tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, _, err = run(capsys, "--url", server.url, "submit", str(path))
    assert_one_line_error(code, err, str(path), needle)
    assert httpx.get(f"{server.url}/jobs").json()["items"] == []


def test_missing_spec_file(server: LiveServer, capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "--url", server.url, "submit", str(tmp_path / "nope.yaml"))
    assert_one_line_error(code, err, "nope.yaml: no such file")


def test_unreachable_service(capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = run(capsys, "--url", url, "status")
    assert_one_line_error(code, err, f"cannot reach the longtail service at {url}", "connection refused")


def test_unknown_job(server: LiveServer, capsys) -> None:
    for command in ("status", "results", "cancel"):
        code, _, err = run(capsys, "--url", server.url, command, "job_0000000000000000")
        assert_one_line_error(code, err, "job_0000000000000000")


def test_unauthorized(make_server: Callable[..., LiveServer], capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_server(api_tokens={TOKEN: "alice"})
    monkeypatch.delenv("LONGTAIL_TOKEN", raising=False)
    code, _, err = run(capsys, "--url", server.url, "status")
    assert_one_line_error(code, err, "missing bearer token")
    code, _, err = run(capsys, "--url", server.url, "--token", "not-the-token", "losses")
    assert_one_line_error(code, err, "invalid bearer token")
    monkeypatch.setenv("LONGTAIL_TOKEN", TOKEN)
    monkeypatch.setenv("LONGTAIL_URL", server.url)
    code, out, _ = main(["status"]), *capsys.readouterr()
    assert code == 0 and out.strip() == "no jobs"


def test_usage_errors_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["results"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["results", "x", "--json", "--csv"])
    assert info.value.code == 2


def test_installed_console_script(server: LiveServer) -> None:
    script = shutil.which("longtail") or str(Path(sys.executable).parent / "longtail")
    if not Path(script).exists():
        pytest.skip("the longtail console script is not installed (pip install -e .)")
    ok = subprocess.run([script, "--url", server.url, "losses", "--json"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and {e["name"] for e in json.loads(ok.stdout)} >= {"focal", "ldam"}
    bad = subprocess.run(
        [script, "--url", server.url, "status", "job_0000000000000000"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1


# -- the demo's spec ----------------------------------------------------------------------------------------------
def test_demo_spec_is_the_example_file() -> None:
    example = yaml.safe_load((ROOT / "examples" / "digits-demo.yaml").read_text())
    assert JobSpec.model_validate(DEMO_SPEC) == JobSpec.model_validate(example)
    demo = JobSpec.model_validate(DEMO_SPEC)
    assert demo.trial_count() == 33 and demo.tune.repeats == 3  # 10 configs + the control, 3 seeds each
    assert demo.evaluation.selection == "val"


def test_quick_demo_spec_is_a_smaller_search() -> None:
    quick = JobSpec.model_validate(quick_demo_spec())
    full = JobSpec.model_validate(DEMO_SPEC)
    assert {b.key for b in quick.losses} < {b.key for b in full.losses} and len(quick.losses) == 4
    assert quick.trial_count() == 15 and quick.train.epochs < full.train.epochs  # 5 configs x 3 seeds


def test_format_config_shows_the_stored_keys_as_they_are() -> None:
    """One parameter-path scheme (``loss.``, ``branch.``, ``train.``, ``model.``): no key is renamed or stripped."""
    assert format_config({"loss.gamma": 2.0, "branch.reweighting": "inverse-drw"}) == (
        "loss.gamma=2 branch.reweighting=inverse-drw"
    )
    assert format_config({"loss.gamma": 2.0, "branch.reweighting": "none"}) == "loss.gamma=2"  # the default, as /ui
    assert format_config({"loss.alpha": 523.456789, "branch.start_epoch": 5, "config_id": "ib/0"}) == (
        "loss.alpha=523.5 branch.start_epoch=5"  # the identity key is not a parameter
    )
    assert format_config({"train.lr": 0.05, "model.hidden_sizes": [64, 32], "branch.drw": True}) == (
        "train.lr=0.05 model.hidden_sizes=[64, 32] branch.drw=true"
    )
    assert format_config({}) == "" and format_config(None) == ""


STORED_CONFIG = {
    "loss.gamma": 1.5,
    "branch.start_epoch": 3,
    "branch.reweighting": "effective_number",
    "train.lr": 0.05,
    "model.hidden_sizes": [64],
}


def test_results_show_a_trials_config_keys_as_stored(server: LiveServer, capsys) -> None:
    """A result written through the service (driver events, then the JobResult) keeps its trial's config keys, and
    ``results --json``, ``--csv`` and the table show exactly those keys."""
    result = json.loads(FIXTURE.read_text())
    focal = next(b for b in result["branches"] if b["branch"] == "focal")
    trial = next(t for t in result["trials"] if t["trial_id"] == focal["best_trial_id"])
    trial["config"] = {**STORED_CONFIG, "config_id": "focal/0", "train.seed": 0}
    focal["config"] = dict(STORED_CONFIG)
    job_id = submit(server)
    server.finish(job_id, result)

    code, out, _ = run(capsys, "--url", server.url, "results", job_id, "--json")
    assert code == 0
    payload = json.loads(out)
    stored = next(t for t in payload["trials"] if t["trial_id"] == trial["trial_id"])
    assert stored["config"] == trial["config"]
    assert next(b for b in payload["branches"] if b["branch"] == "focal")["config"] == STORED_CONFIG

    code, out, _ = run(capsys, "--url", server.url, "results", job_id, "--csv")
    rows = {r["branch"]: r for r in csv.DictReader(io.StringIO(out))}
    assert json.loads(rows["focal"]["config"]) == STORED_CONFIG

    code, out, _ = run(capsys, "--url", server.url, "results", job_id)
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("focal"))
    shown = (
        "loss.gamma=1.5 branch.start_epoch=3 branch.reweighting=effective_number train.lr=0.05 model.hidden_sizes=[64]"
    )
    assert row.rstrip().endswith(shown), row


def _job_state(status: str, done: int, total: int = 5) -> Any:
    from service.client import Job

    links = {k: f"/jobs/job_1/{k}" for k in ("self", "results", "events", "logs", "cancel")}
    progress = {"trials_total": total, "trials_done": done, "trials_running": 1 if done < total else 0}
    progress.update(epochs_reported=3 * done, metric="balanced_accuracy", mode="max", best=None)
    return Job.model_validate(
        {"id": "job_1", "name": "x", "status": status, "owner": "a", "created_at": 0.0, "started_at": None,
         "finished_at": None, "error": None, "links": links, "spec": {}, "progress": progress}
    )  # fmt: skip


def test_progress_display_is_a_rich_bar_on_a_terminal_and_lines_elsewhere() -> None:
    from service.cli.formatting import ProgressDisplay

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    display = ProgressDisplay(screen)
    display(_job_state("running", 2))
    display(_job_state("succeeded", 5))
    display.finish()
    shown = screen.getvalue()
    assert "━" in shown and "5/5" in shown and "succeeded" in shown and "15 epochs" in shown  # Rich's bar
    log = io.StringIO()
    display = ProgressDisplay(log)
    for state in (_job_state("running", 2), _job_state("running", 2), _job_state("succeeded", 5)):
        display(state)
    display.finish()
    lines = log.getvalue().splitlines()  # one line per change, no control characters
    assert len(lines) == 2 and lines[1].startswith("succeeded | trials 5/5 done") and "\x1b" not in log.getvalue()


def test_ray_head_record_and_stop_without_a_head(tmp_path) -> None:
    """No record: nothing to stop. A record of a dead head (another boot) is not alive, and stopping it is safe."""
    import json

    from service.ray_head import RECORD, HeadRecord, read_record, stop_head

    assert read_record(tmp_path) is None and stop_head(tmp_path) is False
    dead = HeadRecord(
        pid=1, address="127.0.0.1:1", dashboard_url="http://127.0.0.1:1", temp_dir=str(tmp_path / "no-such-ray"),
        boot_id="another-boot", started_at=0.0, log="",
    )  # fmt: skip
    (tmp_path / RECORD).write_text(json.dumps(dead.__dict__))
    assert read_record(tmp_path) == dead and not dead.alive(timeout=0.5)
    assert stop_head(tmp_path) is True and read_record(tmp_path) is None


@pytest.mark.parametrize("entry", [["-m", "service.cli", "serve"], ["-m", "service"]])
def test_unreachable_database_at_start_is_one_clear_error(tmp_path, entry) -> None:
    """A PostgreSQL URL where nothing listens: exit 1 with the (password-free) URL and the reason, no traceback."""
    import os

    from support import free_port

    url = f"postgresql+psycopg://svc:s3cret@127.0.0.1:{free_port()}/longtail"
    env = {**os.environ, "LONGTAIL_STORE_URL": url, "LONGTAIL_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, *entry, "--port", str(free_port())], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert "cannot open the job store at postgresql+psycopg://svc:***@127.0.0.1" in done.stderr
    assert "s3cret" not in done.stderr and "Traceback" not in done.stderr


def _finish_with_repeats(server: LiveServer, **evaluation: Any) -> tuple[str, dict[str, Any]]:
    from jobs.results import ResultCollector
    from tests.service.test_client import _repeats_events

    overrides: dict[str, Any] = {"tune": {"repeats": 2}, "train": {"epochs": 3}}
    if evaluation:
        overrides["evaluation"] = evaluation
    job_id = submit(server, **overrides)
    spec = JobSpec.model_validate(tiny_spec(**overrides))
    collector = ResultCollector(spec, {"name": "digits_lt"})
    for e in _repeats_events():
        collector.apply(e)
    result = collector.result()
    server.finish(job_id, result)
    return job_id, result


def test_results_table_shows_the_gain_with_its_spread_ci_seeds_and_significance(server: LiveServer, capsys) -> None:
    job_id, result = _finish_with_repeats(server)
    code, out, _ = run(capsys, "--url", server.url, "results", job_id)
    assert code == 0
    lines = out.splitlines()
    for column in ("gain vs CE (pts)", "95% CI", "seeds", "best config"):
        assert column in lines[0]
    focal = next(b for b in result["branches"] if b["branch"] == "focal")
    lo, hi = focal["gain_ci95"]
    row = next(line for line in lines if line.startswith("focal"))
    assert f"+{100 * focal['gain']:.1f} ± {100 * focal['gain_std']:.1f}" in row  # "+9.5 ± 2.1"
    assert f"[{100 * lo:+.1f}, {100 * hi:+.1f}]" in row and " 2 " in row
    assert row.startswith("focal !") is focal["significant"]  # significant rows are marked
    ldam = next(b for b in result["branches"] if b["branch"] == "ldam")
    assert next(line for line in lines if line.startswith("ldam")).startswith("ldam !") is ldam["significant"]
    control = next(line for line in lines if line.startswith("control (ce)"))
    assert "ref" in control and " 2 " in control
    assert any(line.startswith("Selected on validation") for line in lines)
    assert "seed" not in next(line for line in lines if line.startswith("focal")).split("  ")[-1]  # config only
    code, out, _ = run(capsys, "--url", server.url, "results", job_id, "--csv")
    rows = {r["branch"]: r for r in csv.DictReader(io.StringIO(out))}
    assert float(rows["focal"]["gain_ci95_lo"]) == pytest.approx(lo) and rows["focal"]["n_seeds"] == "2"


def test_results_show_the_servers_control_figures(server: LiveServer, capsys) -> None:
    """The control row is the result's control_summary and the post-hoc row its significant, as the server sent them,
    not a mean or a rule the CLI applies to the trials (both would give other figures here)."""
    from jobs.results import ResultCollector
    from tests.service.test_client import _repeats_events

    job_id = submit(server, tune={"repeats": 2}, train={"epochs": 3})
    spec = JobSpec.model_validate(tiny_spec(tune={"repeats": 2}, train={"epochs": 3}))
    collector = ResultCollector(spec, {"name": "digits_lt"})
    for e in _repeats_events():
        collector.apply(e)
    result = collector.result()
    assert result["control_summary"]["n_seeds"] == 2
    result["control_summary"]["n_seeds"] = 5
    result["control_summary"]["best_metrics"] |= {"balanced_accuracy": 0.4321, "few_shot_accuracy": 0.1234}
    result["control_posthoc"] = {"method": "logit_adjustment", "tau": 1.5, "test_mean": 0.7, "gain": 0.02}
    result["control_posthoc"] |= {"gain_ci95": [-0.01, 0.05], "significant": True, "n_seeds": 2, "n_pairs": 2}
    server.finish(job_id, result)
    code, out, _ = run(capsys, "--url", server.url, "results", job_id)
    assert code == 0
    control = next(line for line in out.splitlines() if line.startswith("control (ce)"))
    assert " 43.2 " in control and " 12.3 " in control and " 5 " in control, control
    assert any(line.startswith("CE + post-hoc LA (tau 1.5) !") for line in out.splitlines()), out
    code, out, _ = run(capsys, "--url", server.url, "results", job_id, "--csv")
    rows = {r["branch"]: r for r in csv.DictReader(io.StringIO(out))}
    assert float(rows["control"]["balanced_accuracy"]) == 0.4321 and rows["control"]["n_seeds"] == "5"
    assert rows["ce+posthoc-la"]["significant"] == "True"


def test_results_selected_on_test_are_labelled(server: LiveServer, capsys) -> None:
    job_id, result = _finish_with_repeats(server, selection="test")
    assert result["selected_on"] == "test"
    code, out, _ = run(capsys, "--url", server.url, "results", job_id)
    assert code == 0
    assert "[sel. on test]" in out.splitlines()[0] and "(selected on test)" in out
    assert any(line.startswith("Selected on test") for line in out.splitlines())
