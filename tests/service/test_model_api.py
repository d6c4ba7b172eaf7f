"""The model out over the API: download (checkpoint, exported), predict, delete; real app, SQLite/PostgreSQL store.

A real trial (``jobs.train.run_trial``, plain PyTorch) trains the job's control on digits; its checkpoints are laid
out under the storage path as Tune lays them out, and its reports are sent as the driver sends them.
"""

from __future__ import annotations

import io
import json
import shutil

import pytest
import torch
from conftest import ALICE, BACKENDS, BOB, Api
from pg import db_url_for

from jobs.plan import plan_trials
from jobs.results import METRICS_JSON, ResultCollector
from jobs.spec import JobSpec
from jobs.train import TrialContext, run_trial, trial_data
from lt_core import load_model
from lt_core.inference import predict_logits
from lt_core.metrics import EvalAccumulator

DIGITS = {"name": "digits_lt", "imbalance_factor": 20, "seed": 0}
SPEC = {
    "name": "model-api",
    "dataset": DIGITS,
    "model": {"name": "mlp", "hidden_sizes": [32]},
    "losses": [{"name": "logit_adjusted"}],
    "train": {"epochs": 3, "batch_size": 64, "lr": 0.1},
    "scaling": {"cpus_per_worker": 0.99},
}


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    return db_url_for(request.param, request, tmp_path)


@pytest.fixture(scope="module")
def control_run(tmp_path_factory):
    """The control trial trained once: its reports and checkpoint folders (epoch -> folder)."""
    spec = JobSpec.model_validate(SPEC)
    trial = plan_trials(spec)[0]
    root = tmp_path_factory.mktemp("ckpts")
    reports, folders = [], {}

    def report(metrics, checkpoint_dir):
        full = json.loads(metrics[METRICS_JSON])
        reports.append(full)
        if checkpoint_dir:
            folders[full["epoch"]] = shutil.copytree(checkpoint_dir, root / f"checkpoint_{full['epoch']:06d}")

    run_trial(trial, DIGITS, TrialContext(report=report, checkpoint_metric=spec.selection_metric))
    return {"spec": spec, "trial": trial, "reports": reports, "folders": folders}


def _events(run, trial_id="t1"):
    trial = run["trial"]
    events = [
        {
            "type": "trial_started",
            "trial_id": trial_id,
            "branch": "control",
            "branch_index": -1,
            "is_control": True,
            "config": trial.config,
        }
    ]
    events += [{"type": "epoch", "trial_id": trial_id, "epoch": m["epoch"], "metrics": m} for m in run["reports"]]
    events.append({"type": "trial_finished", "trial_id": trial_id, "status": "succeeded", "error": None})
    return events


def _finished_job(api: Api, run, *, finish: bool, headers=None) -> str:
    job_id = api.start(SPEC, headers=headers)
    storage = api.service.settings.storage_path
    for epoch, folder in run["folders"].items():
        shutil.copytree(folder, storage / f"tune-{job_id}" / "trial_t1" / f"checkpoint_{epoch:06d}")
    (storage / job_id).mkdir(parents=True, exist_ok=True)
    (storage / job_id / "events.jsonl").write_text("{}\n")
    events = _events(run)
    if finish:
        collector = ResultCollector(run["spec"])
        for e in events:
            collector.apply(e)
        events.append({"type": "job_finished", "result": collector.result()})
    r = api.send(job_id, [{"seq": i + 1, **e} for i, e in enumerate(events)])
    assert r.status_code == 200, r.text
    return job_id


def test_download_reproduces_the_reported_balanced_accuracy(api: Api, control_run, tmp_path) -> None:
    job_id = _finished_job(api, control_run, finish=True)
    result = api.client.get(f"/jobs/{job_id}/results").json()
    trial = result["trials"][0]
    r = api.client.get(f"/jobs/{job_id}/model")
    assert r.status_code == 200, r.text
    assert r.headers["x-longtail-epoch"] == str(trial["selected"]["epoch"])
    (tmp_path / "m.pt").write_bytes(r.content)
    model, manifest = load_model(tmp_path / "m.pt")
    assert manifest["job_id"] == job_id and manifest["trial_id"] == "t1"
    assert manifest["posthoc"]["tau"] == trial["posthoc"]["tau"]
    data = trial_data(DIGITS, control_run["trial"].evaluation)
    x = torch.stack([data.test[i][0] for i in range(len(data.test))])
    for posthoc, reported in (
        ("none", trial["selected"]["test"]["balanced_accuracy"]),
        ("auto", trial["posthoc"]["test"]["balanced_accuracy"]),
    ):
        acc = EvalAccumulator(10)
        acc.update(predict_logits(model, manifest, x, posthoc=posthoc), data.test_targets)
        assert abs(acc.compute(manifest["class_counts"])["balanced_accuracy"] - reported) <= 1e-6, posthoc
    # the same trial by id, and the exported program with its manifest
    assert api.client.get(f"/jobs/{job_id}/trials/t1/model").content == r.content
    exported = api.client.get(f"/jobs/{job_id}/model", params={"format": "exported"})
    assert exported.status_code == 200 and exported.headers["content-type"] == "application/zip"
    import zipfile

    with zipfile.ZipFile(io.BytesIO(exported.content)) as z:
        assert set(z.namelist()) == {"model.pt2", "manifest.json"}
        (tmp_path / "m.pt2").write_bytes(z.read("model.pt2"))
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    assert torch.allclose(program(x[:9]), predict_logits(model, manifest, x[:9], posthoc="none"), atol=1e-5)
    bad = api.client.get(f"/jobs/{job_id}/model", params={"format": "onnx"})
    assert bad.status_code == 422
    assert api.client.get(f"/jobs/{job_id}/trials/nope/model").status_code == 404


