"""``reference_mode()``: run every funcnet op as its plain-JAX twin (forward mode works).

Every public op of :mod:`funcnet.ops` is wrapped by :func:`has_twin`. Outside
``reference_mode`` the wrapper calls the op (a ``jax.custom_vjp`` with a hand-written
backward rule); inside, it calls the twin of the same name in
:mod:`funcnet.ops.reference`, which is ordinary JAX code, so ``jax.jvp``, ``jax.jacfwd``,
``jax.linearize`` and ``jax.hessian`` work on any model built from funcnet layers.

The switch is read when a function is *traced*. A function jitted and traced inside the
context keeps the reference computation in its compiled cache (its values and gradients
are still correct outside the context, only not the hand-written rules); to get the
custom rules back, trace it again outside (e.g. ``jax.jit`` a fresh function).
"""
from __future__ import annotations

import contextlib
import functools
import threading

__all__ = ["has_twin", "is_reference_mode", "reference_mode"]

_STATE = threading.local()


def is_reference_mode() -> bool:
    """True inside :func:`reference_mode` (in this thread)."""
    return getattr(_STATE, "depth", 0) > 0


@contextlib.contextmanager
def reference_mode():
    """Context manager: inside it every funcnet op runs its reference twin.

    Example::

        with funcnet.ops.reference_mode():
            y, y_dot = jax.jvp(lambda p: model.apply(p, state, x)[0], (params,), (tangent,))

    Nests, and is per thread. See the module docstring for how it interacts with
    ``jax.jit``'s cache.
    """
    _STATE.depth = getattr(_STATE, "depth", 0) + 1
    try:
        yield
    finally:
        _STATE.depth -= 1


def has_twin(op):
    """Decorator for a public op: dispatch to ``funcnet.ops.reference.<op.__name__>``
    inside :func:`reference_mode`. The twin must have the same name and signature."""
    name = op.__name__

    @functools.wraps(op)
    def dispatch(*args, **kwargs):
        if is_reference_mode():
            from funcnet.ops import reference  # the twins import the ops' checks: import late
            return getattr(reference, name)(*args, **kwargs)
        return op(*args, **kwargs)

    return dispatch
