"""Submitting jobs on your own data: every path (dataset folders and files, model weights) is confined to the data
root at submit, folders where a dataset takes one; the catalogs list the new datasets and models."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from conftest import Api, tiny_spec

from service.settings import Settings


def error(r: Any) -> dict[str, Any]:
    return r.json()["error"]


def details(r: Any) -> list[tuple[str, str]]:
    return [(d["loc"], d["type"]) for d in error(r)["details"]]


@pytest.fixture
def tree(settings: Settings, tmp_path_factory) -> Any:
    root = settings.data_root
    assert root is not None
    (root / "pets" / "train" / "cat").mkdir(parents=True)
    (root / "lists").mkdir()
    (root / "lists" / "train.txt").write_text("a.jpg 0\n")
    (root / "lists" / "test.txt").write_text("a.jpg 0\n")
    (root / "w.pth").write_bytes(b"x")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("a.jpg 0\n")
    (outside / "imgs").mkdir()
    os.symlink(outside / "secret.txt", root / "lists" / "escape.txt")
    os.symlink(outside / "imgs", root / "escape_dir")
    os.symlink(outside / "secret.txt", root / "escape.pth")
    return root


def file_list(**overrides: Any) -> dict[str, Any]:
    return {"name": "file_list", "root": "pets", "train": "lists/train.txt", "test": "lists/test.txt"} | overrides


def test_own_data_specs_are_accepted_with_paths_resolved_inside_the_root(api: Api, settings: Settings, tree) -> None:
    spec = tiny_spec(dataset=file_list(), model={"name": "resnet18", "weights_path": "w.pth"})
    job_id = api.submit(spec)
    r = api.client.get(f"/jobs/{job_id}")
    assert r.status_code == 200
    run_spec = json.loads(api.service.store.get_job(job_id).run_spec)
    assert run_spec["dataset"]["root"] == str((tree / "pets").resolve())
    assert run_spec["dataset"]["train"] == str((tree / "lists" / "train.txt").resolve())
    assert run_spec["model"]["weights_path"] == str((tree / "w.pth").resolve())
    folder = tiny_spec(dataset={"name": "image_folder", "root": "pets", "image_size": 32})
    assert api.client.post("/jobs", json=folder).status_code == 201


@pytest.mark.parametrize(
    "dataset, model, expected",
    [
        (file_list(train="lists/escape.txt"), None, ("dataset.train", "path_outside_root")),
        (file_list(root="escape_dir"), None, ("dataset.root", "path_outside_root")),
        (file_list(root="../"), None, ("dataset.root", "path_outside_root")),
        (file_list(root="lists/train.txt"), None, ("dataset.root", "path_not_directory")),
        (file_list(train="lists"), None, ("dataset.train", "path_not_file")),
        (file_list(class_names="lists/names.txt"), None, ("dataset.class_names", "path_missing")),
        ({"name": "image_folder", "root": "escape_dir"}, None, ("dataset.root", "path_outside_root")),
        ({"name": "tabular", "train": "/etc/passwd", "test": "w.pth"}, None, ("dataset.train", "path_outside_root")),
        (file_list(), {"name": "resnet50", "weights_path": "escape.pth"}, ("model.weights_path", "path_outside_root")),
        (file_list(), {"name": "resnet50", "weights_path": "pets"}, ("model.weights_path", "path_not_file")),
    ],
)
def test_paths_outside_the_root_or_of_the_wrong_kind_are_a_422_naming_the_field(
    api: Api, tree, dataset: dict, model: dict | None, expected: tuple[str, str]
) -> None:
    spec = tiny_spec(dataset=dataset, **({"model": model} if model else {}))
    r = api.client.post("/jobs", json=spec)
    assert r.status_code == 422, r.text
    assert expected in details(r)


def test_timm_without_timm_is_a_422_naming_the_extra(api: Api) -> None:
    pytest.importorskip("pydantic")
    import importlib.util

    if importlib.util.find_spec("timm") is not None:
        pytest.skip("timm is installed here")
    r = api.client.post("/jobs", json=tiny_spec(model={"name": "timm:resnet50"}))
    assert r.status_code == 422
    [detail] = error(r)["details"]
    assert detail["loc"] == "model.name" and "optional extra 'timm'" in detail["msg"]


def test_catalogs_list_the_new_datasets_and_models(api: Api) -> None:
    datasets = {d["name"]: d for d in api.client.get("/datasets").json()}
    assert {"image_folder", "file_list", "tabular"} <= set(datasets)
    assert datasets["file_list"]["path_kinds"] == {
        "root": "dir",
        "train": "file",
        "val": "file",
        "test": "file",
        "class_names": "file",
    }
    params = {p["name"]: p for p in datasets["image_folder"]["parameters"]}
    assert params["image_size"]["default"] == 224 and params["mean"]["default"] == [0.485, 0.456, 0.406]
    models = {m["name"]: m for m in api.client.get("/models").json()}
    assert {"resnet18", "resnet34", "resnet50", "resnext50_32x4d", "timm:<arch>"} <= set(models)
    assert models["timm:<arch>"]["extra"] == "timm"
    assert "weights_path" in {p["name"] for p in models["resnet50"]["parameters"]}
