"""How an optimizer was built, as text: ``describe(opt)`` -> ``"adam(learning_rate=0.001,
b1=0.9, b2=0.999, eps=1e-08, eps_root=0.0, mu_dtype=None, nesterov=False)"``.

Every public factory of :mod:`funcnet.optim` (named optimizers, blocks, combinators,
wrappers, schedules) is :func:`described`: the optimizer (or schedule) it returns records
the call that made it, every argument bound to the factory's signature with its defaults.
An optimizer given as an argument (``chain``'s blocks, ``MultiSteps``' inner optimizer)
and a schedule appear as their own descriptions, so the text of ``chain(clip_by_global_norm
(1.0), adamw(warmup_cosine_decay_schedule(...)))`` holds every hyperparameter.

``fit`` stores the description in its run fingerprint: resuming a run with another
optimizer or other hyperparameters is refused even when the optimizer state has the same
tree (``adam`` and ``adamax`` both keep optax's ``ScaleByAdamState``). The text is the
same in every process and every session: numbers by ``repr``, dtypes by name, functions
by qualified name, arrays by shape and dtype (not their values), traced values (an
optimizer built inside ``jit``/``vmap``) as ``traced``.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable

import jax
import numpy as np

from funcnet.optim.base import Optimizer

__all__ = ["describe", "described", "describe_value", "call_text"]


def describe(opt) -> str | None:
    """The text of the call that built ``opt`` (a funcnet optimizer, ``MultiSteps`` or
    schedule); ``None`` for one funcnet did not build (optax's: its hyperparameters are
    in closures it cannot read)."""
    return getattr(opt, "_description", None)


def describe_value(v) -> str:
    """A hyperparameter as stable text (module docstring)."""
    text = describe(v)
    if text is not None:
        return text
    if v is None or isinstance(v, (bool, int, str)):
        return repr(v)
    if isinstance(v, float):
        return repr(float(v))
    if isinstance(v, jax.core.Tracer):
        return "traced"
    if isinstance(v, jax.Array) and jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key):
        return f"key{list(v.shape)}"                  # a PRNG key: not its bits
    if isinstance(v, (np.ndarray, np.generic, jax.Array)):
        if np.ndim(v) == 0:       # shortest text of its own dtype: float32 0.003 -> 0.003
            return str(np.asarray(v)[()])
        return f"array({np.dtype(v.dtype).name}{list(np.shape(v))})"
    if isinstance(v, (np.dtype, type)):
        try:
            return np.dtype(v).name
        except TypeError:
            pass
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k!r}: {describe_value(v[k])}" for k in sorted(v, key=str)) + "}"
    if isinstance(v, (list, tuple)):
        inner = ", ".join(describe_value(a) for a in v)
        return f"[{inner}]" if isinstance(v, list) else f"({inner})"
    if isinstance(v, functools.partial):
        return f"partial({', '.join([describe_value(v.func), *map(describe_value, v.args)])})"
    if callable(v):
        f = v if hasattr(v, "__qualname__") else type(v)
        return f"{getattr(f, '__module__', '?')}.{f.__qualname__}"
    return type(v).__name__


def call_text(name: str, signature: inspect.Signature, args: tuple, kwargs: dict) -> str:
    """``name(a=..., b=...)`` of a call, its arguments bound with their defaults."""
    try:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        items = [f"{k}={describe_value(v)}" for k, v in bound.arguments.items()]
    except TypeError:
        items = [*map(describe_value, args), *(f"{k}={describe_value(v)}" for k, v in kwargs.items())]
    return f"{name}({', '.join(items)})"


def described(fn: Callable) -> Callable:
    """Decorator of a public factory: its result (an :class:`Optimizer` or a schedule
    function) records the call that made it; the outermost factory's text wins (``adam``
    over the ``chain`` it returns)."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        if isinstance(out, Optimizer) or inspect.isfunction(out):
            out._description = call_text(fn.__name__, signature, args, kwargs)
        return out

    return wrapper
