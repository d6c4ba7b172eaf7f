"""Tests for lt_core.datasets: long-tail recipe, shipped loaders, CIFAR pickles (incl. hostile ones), npz errors."""

from __future__ import annotations

import os
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import lt_core.datasets as ds
from lt_core.datasets import DATASETS, DatasetError, LTData, load_dataset, long_tailed_counts, register_dataset
from lt_core.datasets.cifar import CIFAR_MEAN, CIFAR_STD, safe_unpickle

# ---------------------------------------------------------------------------------------------------------------
# long_tailed_counts


@pytest.mark.parametrize(
    ("n_max", "num_classes", "imbalance_factor", "total"),
    [
        (5000, 10, 100, 12406),
        (5000, 10, 50, 13996),
        (5000, 10, 10, 20431),
        (500, 100, 100, 10847),
        (500, 100, 50, 12608),
        (500, 100, 10, 19573),
    ],
)
def test_long_tailed_counts_cifar_lt_totals(n_max, num_classes, imbalance_factor, total):
    counts = long_tailed_counts(n_max, num_classes, imbalance_factor)
    assert sum(counts) == total
    assert counts[0] == n_max
    assert counts[-1] == int(n_max / imbalance_factor)
    assert counts == sorted(counts, reverse=True)


def test_long_tailed_counts_matches_ldam_formula():
    img_max, cls_num, imb_factor = 5000, 10, 0.01  # the LDAM code's spelling
    expected = [int(img_max * (imb_factor ** (cls_idx / (cls_num - 1.0)))) for cls_idx in range(cls_num)]
    assert long_tailed_counts(5000, 10, 100, "exp") == expected


def test_long_tailed_counts_step_and_balanced():
    assert long_tailed_counts(500, 10, 10, "step") == [500] * 5 + [50] * 5
    assert long_tailed_counts(500, 5, 10, "step") == [500] * 3 + [50] * 2
    assert long_tailed_counts(300, 7, 1) == [300] * 7
    assert long_tailed_counts(300, 7, 1, "step") == [300] * 7
    assert long_tailed_counts(42, 1, 100) == [42]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 10, 10), "n_max"),
        ((10, 0, 10), "num_classes"),
        ((10, 10, 0.5), "imbalance_factor"),
        ((10, 10, float("nan")), "imbalance_factor"),
        ((10.5, 10, 10), "n_max"),
        ((10, 10, 10, "linear"), "profile"),
    ],
)
def test_long_tailed_counts_validates(args, match):
    with pytest.raises(DatasetError, match=match):
        long_tailed_counts(*args)


# ---------------------------------------------------------------------------------------------------------------
# registry and load_dataset


def test_registry_contents():
    assert set(DATASETS) == {
        "digits_lt",
        "synthetic_lt",
        "cifar10_lt",
        "cifar100_lt",
        "npz",
        "image_folder",
        "file_list",
        "tabular",
    }
    assert DATASETS["image_folder"].path_params == ("root",)
    assert DATASETS["file_list"].path_params == ("root", "train", "val", "test", "class_names")
    assert DATASETS["tabular"].path_params == ("train", "val", "test")
    assert DATASETS["cifar10_lt"].path_params == ("path",)
    assert DATASETS["npz"].path_params == ("path",)
    assert DATASETS["digits_lt"].path_params == ()
    assert DATASETS["digits_lt"].defaults == {
        "imbalance_factor": 50.0,
        "profile": "exp",
        "test_per_class": 50,
        "seed": 0,
    }
    for name, info in DATASETS.items():
        assert info.name == name and info.description


def test_all_exports():
    assert sorted(ds.__all__) == sorted(
        [
            "DATASETS",
            "ArrayDataset",
            "DatasetError",
            "DatasetInfo",
            "LTData",
            "load_dataset",
            "long_tailed_counts",
            "register_dataset",
            "with_validation",
        ]
    )
    assert issubclass(DatasetError, ValueError)


def test_register_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):

        @register_dataset("digits_lt")
        def _again(*, seed: int = 0) -> LTData:  # pragma: no cover
            raise AssertionError


def test_unknown_dataset_lists_known():
    with pytest.raises(KeyError, match="digits_lt"):
        load_dataset("imagenet_lt")


