"""Long-tailed datasets: a registry of loaders returning :class:`LTData`.

Shipped: ``digits_lt`` (scikit-learn digits, no download), ``synthetic_lt`` (Gaussian mixture),
``cifar10_lt`` / ``cifar100_lt`` (local CIFAR python pickles), ``npz`` (a user's arrays), ``image_folder`` and
``file_list`` (a user's images, decoded lazily), ``tabular`` (CSV or Parquet).

Errors:
    ``KeyError``      unknown dataset name (lists the known ones).
    ``DatasetError``  a ``ValueError``: unknown or invalid parameter, missing file, bad data; names the culprit.
"""

from lt_core.datasets import cifar, digits, images, npz, synthetic, tabular  # noqa: F401  (registers the loaders)
from lt_core.datasets.base import (
    DATASETS,
    ArrayDataset,
    DatasetError,
    DatasetInfo,
    LTData,
    load_dataset,
    long_tailed_counts,
    register_dataset,
    with_validation,
)

__all__ = [
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
