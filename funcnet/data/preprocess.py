"""Splitting and feature scaling: fit statistics on the training set, apply them to others.

All helpers accept NumPy or ``jnp`` arrays and return the same kind. ``standardize`` and
``normalize`` use no Python branches on values, so they also run inside ``jax.jit``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import _checks
from funcnet.data._common import take_rows


def _split_counts(counts: np.ndarray, n_test: int) -> np.ndarray:
    """Per-class test counts proportional to ``counts`` that sum to ``n_test`` exactly.

    Largest-remainder (Hamilton) rounding, with ties going to the earlier class.
    """
    quotas = counts * n_test
    base, remainder = quotas // counts.sum(), quotas % counts.sum()
    extra = n_test - int(base.sum())
    order = np.argsort(-remainder, kind="stable")
    base[order[:extra]] += 1
    return base


def train_test_split(x, y, *, test_fraction: float = 0.2, key, stratify: bool = False):
    """Splits ``(x, y)`` into shuffled train and test parts, deterministically from ``key``.

    ``round(test_fraction * N)`` examples go to the test part. With ``stratify``, each class
    contributes to the test part in proportion to its size (largest-remainder rounding),
    so class frequencies match in both parts up to one example per class.

    Args:
      x: examples, shape ``(N, ...)``, or a pytree of such arrays (a dict or tuple of
        inputs with the same ``N``, as for :func:`batches`): every leaf is split with the
        same rows, and each part keeps the container.
      y: targets, shape ``(N, ...)`` (or a pytree, as ``x``); with ``stratify``, one array
        of integer class labels ``(N,)``.
      test_fraction: fraction of examples for the test part, in ``(0, 1)``.
      key: a JAX PRNG key or an int seed; the same key gives the same split.
      stratify: keep the class proportions of ``y`` in both parts.

    Returns:
      ``(x_train, x_test, y_train, y_test)`` (scikit-learn's order), each in shuffled order
      and of the same kind (NumPy or ``jnp``, array or pytree) as the inputs.

    Raises:
      ValueError: leading sizes of the arrays of ``x`` and ``y`` differ, ``test_fraction``
        is outside ``(0, 1)``, either part would be empty, or ``stratify`` with ``y`` not
        ``(N,)``.
      TypeError: ``x`` or ``y`` (or one of their leaves) is not an array, ``key`` is not a
        key or int, ``test_fraction`` is not a real number, ``stratify`` is not a bool;
        ``stratify`` with ``y`` a pytree or non-integer.
    """
    fn = "train_test_split"
    n = _checks.check_same_leading(fn, {"x": x, "y": y})
    test_fraction = _checks.static_float(fn, "test_fraction", test_fraction, 0.0, 1.0,
                                         low_inclusive=False, high_inclusive=False)
    stratify = _checks.static_bool(fn, "stratify", stratify)
    n_test = int(round(test_fraction * n))
    if not 1 <= n_test <= n - 1:
        raise ValueError(
            f"{fn}: test_fraction={test_fraction} of {n} examples gives {n_test} test and "
            f"{n - n_test} train examples; both parts must be non-empty")
    perm = np.asarray(jax.random.permutation(_checks.check_key(fn, key, allow_seed=True), n))
    if not stratify:
        test_idx, train_idx = perm[:n_test], perm[n_test:]
    else:
        if not _checks.is_array(y):
            raise TypeError(f"{fn}: stratify needs y to be one array of integer labels (N,), "
                            f"got {type(y).__name__}")
        labels = np.asarray(y)
        if labels.ndim != 1:
            raise ValueError(f"{fn}: stratify needs labels of shape (N,), got y with shape "
                             f"{labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"{fn}: stratify needs integer labels, got y of dtype "
                            f"{labels.dtype}")
        shuffled = labels[perm]
        classes, counts = np.unique(shuffled, return_counts=True)
        take = _split_counts(counts, n_test)
        in_test = np.zeros(n, bool)
        for c, k in zip(classes, take):
            in_test[np.flatnonzero(shuffled == c)[:k]] = True
        test_idx, train_idx = perm[in_test], perm[~in_test]
    return (take_rows(x, train_idx), take_rows(x, test_idx), take_rows(y, train_idx),
            take_rows(y, test_idx))


def _xp(x):
    return jnp if isinstance(x, jax.Array) else np


def _fit_or_apply(fn: str, x, given: tuple, names: tuple[str, str], fit):
    """``(xp, x, dtype, a, b)``: ``x`` in its compute dtype, the dtype of the result and
    the statistics ``(a, b)`` in the compute dtype.

    The result's dtype is ``x``'s floating dtype (float32 for integer or bool ``x``); the
    compute dtype is that dtype, at least float32 (``_checks.compute_dtype``: the
    statistics of float16 data overflow in float16). ``given`` holds both statistics
    (applied as they are, cast to the compute dtype) or neither (``None, None``:
    ``fit(xp, x)`` computes them); ``xp`` is ``np`` or ``jnp``, the kind of ``x``.
    """
    xp = _xp(x)
    x = xp.asarray(x)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else np.dtype(np.float32)
    x = xp.asarray(x, dtype=_checks.compute_dtype(dtype))
    a, b = given
    if (a is None) != (b is None):
        raise ValueError(f"{fn}: pass both {names[0]} and {names[1]} (to apply fitted "
                         f"statistics) or neither (to fit them on x)")
    if a is None:
        a, b = fit(xp, x)
    else:
        a, b = xp.asarray(a, dtype=x.dtype), xp.asarray(b, dtype=x.dtype)
    return xp, x, dtype, a, b


def standardize(x, *, mean=None, std=None, axis=0, eps: float = 1e-8):
    """Standardizes ``x`` to zero mean and unit variance: ``(x - mean) / std``.

    Fit on the training set, then apply the same statistics to the test set::

        x_train, mean, std = standardize(x_train)
        x_test, _, _ = standardize(x_test, mean=mean, std=std)

    Features whose standard deviation is below ``eps`` (e.g. always-blank pixels) are
    divided by 1 instead, so they stay finite on new data. The result has ``x``'s dtype;
    it is computed, and the statistics fitted, in that dtype or float32 if it is smaller
    (float16 and bfloat16 data, whose variance overflows float16).

    Args:
      x: data, e.g. ``(N, D)`` or NHWC; integer data is converted to float32.
      mean, std: fitted statistics (with ``keepdims`` shape, broadcastable to ``x``), or
        ``None`` to compute them from ``x``.
      axis: axis or axes reduced when fitting (default: the example axis 0).
      eps: threshold below which a standard deviation counts as zero.

    Returns:
      ``(x_standardized, mean, std)``: ``x_standardized`` in ``x``'s floating dtype;
      ``mean`` and ``std`` in the compute dtype (float32 for half-precision ``x``), with
      the reduced axes kept as size 1.

    Raises:
      ValueError: only one of ``mean`` and ``std`` is given.
    """
    def fit(xp, x):
        std = xp.std(x, axis=axis, keepdims=True)
        return xp.mean(x, axis=axis, keepdims=True), xp.where(std < eps, xp.ones_like(std), std)

    _, x, dtype, mean, std = _fit_or_apply("standardize", x, (mean, std), ("mean", "std"),
                                           fit)
    return ((x - mean) / std).astype(dtype, copy=False), mean, std


def normalize(x, *, low=None, high=None, axis=None):
    """Min-max scales ``x`` to ``[0, 1]``: ``(x - low) / (high - low)``.

    Fit on the training set, then apply the same ``low``/``high`` to the test set (whose
    values may then fall slightly outside ``[0, 1]``). Where ``high == low`` the divisor is 1.
    The result has ``x``'s dtype; it is computed in that dtype or float32 if it is smaller
    (``high - low`` of float16 data may overflow float16).

    Args:
      x: data; integer data is converted to float32.
      low, high: fitted minimum and maximum, or ``None`` to compute them from ``x``.
      axis: axis or axes reduced when fitting; ``None`` (default) uses one global range,
        as for images; ``0`` scales each feature separately.

    Returns:
      ``(x_scaled, low, high)``: ``x_scaled`` in ``x``'s floating dtype; ``low`` and
      ``high`` in the compute dtype (float32 for half-precision ``x``), with the reduced
      axes kept as size 1.

    Raises:
      ValueError: only one of ``low`` and ``high`` is given.
    """
    xp, x, dtype, low, high = _fit_or_apply(
        "normalize", x, (low, high), ("low", "high"),
        lambda xp, x: (xp.min(x, axis=axis, keepdims=True), xp.max(x, axis=axis, keepdims=True)))
    scale = high - low
    scale = xp.where(scale > 0, scale, xp.ones_like(scale))
    return ((x - low) / scale).astype(dtype, copy=False), low, high