def test_unknown_param_names_it_and_the_allowed_ones():
    with pytest.raises(DatasetError, match=r"unknown parameter\(s\) \['flatten'\].*allowed.*imbalance_factor"):
        load_dataset("digits_lt", flatten=True)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"seed": "0"}, "'seed'"),
        ({"seed": -1}, "'seed'"),
        ({"imbalance_factor": 0.5}, "'imbalance_factor'"),
        ({"imbalance_factor": True}, "'imbalance_factor'"),
        ({"profile": "linear"}, "'profile'"),
        ({"test_per_class": 0}, "'test_per_class'"),
        ({"test_per_class": 500}, "'test_per_class'"),
        ({"test_per_class": 2.0}, "'test_per_class'"),
    ],
)
def test_digits_bad_params(params, match):
    with pytest.raises(DatasetError, match=match):
        load_dataset("digits_lt", **params)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"num_classes": 1001}, "'num_classes'"),
        ({"num_classes": 1}, "'num_classes'"),
        ({"dim": 0}, "'dim'"),
        ({"n_max": 0}, "'n_max'"),
        ({"noise": 0.0}, "'noise'"),
        ({"class_sep": -1.0}, "'class_sep'"),
        ({"class_sep": float("inf")}, "'class_sep'"),
    ],
)
def test_synthetic_bad_params(params, match):
    with pytest.raises(DatasetError, match=match):
        load_dataset("synthetic_lt", **params)


# ---------------------------------------------------------------------------------------------------------------
# digits_lt


def _assert_well_formed(data: LTData) -> None:
    k = data.num_classes
    assert len(data.class_names) == k
    assert data.class_counts.dtype == torch.int64 and data.class_counts.shape == (k,)
    assert data.train_targets.dtype == torch.int64 and data.train_targets.shape == (len(data.train),)
    assert torch.equal(torch.bincount(data.train_targets, minlength=k), data.class_counts)
    assert len(data.fingerprint) == 64 and int(data.fingerprint, 16) >= 0
    for split in (data.train, data.test):
        x, y = split[0]
        assert x.dtype == torch.float32 and tuple(x.shape) == data.input_shape
        assert isinstance(y, int) and 0 <= y < k
    # The stored targets are the labels the dataset yields, in index order.
    assert [data.train[i][1] for i in range(0, len(data.train), 7)] == data.train_targets[::7].tolist()


def test_digits_lt_is_long_tailed_head_first():
    data = load_dataset("digits_lt")
    _assert_well_formed(data)
    assert data.input_shape == (64,) and data.num_classes == 10
    assert data.class_names == [str(c) for c in range(10)]
    # Smallest class of sklearn's digits has 174 images; 50 held out -> n_max 124.
    assert data.class_counts.tolist() == long_tailed_counts(124, 10, 50)
    assert data.class_counts[0] == data.class_counts.max() and data.class_counts[-1] == data.class_counts.min()
    assert torch.bincount(data.test.targets, minlength=10).tolist() == [50] * 10
    assert float(data.train.x.min()) >= 0.0 and float(data.train.x.max()) <= 1.0
    assert data.params == {"imbalance_factor": 50.0, "profile": "exp", "test_per_class": 50, "seed": 0}


def test_digits_lt_deterministic_and_seeded():
    a, b = load_dataset("digits_lt", seed=3), load_dataset("digits_lt", seed=3)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x)
    assert torch.equal(a.train_targets, b.train_targets)
    assert a.fingerprint == b.fingerprint
    c = load_dataset("digits_lt", seed=4)
    assert not torch.equal(a.train.x, c.train.x)
    assert a.fingerprint != c.fingerprint


def test_digits_lt_test_set_does_not_depend_on_imbalance():
    a, b = (
        load_dataset("digits_lt", imbalance_factor=10),
        load_dataset("digits_lt", imbalance_factor=100, profile="step"),
    )
    assert torch.equal(a.test.x, b.test.x)
    assert a.fingerprint != b.fingerprint


def test_fingerprint_is_type_canonical_and_param_sensitive():
    assert load_dataset("digits_lt", imbalance_factor=50).fingerprint == load_dataset("digits_lt").fingerprint
    base = load_dataset("synthetic_lt", num_classes=5, n_max=30)
    assert base.fingerprint != load_dataset("synthetic_lt", num_classes=5, n_max=30, noise=0.5).fingerprint
    assert base.fingerprint != load_dataset("synthetic_lt", num_classes=5, n_max=30, test_per_class=10).fingerprint