def test_model_is_409_without_a_finished_trial(api: Api) -> None:
    job_id = api.start(SPEC)
    r = api.client.get(f"/jobs/{job_id}/model")
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_model"
    assert api.client.post(f"/jobs/{job_id}/predict", json={"rows": [[0.0] * 64]}).status_code == 409


def test_predict_answers_top_k_and_rejects_bad_shapes_and_big_batches(make_api, settings, control_run) -> None:
    api = make_api(settings.model_copy(update={"max_predict_rows": 4}))
    job_id = _finished_job(api, control_run, finish=False)  # a running job with a finished trial
    data = trial_data(DIGITS, control_run["trial"].evaluation)
    rows = [data.test[i][0].tolist() for i in range(3)]
    r = api.client.post(f"/jobs/{job_id}/predict", json={"rows": rows, "top_k": 3, "posthoc": "none"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["trial_id"] == "t1" and len(body["predictions"]) == 3
    top = body["predictions"][0]["top"]
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    assert top[0]["name"] == str(top[0]["index"])
    tau = api.client.post(f"/jobs/{job_id}/predict", json={"rows": rows, "posthoc": 2.0}).json()
    assert tau["posthoc"] == {"method": "logit_adjustment", "tau": 2.0}
    wrong = api.client.post(f"/jobs/{job_id}/predict", json={"rows": [[0.0] * 63]})
    assert wrong.status_code == 422 and "(N, 64)" in wrong.json()["error"]["message"]
    big = api.client.post(f"/jobs/{job_id}/predict", json={"rows": [[0.0] * 64] * 5})
    assert big.status_code == 413 and "limit of 4" in big.json()["error"]["message"]
    assert api.client.post(f"/jobs/{job_id}/predict", json={"rows": []}).status_code == 422
    assert api.client.post(f"/jobs/{job_id}/predict", json={"rows": [["x"]]}).status_code == 422


def test_other_owner_gets_404(make_api, auth_settings, control_run) -> None:
    api = make_api(auth_settings)
    alice, bob = {"Authorization": f"Bearer {ALICE}"}, {"Authorization": f"Bearer {BOB}"}
    job_id = _finished_job(api, control_run, finish=True, headers=alice)
    assert api.client.get(f"/jobs/{job_id}/model", headers=alice).status_code == 200
    for r in (
        api.client.get(f"/jobs/{job_id}/model", headers=bob),
        api.client.get(f"/jobs/{job_id}/trials/t1/model", headers=bob),
        api.client.post(f"/jobs/{job_id}/predict", json={"rows": [[0.0] * 64]}, headers=bob),
        api.client.delete(f"/jobs/{job_id}", headers=bob),
    ):
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert api.client.get(f"/jobs/{job_id}", headers=alice).status_code == 200  # bob's DELETE did nothing


def test_delete_removes_files_and_rows_and_is_409_while_running(api: Api, control_run) -> None:
    storage = api.service.settings.storage_path
    running = _finished_job(api, control_run, finish=False)
    r = api.client.delete(f"/jobs/{running}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "illegal_transition"
    assert (storage / f"tune-{running}").is_dir()
    job_id = _finished_job(api, control_run, finish=True)
    r = api.client.delete(f"/jobs/{job_id}")
    assert r.status_code == 200, r.text
    assert sorted(r.json()["removed"]) == sorted([job_id, f"tune-{job_id}"])
    assert not (storage / job_id).exists() and not (storage / f"tune-{job_id}").exists()
    assert api.client.get(f"/jobs/{job_id}").status_code == 404
    assert api.service.store.trial_rows(job_id) == [] and api.service.store.epoch_rows(job_id) == []
    assert api.service.store.events_after(job_id) == []
    assert api.client.delete(f"/jobs/{job_id}").status_code == 404
    assert (storage / f"tune-{running}").is_dir()  # the other job's files stay


def test_cli_predict_on_npz_and_csv_and_delete(control_run, tmp_path, capsys) -> None:
    import httpx
    import numpy as np

    from service.cli import main
    from tests.service.test_client import LiveServer, make_settings

    server = LiveServer(make_settings(tmp_path / "svc")).start()
    try:
        job_id = httpx.post(f"{server.url}/jobs", json=SPEC).json()["id"]
        storage = server.settings.storage_path
        for epoch, folder in control_run["folders"].items():
            shutil.copytree(folder, storage / f"tune-{job_id}" / "trial_t1" / f"checkpoint_{epoch:06d}")
        collector = ResultCollector(control_run["spec"])
        events = _events(control_run)
        for e in events:
            collector.apply(e)
        events.append({"type": "job_finished", "result": collector.result()})
        server.send(job_id, [{"seq": i + 1, **e} for i, e in enumerate(events)])
        data = trial_data(DIGITS, control_run["trial"].evaluation)
        x = np.stack([data.test[i][0].numpy() for i in range(6)])
        np.savez(tmp_path / "rows.npz", x=x)
        np.savetxt(tmp_path / "rows.csv", x, delimiter=",", header=",".join(f"f{i}" for i in range(64)), comments="")
        base = ["--url", server.url]
        assert main([*base, "predict", job_id, str(tmp_path / "rows.npz"), "--top-k", "2"]) == 0
        out, err = capsys.readouterr()
        lines = out.strip().splitlines()
        assert len(lines) == 6 and all(len(ln.split("\t")[1].split()) == 2 for ln in lines)
        assert f"job {job_id} trial t1" in err and "post-hoc:" in err
        # the printed top class is the local model's argmax with the chosen adjustment
        r = httpx.get(f"{server.url}/jobs/{job_id}/model")
        (tmp_path / "m.pt").write_bytes(r.content)
        model, manifest = load_model(tmp_path / "m.pt")
        top = predict_logits(model, manifest, x, posthoc="auto").argmax(1).tolist()
        assert [ln.split("\t")[1].split()[0].split(":")[0] for ln in lines] == [str(c) for c in top]
        assert main([*base, "predict", job_id, str(tmp_path / "rows.csv"), "--csv", "--posthoc", "none"]) == 0
        out, _ = capsys.readouterr()
        rows = out.strip().splitlines()
        assert rows[0] == "input,rank,class,probability" and len(rows) == 1 + 6 * 5
        raw = predict_logits(model, manifest, x, posthoc="none").argmax(1).tolist()
        assert [r.split(",")[2] for r in rows[1::5]] == [str(c) for c in raw]
        # a folder of images for a model that takes rows: one clear error line
        (tmp_path / "imgs").mkdir()
        (tmp_path / "imgs" / "a.png").write_bytes(b"not really")
        assert main([*base, "predict", job_id, str(tmp_path / "imgs")]) == 1
        err = capsys.readouterr().err
        assert "takes rows of shape [64]" in err and "Traceback" not in err
        assert main([*base, "delete", job_id]) == 0
        assert f"job {job_id} deleted" in capsys.readouterr().out
        assert not (storage / f"tune-{job_id}").exists()
    finally:
        server.stop()


def test_predict_reads_a_folder_of_images_as_the_manifest_says(tmp_path) -> None:
    from PIL import Image

    from lt_core.inference import load_images, predict, read_inputs
    from lt_core.models import create_model

    manifest = {
        "model": {"name": "mlp", "params": {"hidden_sizes": [8]}},
        "num_classes": 3,
        "class_names": ["a", "b", "c"],
        "class_counts": [50, 10, 2],
        "input": {
            "shape": [3, 4, 4],
            "preprocessing": {
                "kind": "image",
                "size": [4, 4],
                "channels": 3,
                "scale": 1 / 255,
                "mean": [0.5] * 3,
                "std": [0.25] * 3,
            },
        },
        "posthoc": {"method": "logit_adjustment", "tau": 1.0},
    }
    (tmp_path / "imgs").mkdir()
    for name, color in (("b.png", (255, 0, 0)), ("a.png", (0, 0, 255))):
        Image.new("RGB", (9, 7), color).save(tmp_path / "imgs" / name)
    names, paths = read_inputs(tmp_path / "imgs", manifest)
    assert names == ["a.png", "b.png"]
    x = load_images(paths, manifest)
    assert x.shape == (2, 3, 4, 4)
    assert torch.allclose(x[0, 2], torch.full((4, 4), (1 - 0.5) / 0.25)) and torch.allclose(
        x[0, 0], torch.full((4, 4), -2.0)
    )
    model = create_model("mlp", 3, (3, 4, 4), hidden_sizes=[8])
    probs = predict(model, manifest, paths)
    assert probs.shape == (2, 3) and torch.allclose(probs, predict(model, manifest, x))
    assert torch.allclose(probs, predict(model, manifest, x.reshape(2, -1)))  # flat rows of the same shape


def test_results_table_shows_the_control_with_posthoc_la(control_run) -> None:
    from service.cli import results_table
    from service.client import Results

    collector = ResultCollector(control_run["spec"])
    for e in _events(control_run):
        collector.apply(e)
    result = collector.result()
    ph = result["control_posthoc"]
    control = result["trials"][0]
    assert ph["tau"] == control["posthoc"]["la"]["tau"] and ph["n_seeds"] == 1
    la_test = control["posthoc"]["la"]["test"]["balanced_accuracy"]
    assert ph["test_mean"] == pytest.approx(la_test)
    assert ph["gain"] == pytest.approx(la_test - control["selected"]["test"]["balanced_accuracy"])
    results = Results.from_payload({"job_id": "job_x", "status": "succeeded", "complete": True, **result})
    rows = results.rows()
    assert [r["branch"] for r in rows[:2]] == ["control", "ce+posthoc-la"]
    assert rows[1]["balanced_accuracy"] == pytest.approx(la_test)
    table = results_table(results)
    line = next(ln for ln in table.splitlines() if ln.startswith("CE + post-hoc LA"))
    assert f"{100 * la_test:.1f}" in line and f"tau {ph['tau']}" in line


def _png(color) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (9, 7), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_predict_takes_base64_images_for_an_image_model(api: Api, control_run) -> None:
    import base64

    from lt_core.inference import MODEL_FORMAT, predict
    from lt_core.models import create_model

    job_id = api.start(SPEC)
    model = create_model("mlp", 3, (3, 4, 4), hidden_sizes=[8])
    pre = {"kind": "image", "size": [4, 4], "channels": 3, "scale": 1 / 255, "mean": [0.5] * 3, "std": [0.25] * 3}
    manifest = {
        "format": MODEL_FORMAT,
        "model": {"name": "mlp", "params": {"hidden_sizes": [8]}},
        "num_classes": 3,
        "class_names": ["cat", "dog", "eel"],
        "class_counts": [50, 10, 2],
        "input": {"shape": [3, 4, 4], "dtype": "float32", "preprocessing": pre},
        "epoch": 1,
        "posthoc": {"method": "logit_adjustment", "tau": 1.0},
    }
    folder = api.service.settings.storage_path / f"tune-{job_id}" / "trial_t1" / "checkpoint_000001"
    folder.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "epoch": 1, "extra": {"manifest": manifest}}, folder / "checkpoint.pt")
    metrics = {"epoch": 1, "balanced_accuracy": 0.5, "val_balanced_accuracy": 0.5}
    events = [
        {
            "type": "trial_started",
            "trial_id": "t1",
            "branch": "control",
            "branch_index": -1,
            "is_control": True,
            "config": {},
        },
        {"type": "epoch", "trial_id": "t1", "epoch": 1, "metrics": metrics},
        {"type": "trial_finished", "trial_id": "t1", "status": "succeeded", "error": None},
    ]
    assert api.send(job_id, [{"seq": i + 1, **e} for i, e in enumerate(events)]).status_code == 200
    pngs = [_png((255, 0, 0)), _png((0, 0, 255))]
    body = {"images": [base64.b64encode(p).decode() for p in pngs], "top_k": 3}
    r = api.client.post(f"/jobs/{job_id}/predict", json=body)
    assert r.status_code == 200, r.text
    expected = predict(model, manifest, pngs)
    for row, probs in zip(r.json()["predictions"], expected, strict=True):
        assert {t["name"]: t["probability"] for t in row["top"]} == pytest.approx(
            {name: float(p) for name, p in zip(manifest["class_names"], probs, strict=True)}, abs=1e-6
        )
    bad = api.client.post(f"/jobs/{job_id}/predict", json={"images": ["%%%"]})
    assert bad.status_code == 422 and "base64" in bad.json()["error"]["message"]
    junk = api.client.post(f"/jobs/{job_id}/predict", json={"images": [base64.b64encode(b"no image").decode()]})
    assert junk.status_code == 422 and "not a readable image" in junk.json()["error"]["message"]
    both = api.client.post(f"/jobs/{job_id}/predict", json={"images": body["images"], "rows": [[0.0] * 48]})
    assert both.status_code == 422
    assert api.client.post(f"/jobs/{job_id}/predict", json={}).status_code == 422


def test_images_for_a_rows_model_are_422(api: Api, control_run) -> None:
    import base64

    job_id = _finished_job(api, control_run, finish=True)
    r = api.client.post(f"/jobs/{job_id}/predict", json={"images": [base64.b64encode(_png((1, 2, 3))).decode()]})
    assert r.status_code == 422 and "takes rows of shape [64]" in r.json()["error"]["message"]
