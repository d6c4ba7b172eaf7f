"""The per-process dataset and split caches of ``jobs.train``: the two most recently used are kept."""

from __future__ import annotations

import pytest

from jobs import train
from jobs.plan import EvaluationOptions
from jobs.train import cached_dataset, trial_data

DIGITS = {"name": "digits_lt", "imbalance_factor": 20, "profile": "exp", "test_per_class": 50, "seed": 0}


@pytest.fixture(autouse=True)
def empty_caches():
    train._DATASETS.clear()
    train._SPLITS.clear()
    yield
    train._DATASETS.clear()
    train._SPLITS.clear()


def test_the_least_recently_used_dataset_is_dropped_first():
    assert train._DATASET_CACHE_SIZE == 2
    a, b = cached_dataset(DIGITS), cached_dataset(DIGITS | {"seed": 1})
    assert cached_dataset(DIGITS) is a  # a used last: b is now the least recently used
    cached_dataset(DIGITS | {"seed": 2})
    assert len(train._DATASETS) == 2
    assert cached_dataset(DIGITS) is a
    assert cached_dataset(DIGITS | {"seed": 1}) is not b  # dropped, loaded again


def test_a_validation_split_is_made_once_per_dataset_fraction_and_seed():
    evaluation = EvaluationOptions(split=True, val_fraction=0.25, seed=3)
    split = trial_data(DIGITS, evaluation)
    assert split.val is not None and trial_data(DIGITS, evaluation.model_copy()) is split
    other = trial_data(DIGITS, evaluation.model_copy(update={"seed": 4}))
    assert other is not split and len(train._SPLITS) == 2
    assert trial_data(DIGITS) is cached_dataset(DIGITS)  # no split asked for (digits has no validation of its own)
