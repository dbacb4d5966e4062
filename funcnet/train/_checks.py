"""Trace-free argument checks shared by ``fit`` and ``evaluate`` (messages name the argument)."""
from __future__ import annotations

import jax
import numpy as np

from funcnet.nn import Layer
from funcnet.optim import Optimizer


def check_model(fn: str, model) -> None:
    if not isinstance(model, Layer):
        raise TypeError(f"{fn}: model must be a funcnet.nn.Layer (init, apply), got "
                        f"{type(model).__name__}")


def check_optimizer(fn: str, opt) -> None:
    if not (hasattr(opt, "init") and hasattr(opt, "update")) or isinstance(opt, Layer):
        raise TypeError(f"{fn}: opt must be an optimizer with init(params) and "
                        f"update(grads, state, params), e.g. funcnet.optim.adam(1e-3); got "
                        f"{type(opt).__name__}")


def check_loss_fn(fn: str, loss_fn) -> None:
    if not callable(loss_fn):
        raise TypeError(f"{fn}: loss_fn must be callable loss_fn(logits, labels) -> scalar, "
                        f"got {type(loss_fn).__name__}")


def check_positive_int(fn: str, what: str, value, *, allow_zero: bool = False) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < (0 if allow_zero else 1):
        bound = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{fn}: {what} must be {bound} int, got {value!r}")
    return int(value)


def check_data(fn: str, what: str, data) -> tuple:
    """``data`` must be a pair ``(x, y)`` of arrays with the same number of rows."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{fn}: {what} must be a pair (x, y) of arrays, got "
                        f"{type(data).__name__}" +
                        (f" of length {len(data)}" if isinstance(data, (tuple, list)) else ""))
    x, y = data
    for name, a in (("x", x), ("y", y)):
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            raise TypeError(f"{fn}: {what} {name} must be an array (NumPy or jax), got "
                            f"{type(a).__name__}")
        if len(a.shape) < 1:
            raise ValueError(f"{fn}: {what} {name} must have a leading batch axis, got "
                             f"shape {tuple(a.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{fn}: {what} x has {x.shape[0]} rows but y has {y.shape[0]} "
                         f"(shapes {tuple(x.shape)} and {tuple(y.shape)})")
    if x.shape[0] == 0:
        raise ValueError(f"{fn}: {what} is empty (x has shape {tuple(x.shape)})")
    return x, y


def check_key(fn: str, key):
    """A raw ``uint32[2]`` key (``jax.random.PRNGKey``) or a typed key (``jax.random.key``)."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.PRNGKey(int(key))
    if hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{fn}: key must be a single PRNG key, got shape {key.shape}")
        return key
    if not hasattr(key, "shape") or tuple(key.shape) != (2,) or np.dtype(key.dtype) != np.uint32:
        raise TypeError(f"{fn}: key must be a PRNG key (jax.random.PRNGKey(0) or "
                        f"jax.random.key(0)) or an int seed, got "
                        f"{getattr(key, 'dtype', type(key).__name__)} with shape "
                        f"{getattr(key, 'shape', None)}")
    return key


def check_manager(fn: str, manager) -> None:
    missing = [m for m in ("save", "restore", "latest_step") if not callable(getattr(manager, m, None))]
    if missing:
        raise TypeError(f"{fn}: checkpoint must be a checkpoint manager with save(step, tree), "
                        f"restore(step=None, like=None) and latest_step() (e.g. "
                        f"funcnet.checkpoint.CheckpointManager(dir)); "
                        f"{type(manager).__name__} lacks {', '.join(missing)}")
