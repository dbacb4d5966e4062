"""Trace-time argument checks shared by the ops and their reference twins.

Every check runs on static shapes and dtypes (never on traced values), and raises
``ValueError`` for shapes/ranks and ``TypeError`` for dtypes with a message of the form
``"<fn>: <arg> has shape (4,), expected (3,)"``.
"""
from __future__ import annotations

from typing import Iterable

import jax.numpy as jnp
import numpy as np


def shape_of(x) -> tuple:
    return tuple(np.shape(x))


def check_array(fn: str, name: str, x) -> None:
    """``x`` must be an array-like with a dtype (not a list of arrays or None)."""
    if x is None or not hasattr(x, "dtype") and not isinstance(x, (int, float, np.number)):
        raise TypeError(f"{fn}: {name} must be an array, got {type(x).__name__}")


def check_float(fn: str, name: str, x) -> None:
    check_array(fn, name, x)
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(
            f"{fn}: {name} must have a floating dtype, got {jnp.result_type(x)} "
            f"with shape {shape_of(x)}")


def check_int(fn: str, name: str, x) -> None:
    check_array(fn, name, x)
    if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
        raise TypeError(
            f"{fn}: {name} must have an integer dtype (class indices), got "
            f"{jnp.result_type(x)} with shape {shape_of(x)}")


def check_rank(fn: str, name: str, x, ranks: int | Iterable[int]) -> None:
    ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
    if np.ndim(x) not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(
            f"{fn}: {name} must have rank {want}, got rank {np.ndim(x)} with shape {shape_of(x)}")


def check_min_rank(fn: str, name: str, x, rank: int) -> None:
    if np.ndim(x) < rank:
        raise ValueError(
            f"{fn}: {name} must have rank >= {rank}, got shape {shape_of(x)}")


def check_shape(fn: str, name: str, x, expected: tuple, why: str = "") -> None:
    if shape_of(x) != tuple(expected):
        extra = f" ({why})" if why else ""
        raise ValueError(f"{fn}: {name} has shape {shape_of(x)}, expected {tuple(expected)}{extra}")


def check_same_shape(fn: str, a_name: str, a, b_name: str, b) -> None:
    if shape_of(a) != shape_of(b):
        raise ValueError(
            f"{fn}: {a_name} has shape {shape_of(a)} but {b_name} has shape {shape_of(b)}; "
            "they must match (no broadcasting)")


def check_same_dtype(fn: str, a_name: str, a, b_name: str, b) -> None:
    if jnp.result_type(a) != jnp.result_type(b):
        raise TypeError(
            f"{fn}: {a_name} has dtype {jnp.result_type(a)} but {b_name} has dtype "
            f"{jnp.result_type(b)}; cast one of them explicitly")


def check_axis(fn: str, axis: int, ndim: int) -> int:
    if not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{fn}: axis must be a Python int, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{fn}: axis {axis} is out of range for an input of rank {ndim}")
    return int(axis) % ndim


def check_static_float(fn: str, name: str, value, low=None, high=None,
                       low_inclusive=True, high_inclusive=False) -> float:
    """A Python number hyperparameter (eps, margin, rate) inside an interval."""
    if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{fn}: {name} must be a Python float, got {type(value).__name__}")
    v = float(value)
    bad = (low is not None and (v < low if low_inclusive else v <= low)) or (
        high is not None and (v > high if high_inclusive else v >= high))
    if bad:
        lo = "[" if low_inclusive else "("
        hi = "]" if high_inclusive else ")"
        raise ValueError(f"{fn}: {name} must be in {lo}{low}, {high}{hi}, got {v}")
    return v


def expand_leading(v, ndim: int):
    """Reshape ``v`` to rank ``ndim`` by adding leading unit axes (explicit broadcasting).

    funcnet never relies on implicit rank promotion, so its ops work under
    ``jax_numpy_rank_promotion="raise"``: ``x + expand_leading(b, x.ndim)``.
    """
    return v.reshape((1,) * (ndim - v.ndim) + tuple(v.shape))
