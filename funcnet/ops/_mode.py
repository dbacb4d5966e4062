"""``reference_mode()``: run every funcnet op as its plain-JAX twin (forward mode works).

Every public op of :mod:`funcnet.ops` is wrapped by :func:`has_twin`. Outside
``reference_mode`` the wrapper calls the op (a ``jax.custom_vjp`` with a hand-written
backward rule); inside, it calls the twin of the same name in
:mod:`funcnet.ops.reference`, which is ordinary JAX code.

Which transformations work where:

* everywhere: reverse mode (``jax.grad``, ``jax.vjp``, ``jax.jacrev``), ``jax.vmap``
  (per-example gradients), ``jax.jit``, and second order built on reverse mode:
  ``jax.hessian`` (``jacfwd`` of ``jacrev``) and ``jax.jvp`` of ``jax.grad`` (the
  hand-written backward rules are plain JAX, so they have a forward-mode derivative);
* only inside ``reference_mode``: forward mode on the function itself (``jax.jvp``,
  ``jax.jacfwd``, ``jax.linearize``, ``jax.hessian`` of a ``jvp``); outside, JAX raises
  ``can't apply forward-mode autodiff (jvp) to a custom_vjp function``.

The switch is part of JAX's trace context (a JAX configuration state, like
``jax.numpy_rank_promotion``): ``jax.jit`` retraces a function when it is called inside
the context after a call outside it, and the other way round. So a function jitted outside
can be differentiated in forward mode inside, and a function traced inside still runs the
hand-written rules when called outside later (each mode has its own cache entry). On a
JAX without that (private) hook the switch falls back to a thread-local flag read at trace
time only; :func:`reference_mode_is_traced` says which.
"""
from __future__ import annotations

import contextlib
import functools
import threading

__all__ = ["has_twin", "is_reference_mode", "reference_mode", "reference_mode_is_traced"]

_NAME = "funcnet_reference_mode"


def _jax_state():
    """A JAX configuration state in the jit key and trace context, or None."""
    try:
        from jax._src import config as jax_config
        state = jax_config.config_states.get(_NAME)
        if state is None:
            state = jax_config.bool_state(
                name=_NAME, default=False,
                help="Run every funcnet op as its plain-JAX reference twin.",
                include_in_jit_key=True, include_in_trace_context=True)
        state.value  # noqa: B018 - fails early on an incompatible State
        return state
    except Exception:  # noqa: BLE001 - any JAX without the hook: fall back
        return None


_STATE = _jax_state()
_LOCAL = threading.local()


def reference_mode_is_traced() -> bool:
    """True when the switch is part of JAX's trace context (see the module docstring)."""
    return _STATE is not None


def is_reference_mode() -> bool:
    """True inside :func:`reference_mode` (in this thread)."""
    if _STATE is not None:
        return _STATE.value
    return getattr(_LOCAL, "depth", 0) > 0


@contextlib.contextmanager
def reference_mode():
    """Context manager: inside it every funcnet op runs its reference twin.

    Example::

        with funcnet.ops.reference_mode():
            y, y_dot = jax.jvp(lambda p: model.apply(p, state, x)[0], (params,), (tangent,))

    Nests, and is per thread. Values equal the custom-rule ops' (same forward maths);
    derivatives come from JAX's autodiff of the twins, which the test suite proves equal
    to the hand-written rules. See the module docstring for what works where.
    """
    if _STATE is not None:
        with _STATE(True):
            yield
        return
    _LOCAL.depth = getattr(_LOCAL, "depth", 0) + 1
    try:
        yield
    finally:
        _LOCAL.depth -= 1


_TRANSFORMS = """
    Transformations: reverse mode, ``jax.vmap``, ``jax.jit``, ``jax.hessian`` and ``jax.jvp``
    of ``jax.grad`` work everywhere; forward mode on the op itself (``jax.jvp``,
    ``jax.jacfwd``, ``jax.linearize``) inside :func:`funcnet.ops.reference_mode`, which
    runs the plain-JAX twin ``funcnet.ops.reference.{name}``.
"""


def has_twin(op):
    """Decorator for a public op: dispatch to ``funcnet.ops.reference.<op.__name__>``
    inside :func:`reference_mode`. The twin must have the same name and signature.

    Adds the "Transformations" paragraph to the op's docstring.
    """
    name = op.__name__

    @functools.wraps(op)
    def dispatch(*args, **kwargs):
        if is_reference_mode():
            from funcnet.ops import reference  # the twins import the ops' checks: import late
            return getattr(reference, name)(*args, **kwargs)
        return op(*args, **kwargs)

    dispatch.__doc__ = (op.__doc__ or "").rstrip() + "\n" + _TRANSFORMS.format(name=name)
    return dispatch
