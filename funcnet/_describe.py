"""How an optimizer, a schedule or a layer was built, as text: the call that built it,
e.g. ``"adam(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-08, ...)"`` or
``"MultiHeadAttention(num_heads=4, ..., causal=True, rope=True)"``.

Every public factory of :mod:`funcnet.optim` (named optimizers, blocks, combinators,
wrappers, schedules) and of :mod:`funcnet.nn` (layers and combinators) is
:func:`described`: what it returns records the call that made it, every argument bound to
the factory's signature with its defaults. An optimizer, schedule or layer given as an
argument (``chain``'s blocks, ``Residual``'s layer) appears as its own description, so
the text of a whole model or optimizer holds every setting.

``fit`` stores the texts of the model and the optimizer in its run fingerprint: resuming a
run with other hyperparameters or another layer setting (``rope=True``, a dropout rate)
is refused even where the trees of params and optimizer state are the same. The text is
the same in every process and session: numbers by ``repr`` (a NumPy scalar in its own
dtype's shortest form), dtypes by name, functions by qualified name, arrays by shape and
dtype (not their values), PRNG keys by shape, traced values (built inside ``jit``/``vmap``)
as ``traced``.
"""
from __future__ import annotations

import functools
import inspect
import weakref
from typing import Callable

import jax
import numpy as np

__all__ = ["describe", "described", "describe_value", "call_text"]

# texts of objects that take no attribute (a Layer is a NamedTuple): keyed by the
# object's function that identifies it (a layer's ``init``), kept as long as it lives
_BY_FUNCTION: "weakref.WeakKeyDictionary[Callable, str]" = weakref.WeakKeyDictionary()
_KEY_FIELD = "init"


def describe(obj) -> str | None:
    """The text of the call that built ``obj`` (a funcnet optimizer, ``MultiSteps``,
    schedule or layer); ``None`` for one funcnet did not build (optax's optimizers: their
    hyperparameters are in closures it cannot read; a hand-written layer)."""
    text = getattr(obj, "_description", None)
    if text is None and isinstance(obj, tuple):
        key = getattr(obj, _KEY_FIELD, None)
        try:
            text = _BY_FUNCTION.get(key) if key is not None else None
        except TypeError:            # not weak-referenceable
            text = None
    return text


def _record(obj, text: str) -> None:
    if isinstance(obj, tuple):       # a NamedTuple (a Layer, an optimizer)
        key = getattr(obj, _KEY_FIELD, None)
        if key is not None and not hasattr(obj, "__dict__"):
            try:
                _BY_FUNCTION[key] = text
            except TypeError:
                pass
            return
    try:
        obj._description = text
    except (AttributeError, TypeError):
        pass


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
        items = (f"{k!r}: {describe_value(v[k])}" for k in sorted(v, key=str))
        return "{" + ", ".join(items) + "}"
    if isinstance(v, tuple) and hasattr(v, "_fields") and hasattr(v, "name"):
        return str(v.name)           # a layer funcnet did not build: its display name
    if isinstance(v, (list, tuple)):
        inner = ", ".join(describe_value(a) for a in v)
        return f"[{inner}]" if isinstance(v, list) else f"({inner})"
    if isinstance(v, functools.partial):
        parts = [describe_value(v.func), *map(describe_value, v.args),
                 *(f"{k}={describe_value(a)}" for k, a in sorted(v.keywords.items()))]
        return f"partial({', '.join(parts)})"
    if callable(v):
        f = v if hasattr(v, "__qualname__") else type(v)
        return f"{getattr(f, '__module__', '?')}.{f.__qualname__}"
    return type(v).__name__


def call_text(name: str, signature: inspect.Signature, args: tuple, kwargs: dict,
              added: tuple = ()) -> str:
    """``name(a=..., b=...)`` of a call, its arguments bound with their defaults; an
    argument named in ``added`` is left out while it has its default value."""
    try:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        items = [f"{k}={describe_value(v)}" for k, v in bound.arguments.items()
                 if not (k in added and _is_default(signature, k, v))]
    except TypeError:
        items = [*map(describe_value, args),
                 *(f"{k}={describe_value(v)}" for k, v in kwargs.items())]
    return f"{name}({', '.join(items)})"


def _is_default(signature: inspect.Signature, name: str, value) -> bool:
    return describe_value(value) == describe_value(signature.parameters[name].default)


def described(fn: Callable | None = None, *, added: tuple = ()) -> Callable:
    """Decorator of a public factory: its result (an optimizer, a schedule function or a
    layer) records the call that made it; the outermost factory's text wins (``adam``
    over the ``chain`` it returns).

    ``added`` names the arguments a factory gained after its text first went into run
    fingerprints (``Conv2D``'s ``dilation`` and ``groups``): at their default (the old
    behaviour) they are left out of the text, so a run checkpointed before them still
    resumes; any other value is written, so a run cannot resume under another setting.
    ``@described`` or ``@described(added=("dilation", "groups"))``."""
    if fn is None:
        return functools.partial(described, added=tuple(added))
    signature = inspect.signature(fn)
    for name in added:
        if signature.parameters.get(name, inspect.Parameter.empty) is inspect.Parameter.empty \
                or signature.parameters[name].default is inspect.Parameter.empty:
            raise TypeError(f"described: {fn.__name__} has no argument {name!r} with a default")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        if isinstance(out, tuple) or inspect.isfunction(out):
            _record(out, call_text(fn.__name__, signature, args, kwargs, added))
        return out

    return wrapper