def test_require_all_classes_names_empty_classes():
    data = load_dataset("digits_lt", imbalance_factor=1000)  # tail count int(124 / 1000) == 0
    assert data.class_counts[-1] == 0
    with pytest.raises(DatasetError, match=r"no training samples: .*9 \('9'\)"):
        data.require_all_classes()
    load_dataset("digits_lt").require_all_classes()  # no error


def test_dataloader_batches():
    data = load_dataset("digits_lt")
    x, y = next(iter(DataLoader(data.train, batch_size=16, shuffle=True)))
    assert x.shape == (16, 64) and x.dtype == torch.float32 and y.dtype == torch.int64


# ---------------------------------------------------------------------------------------------------------------
# synthetic_lt


def test_synthetic_counts_and_balanced_test():
    data = load_dataset("synthetic_lt", num_classes=10, n_max=200, imbalance_factor=20, test_per_class=7, dim=5)
    _assert_well_formed(data)
    assert data.class_counts.tolist() == long_tailed_counts(200, 10, 20)
    assert torch.bincount(data.test.targets, minlength=10).tolist() == [7] * 10
    assert data.input_shape == (5,)


def test_synthetic_deterministic():
    a, b = load_dataset("synthetic_lt", seed=1), load_dataset("synthetic_lt", seed=1)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x) and a.fingerprint == b.fingerprint
    c = load_dataset("synthetic_lt", seed=2)
    assert not torch.equal(a.train.x, c.train.x) and a.fingerprint != c.fingerprint
    # Means and test set come from their own streams: changing the imbalance leaves the test set alone.
    d = load_dataset("synthetic_lt", seed=1, imbalance_factor=10)
    assert torch.equal(a.test.x, d.test.x)


def test_synthetic_class_sep_controls_mean_distance():
    data = load_dataset("synthetic_lt", num_classes=4, dim=8, n_max=2000, imbalance_factor=1, class_sep=3.0, noise=0.1)
    means = torch.stack([data.train.x[data.train.targets == c].mean(0) for c in range(4)])
    assert torch.allclose(means.norm(dim=1), torch.full((4,), 3.0), atol=0.05)


def test_synthetic_1000_classes_is_fast():
    start = time.perf_counter()
    data = load_dataset("synthetic_lt", num_classes=1000)
    elapsed = time.perf_counter() - start
    assert data.num_classes == 1000 and len(data.test) == 50_000
    assert data.class_counts.tolist() == long_tailed_counts(500, 1000, 100)
    assert elapsed < 3.0


# ---------------------------------------------------------------------------------------------------------------
# CIFAR from fake pickles in the real format


