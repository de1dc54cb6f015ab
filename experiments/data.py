"""Datasets that ship inside scikit-learn (nothing is downloaded), split and standardised.

- ``digits``: :func:`sklearn.datasets.load_digits`, 1797 greyscale 8×8 images of
  the digits 0–9 (categorical likelihood, 10 classes).
- ``cancer``: :func:`sklearn.datasets.load_breast_cancer`, 569 tumours described
  by 30 real features, malignant or benign (Bernoulli likelihood).

Each dataset is split once (stratified, fixed seed) into a training split
(60%), a tuning split (20%, used only to choose the learning rate, as the
"subset of the validation set" of the paper's §4.1) and a validation split
(20%, on which the tables are reported). Features are standardised with the
training split's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split

__all__ = ["DATASETS", "Dataset", "load", "load_autoencoder"]

DATASETS = ("digits", "cancer")


@dataclass(frozen=True)
class Dataset:
    """A dataset split into train / tune / validation arrays (float32 features)."""

    name: str
    likelihood: str
    num_outputs: int
    image_shape: tuple[int, ...] | None
    x_train: np.ndarray
    y_train: np.ndarray
    x_tune: np.ndarray
    y_tune: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def _split(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, stratify=y, random_state=seed)
    x_tune, x_val, y_tune, y_val = train_test_split(x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed)
    return x_train, y_train, x_tune, y_tune, x_val, y_val


def load(name: str, *, split_seed: int = 0) -> Dataset:
    """Load, split and standardise one dataset (see the module docstring)."""
    if name == "digits":
        raw = load_digits()
        x, y = raw.data.astype(np.float64), raw.target.astype(np.int32)
        likelihood, num_outputs, image_shape = "categorical", 10, (8, 8, 1)
    elif name == "cancer":
        raw = load_breast_cancer()
        x, y = raw.data.astype(np.float64), raw.target.astype(np.int32)
        likelihood, num_outputs, image_shape = "bernoulli", 1, None
    else:
        msg = f"unknown dataset {name!r}; choose from {DATASETS}"
        raise ValueError(msg)
    x_train, y_train, x_tune, y_tune, x_val, y_val = _split(x, y, split_seed)
    if image_shape is None:  # tabular: per-feature standardisation
        mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    else:  # images: one mean and scale for all pixels
        mean, std = x_train.mean(), x_train.std()

    def prep(a: np.ndarray) -> np.ndarray:
        return ((a - mean) / std).astype(np.float32)

    return Dataset(
        name=name,
        likelihood=likelihood,
        num_outputs=num_outputs,
        image_shape=image_shape,
        x_train=prep(x_train),
        y_train=y_train,
        x_tune=prep(x_tune),
        y_tune=y_tune,
        x_val=prep(x_val),
        y_val=y_val,
    )


def load_autoencoder(*, split_seed: int = 0) -> Dataset:
    """Load the digits as an autoencoding task: pixels scaled to [0, 1] (÷16), targets the inputs (Gaussian likelihood).

    Same 60/20/20 split as :func:`load`; the ``y_*`` arrays are the ``x_*`` arrays.
    """
    raw = load_digits()
    x = (raw.data / 16.0).astype(np.float32)
    x_train, _, x_tune, _, x_val, _ = _split(x, raw.target.astype(np.int32), split_seed)
    return Dataset(
        name="digits-ae",
        likelihood="gaussian",
        num_outputs=x.shape[1],
        image_shape=None,
        x_train=x_train,
        y_train=x_train,
        x_tune=x_tune,
        y_tune=x_tune,
        x_val=x_val,
        y_val=x_val,
    )
