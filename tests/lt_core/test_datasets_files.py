"""The user-data loaders: image_folder, file_list and tabular, on small files written here (Pillow, pyarrow)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lt_core.datasets import DatasetError, load_dataset
from lt_core.datasets.images import ImageBatchTransform, ImageFiles

COUNTS = {"cat": 6, "ant": 3, "dog": 1}  # sorted: ant (0), cat (1), dog (2)


def write_image(path: Path, seed: int, size: tuple[int, int] = (20, 16), fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, format=fmt)


def make_folder(root: Path, split: str, counts: dict[str, int], ext: str = ".png") -> None:
    for c, n in counts.items():
        for i in range(n):
            write_image(root / split / c / f"{c}{i}{ext if i % 2 else '.jpg'}", hash((split, c, i)) % 1000)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    make_folder(root, "train", COUNTS)
    make_folder(root, "val", {"ant": 1, "cat": 1})
    make_folder(root, "test", {"ant": 2, "cat": 2, "dog": 2})
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_classes_counts_and_splits(folder: Path):
    data = load_dataset("image_folder", root=str(folder), val="val", image_size=16)
    assert data.class_names == ["ant", "cat", "dog"]  # sorted as torchvision's ImageFolder
    assert data.class_counts.tolist() == [3, 6, 1]
    assert data.input_shape == (3, 16, 16)
    assert len(data.train) == 10 and len(data.test) == 6 and len(data.val) == 2
    assert data.test_targets.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.val_targets.tolist() == [0, 1]
    assert data.train_targets.dtype == torch.int64
    x, y = data.train[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 18, 18) and y == 0  # load_size = 16 / 0.875
    batch = next(iter(DataLoader(data.train, batch_size=4)))[0]
    out = data.train.batch_transform(batch)
    assert out.shape == (4, 3, 16, 16) and out.dtype == torch.float32
    without_val = load_dataset("image_folder", root=str(folder), image_size=16)
    assert without_val.val is None and without_val.val_targets is None


def test_image_folder_long_tail_subsample_and_fingerprint(folder: Path):
    a = load_dataset("image_folder", root=str(folder), image_size=16, imbalance_factor=6, seed=1)
    n_max = 6  # the largest class (cat, index 1) sets n_max; class 0 is the head of the recipe
    assert a.class_counts.tolist() == [3, int(n_max * (1 / 6) ** 0.5), 1]
    b = load_dataset("image_folder", root=str(folder), image_size=16, imbalance_factor=6, seed=2)
    c = load_dataset("image_folder", root=str(folder), image_size=16)
    assert a.fingerprint != c.fingerprint and a.fingerprint != b.fingerprint
    assert c.fingerprint == load_dataset("image_folder", root=str(folder), image_size=16).fingerprint


def test_image_folder_decodes_jpeg_png_bmp_webp(tmp_path: Path):
    for i, (ext, fmt) in enumerate(
        [(".jpg", "JPEG"), (".jpeg", "JPEG"), (".png", "PNG"), (".bmp", "BMP"), (".webp", "WEBP")]
    ):
        write_image(tmp_path / "r" / "train" / "a" / f"x{i}{ext}", i, size=(40, 24), fmt=fmt)
        write_image(tmp_path / "r" / "test" / "a" / f"x{i}{ext}", i, fmt=fmt)
    data = load_dataset("image_folder", root=str(tmp_path / "r"), image_size=16)
    assert len(data.train) == 5
    for i in range(5):
        assert data.train[i][0].shape == (3, 18, 18)


def test_image_folder_empty_class_folder_is_named(folder: Path):
    (folder / "train" / "emu").mkdir()
    with pytest.raises(DatasetError, match=r"train/emu: empty class folder"):
        load_dataset("image_folder", root=str(folder))


def test_image_folder_split_outside_root_and_unknown_test_class(folder: Path, tmp_path: Path):
    with pytest.raises(DatasetError, match="leaves the root"):
        load_dataset("image_folder", root=str(folder), train="../")
    make_folder(folder, "test", {"yak": 1})
    with pytest.raises(DatasetError, match=r"test: class folder\(s\) \['yak'\] are not classes"):
        load_dataset("image_folder", root=str(folder))


def test_missing_or_corrupt_image_fails_naming_the_path(folder: Path):
    data = load_dataset("image_folder", root=str(folder), image_size=16)
    bad = data.train.path(0)
    Path(bad).write_bytes(b"garbage, not a JPEG")
    with pytest.raises(DatasetError, match=rf"{bad}: cannot read image"):
        data.train[0]
    os.remove(bad)
    with pytest.raises(DatasetError, match=rf"{bad}: image file not found"):
        next(iter(DataLoader(data.train, batch_size=2, num_workers=1)))  # re-raised from the worker process


def write_lists(tmp_path: Path) -> dict[str, str]:
    root = tmp_path / "lt"
    lines = {"train": [], "test": []}
    for split, per_class in (("train", [5, 2, 1]), ("test", [1, 1, 1])):
        for c, n in enumerate(per_class):
            for i in range(n):
                rel = f"{split}/n{c:03d}/img {i}.jpg"  # a space in the path: the label is the last field
                write_image(root / rel, c * 10 + i)
                lines[split].append(f"{rel} {c}")
    (tmp_path / "train.txt").write_text("\n".join(lines["train"]) + "\n\n")
    (tmp_path / "test.txt").write_text("\n".join(lines["test"]))
    (tmp_path / "names.txt").write_text("tench\ngoldfish\nshark\n")
    return {"root": str(root), "train": str(tmp_path / "train.txt"), "test": str(tmp_path / "test.txt")}


def test_file_list_counts_names_and_targets(tmp_path: Path):
    files = write_lists(tmp_path)
    data = load_dataset("file_list", **files, image_size=16)
    assert data.class_names == ["0", "1", "2"] and data.class_counts.tolist() == [5, 2, 1]
    assert data.test_targets.tolist() == [0, 1, 2] and data.val is None
    named = load_dataset("file_list", **files, class_names=str(tmp_path / "names.txt"), val=files["test"])
    assert named.class_names == ["tench", "goldfish", "shark"]
    assert named.val_targets.tolist() == [0, 1, 2] and len(named.val) == 3
    assert isinstance(named.train, ImageFiles) and named.train.relpath(0) == "train/n000/img 0.jpg"
    assert named.train[6][1] == 1 and named.train[0][0].shape == (3, 256, 256)


@pytest.mark.parametrize(
    "line, match",
    [
        ("just_a_path.jpg", r"train.txt:3: expected '<relative/path> <integer label>'"),
        ("a.jpg x", r"train.txt:3: label 'x' is not an integer"),
        ("a.jpg -1", r"train.txt:3: label -1 is out of range"),
        ("../escape.jpg 0", r"train.txt:3: image path '../escape.jpg' leaves the root"),
        ("/etc/passwd 0", r"train.txt:3: image path '/etc/passwd' leaves the root"),
    ],
)
def test_file_list_bad_line_names_file_and_line(tmp_path: Path, line: str, match: str):
    files = write_lists(tmp_path)
    text = Path(files["train"]).read_text().splitlines()
    text.insert(2, line)
    Path(files["train"]).write_text("\n".join(text))
    with pytest.raises(DatasetError, match=match):
        load_dataset("file_list", **files)


def test_file_list_label_beyond_class_names(tmp_path: Path):
    files = write_lists(tmp_path)
    (tmp_path / "names.txt").write_text("tench\ngoldfish\n")
    with pytest.raises(DatasetError, match=r"train.txt:8: label 2 is out of range: .*names.txt names 2 classes"):
        load_dataset("file_list", **files, class_names=str(tmp_path / "names.txt"))


def test_file_list_long_tail_subsample(tmp_path: Path):
    files = write_lists(tmp_path)
    data = load_dataset("file_list", **files, imbalance_factor=10)
    assert data.class_counts.tolist() == [5, int(5 * 0.1**0.5), 0]  # exp profile: 5, 1, 0
    assert len(data.train) == 6 and len(data.test) == 3
    step = load_dataset("file_list", **files, imbalance_factor=5, profile="step")
    assert step.class_counts.tolist() == [5, 2, 1]  # head classes keep n_max (all they have), the tail 5 / 5


def test_batch_transform_normalises_with_settable_mean_std():
    x = torch.full((2, 3, 18, 18), 255, dtype=torch.uint8)
    out = ImageBatchTransform(16, 18, augment=False, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))(x)
    assert out.shape == (2, 3, 16, 16)
    assert torch.allclose(out[:, 0], torch.tensor(2.0)) and torch.allclose(out[:, 2], torch.tensor(0.5))
    train = ImageBatchTransform(16, 18, augment=True)(torch.randint(0, 256, (4, 3, 18, 18), dtype=torch.uint8))
    assert train.shape == (4, 3, 16, 16) and torch.isfinite(train).all()
    with pytest.raises(DatasetError, match="'std' must be positive"):
        load_dataset("image_folder", root=".", std=[0.2, 0, 0.2])


# ----------------------------------------------------------------------------------------------------------------
# tabular


def write_table(path: Path, columns: dict[str, list]) -> str:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pa.table(columns)
    if path.suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return str(path)


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_tabular_string_labels_sorted_and_features(tmp_path: Path, ext: str):
    train = write_table(
        tmp_path / f"train{ext}",
        {"amount": [1.0, 2.0, 3.0, 4.0, 5.0], "n": [1, 2, 3, 4, 5], "y": ["ok", "ok", "ok", "fraud", "ok"]},
    )
    test = write_table(tmp_path / f"test{ext}", {"amount": [1.5, 2.5], "n": [0, 1], "y": ["fraud", "ok"]})
    data = load_dataset("tabular", train=train, test=test, label="y")
    assert data.class_names == ["fraud", "ok"] and data.class_counts.tolist() == [1, 4]
    assert data.input_shape == (2,) and data.test_targets.tolist() == [0, 1]
    x, y = data.train[3]
    assert x.tolist() == [4.0, 4.0] and y == 0
    only = load_dataset("tabular", train=train, test=test, val=test, label="y", features=["n"])
    assert only.input_shape == (1,) and only.val_targets.tolist() == [0, 1]


def test_tabular_integer_labels_and_long_tail(tmp_path: Path):
    y = [0] * 8 + [1] * 8 + [2] * 8
    train = write_table(tmp_path / "t.parquet", {"f": [float(i) for i in range(24)], "label": y})
    data = load_dataset("tabular", train=train, test=train, imbalance_factor=8)
    assert data.class_names == ["0", "1", "2"] and data.class_counts.tolist() == [8, 2, 1]


@pytest.mark.parametrize(
    "columns, kwargs, match",
    [
        ({"f": [1.0], "target": [0]}, {}, r"t.csv: no column 'label'"),
        ({"f": ["a"], "label": [0]}, {}, r"t.csv: feature column 'f' is not numeric"),
        ({"f": [1.0], "label": [0]}, {"features": ["g"]}, r"t.csv: no column 'g'"),
        ({"f": [1.0], "label": [-1]}, {}, r"t.csv: label -1 is negative"),
        ({"f": [1.0], "label": [0.5]}, {}, r"t.csv: label column 'label' holds 0.5"),
    ],
)
def test_tabular_bad_files_name_file_and_column(tmp_path: Path, columns, kwargs, match):
    path = write_table(tmp_path / "t.csv", columns)
    with pytest.raises(DatasetError, match=match):
        load_dataset("tabular", train=path, test=path, **kwargs)


def test_tabular_unknown_test_label_and_bad_extension(tmp_path: Path):
    train = write_table(tmp_path / "a.csv", {"f": [1.0], "y": ["x"]})
    test = write_table(tmp_path / "b.csv", {"f": [1.0], "y": ["z"]})
    with pytest.raises(DatasetError, match=r"b.csv: label 'z' does not occur in the training file"):
        load_dataset("tabular", train=train, test=test, label="y")
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(DatasetError, match=r"must be a .csv or .parquet file"):
        load_dataset("tabular", train=str(tmp_path / "c.json"), test=test, label="y")


def test_tabular_parquet_without_the_label_column_names_the_file(tmp_path: Path):
    path = write_table(tmp_path / "rows.parquet", {"f": [1.0, 2.0], "target": [0, 1]})
    with pytest.raises(DatasetError, match=r"rows.parquet: no column 'label' \(columns: \['f', 'target'\]\)"):
        load_dataset("tabular", train=path, test=path)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match=r"broken.parquet: cannot read as parquet"):
        load_dataset("tabular", train=str(tmp_path / "broken.parquet"), test=path)