def _dump(path: Path, obj: object, protocol: int = 2) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_fake_cifar10(folder: Path, per_class: int = 12, test_per_class: int = 3, protocol: int = 2) -> Path:
    """data_batch_1..5 / test_batch / batches.meta with byte keys, numpy uint8 data and list labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(123)
    labels = np.repeat(np.arange(10), per_class)
    rng.shuffle(labels)
    data = _images(rng, labels.size)
    for i, chunk in enumerate(np.array_split(np.arange(labels.size), 5), start=1):
        batch = {
            b"batch_label": f"training batch {i} of 5".encode(),
            b"labels": [int(v) for v in labels[chunk]],
            b"data": data[chunk],
            b"filenames": [f"img_{j}.png".encode() for j in chunk],
        }
        _dump(folder / f"data_batch_{i}", batch, protocol)
    test_labels = np.repeat(np.arange(10), test_per_class)
    _dump(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": test_labels.tolist(),
            b"data": _images(rng, test_labels.size),
        },
        protocol,
    )
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    _dump(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": 24, b"num_vis": 3072}, protocol)
    return folder


def write_fake_cifar100(folder: Path, per_class: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    fine = np.repeat(np.arange(100), per_class)
    rng.shuffle(fine)
    _dump(
        folder / "train",
        {b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(), b"data": _images(rng, fine.size)},
    )
    test = np.arange(100)
    _dump(
        folder / "test",
        {b"fine_labels": test.tolist(), b"coarse_labels": (test // 5).tolist(), b"data": _images(rng, 100)},
    )
    _dump(
        folder / "meta",
        {b"fine_label_names": [f"c{i}".encode() for i in range(100)], b"coarse_label_names": [b"x"] * 20},
    )
    return folder


def _ldam_reference_selection(folder: Path, imbalance_factor: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """IMBALANCECIFAR10 of the LDAM code, on the fake files (n_max = the fake per-class count)."""
    data, targets = [], []
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "rb") as f:
            entry = pickle.load(f, encoding="bytes")
        data.append(entry[b"data"])
        targets.extend(entry[b"labels"])
    data_all = np.concatenate(data).reshape(-1, 3, 32, 32)
    targets_np = np.array(targets, dtype=np.int64)
    img_max = int(np.bincount(targets_np).min())
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        new_data, new_targets = [], []
        for the_class in np.unique(targets_np):
            the_img_num = int(img_max * ((1 / imbalance_factor) ** (the_class / (10 - 1.0))))
            idx = np.where(targets_np == the_class)[0]
            np.random.shuffle(idx)
            selec_idx = idx[:the_img_num]
            new_data.append(data_all[selec_idx])
            new_targets.extend([the_class] * the_img_num)
    finally:
        np.random.set_state(state)
    return np.concatenate(new_data), np.array(new_targets)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_lt_selection_matches_ldam(tmp_path, protocol):
    folder = write_fake_cifar10(tmp_path / "cifar-10-batches-py", protocol=protocol)
    data = load_dataset("cifar10_lt", path=str(folder), imbalance_factor=10, seed=5, augment=False)
    _assert_well_formed(data)
    ref_x, ref_y = _ldam_reference_selection(folder, 10, 5)
    assert torch.equal(data.train.x, torch.from_numpy(ref_x))
    assert data.train_targets.tolist() == ref_y.tolist()
    assert data.class_counts.tolist() == long_tailed_counts(12, 10, 10)
    assert data.class_names[:2] == ["airplane", "automobile"]
    assert data.input_shape == (3, 32, 32)
    assert torch.bincount(data.test.targets, minlength=10).tolist() == [3] * 10


def test_cifar10_lt_accepts_parent_folder_and_env_var(tmp_path, monkeypatch):
    write_fake_cifar10(tmp_path / "cifar-10-batches-py")
    a = load_dataset("cifar10_lt", path=str(tmp_path), augment=False)
    monkeypatch.setenv("LONGTAIL_CIFAR10_DIR", str(tmp_path / "cifar-10-batches-py"))
    b = load_dataset("cifar10_lt", augment=False)
    assert torch.equal(a.train.x, b.train.x)
    # Same files in another place: same fingerprint.
    assert a.fingerprint == b.fingerprint
    shutil.copytree(tmp_path / "cifar-10-batches-py", tmp_path / "elsewhere")
    assert load_dataset("cifar10_lt", path=str(tmp_path / "elsewhere"), augment=False).fingerprint == a.fingerprint
    assert load_dataset("cifar10_lt", path=str(tmp_path), augment=True).fingerprint != a.fingerprint


def test_cifar_transforms(tmp_path):
    folder = write_fake_cifar10(tmp_path / "c10")
    plain = load_dataset("cifar10_lt", path=str(folder), augment=False)
    mean = torch.tensor(CIFAR_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(3, 1, 1)
    raw = plain.train.x[0].float() / 255
    x, _ = plain.train[0]
    assert torch.allclose(x, (raw - mean) / std)
    xt, _ = plain.test[0]
    assert torch.allclose(xt, (plain.test.x[0].float() / 255 - mean) / std)

    augmented = load_dataset("cifar10_lt", path=str(folder), augment=True)
    torch.manual_seed(0)
    padded = torch.nn.functional.pad(raw, (4, 4, 4, 4))
    candidates = [padded[:, i : i + 32, j : j + 32] for i in range(9) for j in range(9)]
    candidates = [(c - mean) / std for c in candidates + [c.flip(-1) for c in candidates]]
    outputs = [augmented.train[0][0] for _ in range(20)]
    for out in outputs:
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32
        assert any(torch.allclose(out, c) for c in candidates)
    assert any(not torch.allclose(out, outputs[0]) for out in outputs)


def test_cifar100_lt(tmp_path):
    write_fake_cifar100(tmp_path / "cifar-100-python")
    data = load_dataset("cifar100_lt", path=str(tmp_path), imbalance_factor=4, augment=False)
    _assert_well_formed(data)
    assert data.num_classes == 100 and data.class_names[:2] == ["c0", "c1"]
    assert data.class_counts.tolist() == long_tailed_counts(4, 100, 4)
    assert len(data.test) == 100


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = write_fake_cifar10(tmp_path / "c10")
    _dump(folder / "data_batch_2", {b"data": _Evil(), b"labels": []})
    with pytest.raises(DatasetError, match=r"data_batch_2: refusing to unpickle global (posix|nt)\.system"):
        load_dataset("cifar10_lt", path=str(folder))
    assert not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps((eval, ("1 + 1",)), protocol=2),
        b"cbuiltins\neval\n(S'1+1'\ntR.",
        b"csubprocess\ncheck_output\n(S'ls'\ntR.",
    ],
)
def test_safe_unpickle_refuses_globals(payload):
    with pytest.raises(DatasetError, match="refusing to unpickle global"):
        safe_unpickle("f", payload)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda f: (f / "data_batch_3").unlink(), r"missing file\(s\) \['data_batch_3'\]"),
        (lambda f: (f / "test_batch").write_bytes(b"not a pickle"), "test_batch: not a valid CIFAR pickle"),
        (lambda f: _dump(f / "test_batch", [1, 2, 3]), "test_batch: expected a pickled dict"),
        (lambda f: _dump(f / "data_batch_1", {b"labels": [0]}), r"data_batch_1: missing entry 'data'"),
        (
            lambda f: _dump(f / "data_batch_1", {b"labels": [0], b"data": np.zeros((1, 10), np.uint8)}),
            r"data_batch_1: 'data' must be a uint8 array of shape \(N, 3072\)",
        ),
        (
            lambda f: _dump(f / "test_batch", {b"labels": [10], b"data": np.zeros((1, 3072), np.uint8)}),
            r"test_batch: label 10 outside \[0, 10\)",
        ),
        (
            lambda f: _dump(f / "test_batch", {b"labels": [1, 2], b"data": np.zeros((1, 3072), np.uint8)}),
            "test_batch: 'labels' must hold one label per image",
        ),
    ],
)
def test_cifar_bad_files(tmp_path, mutate, match):
    folder = write_fake_cifar10(tmp_path / "c10")
    mutate(folder)
    with pytest.raises(DatasetError, match=match):
        load_dataset("cifar10_lt", path=str(folder))


def test_cifar_path_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("LONGTAIL_CIFAR100_DIR", raising=False)
    with pytest.raises(DatasetError, match="'path' is required or set LONGTAIL_CIFAR100_DIR"):
        load_dataset("cifar100_lt")
    with pytest.raises(DatasetError, match="no such file or directory"):
        load_dataset("cifar100_lt", path=str(tmp_path / "nope"))
    with pytest.raises(DatasetError, match=r"missing file\(s\) \['train', 'test', 'meta'\]"):
        load_dataset("cifar100_lt", path=str(tmp_path))
    with pytest.raises(DatasetError, match="'augment'"):
        load_dataset("cifar100_lt", path=str(tmp_path), augment="yes")


# ---------------------------------------------------------------------------------------------------------------
# npz


def _save_npz(path: Path, **arrays: np.ndarray) -> str:
    rng = np.random.default_rng(0)
    defaults = {
        "x_train": rng.standard_normal((40, 3)).astype(np.float32),
        "y_train": np.repeat(np.arange(4), 10),
        "x_test": rng.standard_normal((8, 3)),
        "y_test": np.repeat(np.arange(4), 2),
    }
    defaults.update(arrays)
    np.savez(path, **{k: v for k, v in defaults.items() if v is not None})
    return str(path)


def test_npz_happy_path(tmp_path):
    path = _save_npz(tmp_path / "d.npz")
    data = load_dataset("npz", path=path, class_names=["a", "b", "c", "d"])
    _assert_well_formed(data)
    assert data.num_classes == 4 and data.input_shape == (3,)
    assert data.class_counts.tolist() == [10] * 4
    assert data.class_names == ["a", "b", "c", "d"]
    assert data.params["path"] == os.path.abspath(path)
    assert data.test.x.dtype == torch.float32
    more = load_dataset("npz", path=path, num_classes=6)
    assert more.num_classes == 6 and more.class_counts.tolist() == [10, 10, 10, 10, 0, 0]


def test_npz_long_tailed_subsample(tmp_path):
    path = _save_npz(tmp_path / "d.npz")
    a = load_dataset("npz", path=path, imbalance_factor=5, seed=1)
    assert a.class_counts.tolist() == long_tailed_counts(10, 4, 5)
    b = load_dataset("npz", path=path, imbalance_factor=5, seed=2)
    assert a.class_counts.tolist() == b.class_counts.tolist()
    assert not torch.equal(a.train.x, b.train.x)
    assert a.fingerprint != b.fingerprint
    assert load_dataset("npz", path=path, imbalance_factor=5, seed=1).fingerprint == a.fingerprint


def test_npz_fingerprint_follows_content_not_location(tmp_path):
    path = _save_npz(tmp_path / "d.npz")
    (tmp_path / "other").mkdir()
    shutil.copy(path, tmp_path / "other" / "renamed.npz")
    moved = load_dataset("npz", path=str(tmp_path / "other" / "renamed.npz"))
    assert moved.fingerprint == load_dataset("npz", path=path).fingerprint
    changed = _save_npz(tmp_path / "e.npz", x_test=np.zeros((8, 3)))
    assert load_dataset("npz", path=changed).fingerprint != load_dataset("npz", path=path).fingerprint


def _npz_error_cases():
    r = np.random.default_rng(1)
    return [
        ({"y_test": None}, r"missing array\(s\) \['y_test'\]"),
        ({"x_train": None, "y_train": None}, r"missing array\(s\) \['x_train', 'y_train'\]"),
        ({"y_train": np.zeros(39, np.int64)}, "x_train has 40 samples but y_train has 39 labels"),
        ({"y_train": np.zeros((40, 1), np.int64)}, r"y_train must be 1-D .*\(40, 1\)"),
        (
            {"x_test": r.standard_normal((8, 4))},
            r"x_train samples have shape \(3,\) but x_test samples have shape \(4,\)",
        ),
        ({"x_train": r.standard_normal(40)}, r"x_train must have shape \(N, \*features\)"),
        ({"y_test": np.array([0, 1, 2, 3, 0, 1, 2, -1])}, r"y_test has label -1 outside \[0, 4\)"),
        ({"y_train": np.repeat(np.arange(4), 10) * 1.5}, "y_train must hold integer labels, got 1.5"),
        ({"y_test": np.array(["a"] * 8)}, "y_test must hold integer labels, got dtype"),
        ({"x_test": np.full((8, 3), np.nan)}, "x_test contains NaN or inf"),
        ({"x_train": np.full((40, 3), np.inf)}, "x_train contains NaN or inf"),
        ({"x_train": np.full((40, 3), 1e300)}, "x_train contains NaN or inf"),
        ({"x_train": np.array([["a"] * 3] * 40)}, "x_train must be numeric"),
    ]


@pytest.mark.parametrize(("arrays", "match"), _npz_error_cases())
def test_npz_bad_data(tmp_path, arrays, match):
    path = _save_npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(DatasetError, match=match):
        load_dataset("npz", path=path)


def test_npz_label_beyond_num_classes(tmp_path):
    path = _save_npz(tmp_path / "d.npz", y_test=np.array([0, 1, 2, 3, 0, 1, 2, 7]))
    with pytest.raises(DatasetError, match=r"y_test has label 7 outside \[0, 5\)"):
        load_dataset("npz", path=path, num_classes=5)


def test_npz_float_integral_labels_are_accepted(tmp_path):
    path = _save_npz(tmp_path / "d.npz", y_train=np.repeat(np.arange(4), 10).astype(np.float64))
    assert load_dataset("npz", path=path).class_counts.tolist() == [10] * 4


def test_npz_class_without_training_samples(tmp_path):
    y_train = np.repeat(np.array([0, 1, 3, 3]), 10)
    path = _save_npz(tmp_path / "d.npz", y_train=y_train)
    data = load_dataset("npz", path=path, class_names=["a", "b", "c", "d"])
    with pytest.raises(DatasetError, match=r"1 class\(es\) have no training samples: 2 \('c'\)"):
        data.require_all_classes()


def test_npz_file_errors(tmp_path):
    with pytest.raises(DatasetError, match="'path' is required"):
        load_dataset("npz")
    with pytest.raises(DatasetError, match="no such file or directory: .*missing.npz"):
        load_dataset("npz", path=str(tmp_path / "missing.npz"))
    with pytest.raises(DatasetError, match="is not a file"):
        load_dataset("npz", path=str(tmp_path))
    (tmp_path / "junk.npz").write_bytes(b"definitely not a zip")
    with pytest.raises(DatasetError, match="junk.npz: not a valid .npz file"):
        load_dataset("npz", path=str(tmp_path / "junk.npz"))
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(DatasetError, match="single.npy: not a valid .npz file .*single array"):
        load_dataset("npz", path=str(tmp_path / "single.npy"))
    objects = np.empty(40, dtype=object)
    np.savez(tmp_path / "obj.npz", x_train=np.zeros((40, 2)), y_train=objects, x_test=np.zeros((1, 2)), y_test=[0])
    with pytest.raises(DatasetError, match="obj.npz: array 'y_train' cannot be read"):
        load_dataset("npz", path=str(tmp_path / "obj.npz"))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"class_names": ["a", "b"]}, "'class_names' has 2 names but there are 4 classes"),
        ({"class_names": "abcd"}, "'class_names' must be a list of strings"),
        ({"num_classes": 0}, "'num_classes'"),
        ({"imbalance_factor": 0}, "'imbalance_factor'"),
        ({"profile": "log"}, "'profile'"),
        ({"seed": 1.5}, "'seed'"),
    ],
)
def test_npz_bad_params(tmp_path, params, match):
    path = _save_npz(tmp_path / "d.npz")
    with pytest.raises(DatasetError, match=match):
        load_dataset("npz", path=path, **params)


# ---------------------------------------------------------------------------------------------------------------
# with_validation: a stratified, seeded share of the test split becomes the validation split


def _rows(dataset) -> set[bytes]:
    return {dataset[i][0].numpy().tobytes() for i in range(len(dataset))}


def test_every_loader_fills_test_targets(tmp_path):
    for data in (
        load_dataset("digits_lt"),
        load_dataset("synthetic_lt", num_classes=4, n_max=20),
        load_dataset("npz", path=_save_npz(tmp_path / "d.npz")),
        load_dataset("cifar10_lt", path=str(write_fake_cifar10(tmp_path / "c10")), augment=False),
    ):
        assert data.test_targets is not None and data.test_targets.dtype == torch.int64
        assert data.test_targets.tolist() == [int(data.test[i][1]) for i in range(len(data.test))]
        assert data.val is None and data.val_targets is None


def test_with_validation_is_disjoint_stratified_seeded_and_keeps_train():
    data = load_dataset("digits_lt", imbalance_factor=50, test_per_class=50, seed=3)
    split = ds.with_validation(data, 0.5, seed=3)
    assert split.train is data.train and torch.equal(split.class_counts, data.class_counts)
    assert split.val_targets.bincount(minlength=10).tolist() == [25] * 10
    assert split.test_targets.bincount(minlength=10).tolist() == [25] * 10
    assert split.test_targets.tolist() == [int(split.test[i][1]) for i in range(len(split.test))]
    assert split.val_targets.tolist() == [int(split.val[i][1]) for i in range(len(split.val))]
    val_rows, test_rows = _rows(split.val), _rows(split.test)
    assert not val_rows & test_rows and val_rows | test_rows == _rows(data.test)
    again = ds.with_validation(data, 0.5, seed=3)
    assert again.fingerprint == split.fingerprint and torch.equal(again.val.x, split.val.x)
    other = ds.with_validation(data, 0.5, seed=4)
    assert other.fingerprint != split.fingerprint and not torch.equal(other.val.x, split.val.x)
    assert ds.with_validation(data, 0.3, seed=3).fingerprint != split.fingerprint != data.fingerprint
    assert ds.with_validation(data, 0.3, seed=3).val_targets.bincount().tolist() == [15] * 10


def test_with_validation_keeps_cifar_lt_published_totals(tmp_path):
    # CIFAR-10-LT at IF 100 trains on 12406 images (Cao et al. 2019); the split touches only the test images.
    rng = np.random.default_rng(0)
    path = _save_npz(
        tmp_path / "cifar_like.npz",
        x_train=rng.standard_normal((50_000, 1)).astype(np.float32),
        y_train=np.repeat(np.arange(10), 5000),
        x_test=rng.standard_normal((10_000, 1)).astype(np.float32),
        y_test=np.repeat(np.arange(10), 1000),
    )
    data = load_dataset("npz", path=path, imbalance_factor=100)
    split = ds.with_validation(data, 0.5, seed=0)
    assert len(split.train) == int(split.class_counts.sum()) == 12406
    assert split.class_counts.tolist() == long_tailed_counts(5000, 10, 100)
    assert len(split.val) == len(split.test) == 5000
    # The CIFAR loader itself: same training split, disjoint stratified val/test.
    folder = write_fake_cifar10(tmp_path / "cifar-10-batches-py", test_per_class=4)
    cifar = load_dataset("cifar10_lt", path=str(folder), imbalance_factor=10, augment=False)
    cifar_split = ds.with_validation(cifar, 0.25, seed=0)
    assert cifar_split.train is cifar.train
    assert cifar_split.val_targets.bincount(minlength=10).tolist() == [1] * 10
    assert cifar_split.test_targets.bincount(minlength=10).tolist() == [3] * 10


def test_with_validation_refuses_a_split_without_one_item_per_side():
    data = load_dataset("synthetic_lt", num_classes=3, n_max=10, test_per_class=2)
    assert ds.with_validation(data, 0.5, seed=0).val_targets.tolist() == [0, 1, 2]
    for fraction in (0.1, 0.9):  # round(0.2) = 0 and round(1.8) = 2 leave a side empty
        with pytest.raises(DatasetError, match=r"val_fraction .* class\(es\) 0 \('class_0': 2 test item"):
            ds.with_validation(data, fraction, seed=0)
    for fraction in (0.0, 1.0, -0.5, True):
        with pytest.raises(DatasetError, match="val_fraction must be in"):
            ds.with_validation(data, fraction, seed=0)


def test_npz_with_its_own_validation_split(tmp_path):
    rng = np.random.default_rng(2)
    path = _save_npz(tmp_path / "v.npz", x_val=rng.standard_normal((6, 3)), y_val=np.array([0, 1, 2, 3, 0, 1]))
    data = load_dataset("npz", path=path)
    assert data.val_targets.tolist() == [0, 1, 2, 3, 0, 1] and len(data.val) == 6
    split = ds.with_validation(data, 0.5, seed=0)
    assert split.val is data.val and split.test is data.test  # its own split is used as is
    assert len(split.test) == 8 and split.train is data.train
    assert split.fingerprint != data.fingerprint  # the fingerprint says the partition is the dataset's own
    changed = _save_npz(tmp_path / "w.npz", x_val=rng.standard_normal((6, 3)), y_val=np.array([0, 1, 2, 3, 0, 1]))
    assert load_dataset("npz", path=changed).fingerprint != data.fingerprint
    for arrays, match in (
        ({"x_val": np.zeros((2, 3))}, "has 'x_val' but not 'y_val'"),
        ({"x_val": np.zeros((2, 4)), "y_val": np.zeros(2, np.int64)}, r"x_val samples have shape \(4,\)"),
        ({"x_val": np.zeros((2, 3)), "y_val": np.array([0, 9])}, r"y_val has label 9 outside \[0, 4\)"),
    ):
        with pytest.raises(DatasetError, match=match):
            load_dataset("npz", path=_save_npz(tmp_path / "bad.npz", **arrays), num_classes=4)


def test_digits_are_read_from_scikit_learns_file_without_importing_it():
    """The bundled CSV read directly equals scikit-learn's ``load_digits`` (and saves importing scikit-learn)."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from lt_core.datasets import digits

    assert digits._digits_csv() is not None
    x, y = digits._digits()
    data, target = load_digits(return_X_y=True)
    np.testing.assert_array_equal(x, (data / 16.0).astype(np.float32))
    np.testing.assert_array_equal(y, target)
    code = (
        "import sys; from lt_core.datasets import load_dataset; load_dataset('digits_lt'); "
        "print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
