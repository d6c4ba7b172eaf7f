"""The image loader (``image_folder``): throughput, memory against the number of images, and its cost in training.

All phases run in this one process run (RSS phases in fresh subprocesses), on this machine:

1. **Loader throughput**: a ``--images`` (5,000) image 64 px JPEG folder written here with Pillow, read as
   ``image_folder`` (``image_size`` 64: decoded to 73 px, center crop on the device). Images/s of one pass
   (batches of 128, the eval batch transform applied) with 0 and 2 loader worker processes.
2. **Peak RSS against the number of images**: a fresh process lists the folder and reads every image once (0
   workers); its peak RSS at 5,000 and at ``--rss-images`` (20,000) images. Goal: flat (nothing decoded is kept).
3. **Loader cost in training**: a resnet18 training epoch (``image_size`` 64, batch 64, SGD, train augmentation on
   the device) over the first ``--train-images`` images, fed by the loader (``--train-workers`` workers) against
   the same model fed from the same images already decoded into one uint8 tensor in memory (same batch transform,
   same steps), in the same run: one warm-up epoch each, then ``--rounds`` (4) alternating epochs of each; the
   best epoch of each counts (load from other processes only slows epochs down), every epoch is printed.
   Goal: the loader costs at most 10%.

    python benchmarks/bench_data.py [--images 5000] [--rss-images 20000] [--train-images 1024]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402


def write_folder(root: Path, n: int, classes: int = 10, size: int = 64) -> None:
    """``n`` random-texture JPEGs (``size`` px), long-tailed over ``classes`` folders; reuses what exists."""
    from PIL import Image

    rng = np.random.default_rng(0)
    weights = np.array([0.5**c for c in range(classes)])
    labels = rng.choice(classes, size=n, p=weights / weights.sum())
    base = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
    for i, c in enumerate(labels):
        path = root / "train" / f"c{c:02d}" / f"{i:06d}.jpg"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tile = np.roll(base, shift=(i % 7, i % 5), axis=(0, 1)) ^ np.uint8(c * 20)
        Image.fromarray(tile).resize((size, size), Image.BILINEAR).save(path, quality=90)
    (root / "test" / "c00").mkdir(parents=True, exist_ok=True)
    sample = root / "test" / "c00" / "t.jpg"
    if not sample.exists():
        Image.fromarray(base).resize((size, size)).save(sample)


def load(root: Path):
    from lt_core.datasets import load_dataset

    return load_dataset("image_folder", root=str(root), image_size=64, augment=True)


def loader_throughput(root: Path, workers: int) -> float:
    from lt_core.engine import loader_options

    data = load(root)
    loader = DataLoader(data.train, batch_size=128, **loader_options(data.train, "cpu", num_workers=workers))
    transform = data.test.batch_transform
    t0 = time.perf_counter()
    n = 0
    for x, _ in loader:
        n += transform(x).shape[0]
    return n / (time.perf_counter() - t0)


def _status(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def rss_child(root: str, n: int) -> None:
    """In a fresh process: list ``root`` and read the first ``n`` images once; print RSS figures (MiB) as JSON.

    The peak (``VmHWM``) is reset after the listing (``/proc/self/clear_refs``), so imports do not mask it.
    """
    from torch.utils.data import Subset

    data = load(Path(root))
    subset = Subset(data.train, range(min(n, len(data.train))))
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
    listed = _status("VmRSS")
    seen = 0
    for x, _ in DataLoader(subset, batch_size=256, num_workers=0):
        seen += data.train.batch_transform(x).shape[0]
    print(json.dumps({"images": seen, "rss_after_listing_mib": listed, "peak_rss_mib": _status("VmHWM")}))


def peak_rss(root: Path, n: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(root), str(n)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def train_epoch_rate(model, loader, transform, optimizer) -> float:
    model.train()
    t0 = time.perf_counter()
    n = 0
    for x, y in loader:
        x = transform(x)
        logits, _ = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n += y.shape[0]
    return n / (time.perf_counter() - t0)


def training_cost(root: Path, n: int, workers: int, rounds: int) -> dict[str, list[float]]:
    from torch.utils.data import Subset

    from lt_core.engine import loader_options
    from lt_core.models import create_model

    data = load(root)
    subset = Subset(data.train, range(min(n, len(data.train))))
    files = DataLoader(
        subset, batch_size=64, shuffle=True, drop_last=True, **loader_options(data.train, "cpu", num_workers=workers)
    )
    xs = torch.stack([subset[i][0] for i in range(len(subset))])  # decoded once: (n, 3, 73, 73) uint8
    ys = torch.tensor([subset[i][1] for i in range(len(subset))])
    memory = DataLoader(TensorDataset(xs, ys), batch_size=64, shuffle=True, drop_last=True)
    torch.manual_seed(0)
    model = create_model("resnet18", data.num_classes, data.input_shape)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    transform = data.train.batch_transform
    for loader in (memory, files):  # warm-up (and the loader's persistent workers start)
        train_epoch_rate(model, loader, transform, optimizer)
    rates: dict[str, list[float]] = {"memory": [], "files": []}
    for _ in range(rounds):  # alternating, so that load from other processes hits both alike
        for name, loader in (("memory", memory), ("files", files)):
            rates[name].append(train_epoch_rate(model, loader, transform, optimizer))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--rss-images", type=int, default=20000)
    parser.add_argument("--train-images", type=int, default=1024)
    parser.add_argument("--train-workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4, help="alternating epochs of each feed after a warm-up")
    parser.add_argument("--dir", default=None, help="where to write the image folders (default: a temp dir)")
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child[0], int(args.rss_child[1]))
        return
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_data_"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; images under {base}")
    small, large = base / "small", base / "large"
    t0 = time.perf_counter()
    write_folder(small, args.images)
    print(f"wrote {args.images} 64 px JPEGs in {time.perf_counter() - t0:.1f} s")

    print("\n| loader workers | images/s (decode + eval crop, batch 128) |\n|---|---|")
    for workers in (0, 2):
        print(f"| {workers} | {loader_throughput(small, workers):.0f} |")

    write_folder(large, args.rss_images)
    print("\n| images read | peak RSS (MiB) | RSS after listing (MiB) |\n|---|---|---|")
    for root, n in ((small, args.images), (large, args.rss_images)):
        r = peak_rss(root, n)
        print(f"| {r['images']} | {r['peak_rss_mib']:.0f} | {r['rss_after_listing_mib']:.0f} |")

    rates = training_cost(small, args.train_images, args.train_workers, args.rounds)
    # best of the rounds: other processes on a shared machine only ever slow an epoch down
    files, memory = max(rates["files"]), max(rates["memory"])
    print(f"\n| resnet18 epoch, {args.train_images} images, batch 64, 64 px | images/s (best) | each epoch |")
    print("|---|---|---|")
    print(f"| fed by the loader ({args.train_workers} workers) | {files:.1f} | {_rates(rates['files'])} |")
    print(f"| fed from a uint8 tensor in memory | {memory:.1f} | {_rates(rates['memory'])} |")
    print(f"| loader cost | {100 * (1 - files / memory):.1f}% (goal <= 10%) | |")


def _rates(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    main()
