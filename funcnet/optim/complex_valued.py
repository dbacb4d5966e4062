"""Complex parameters as pairs of real ones (``optax.contrib``'s
``split_real_and_imaginary``), with optax 0.2.8's names and states.

JAX's gradient of a real loss with respect to a complex parameter is the conjugate of the
steepest-ascent direction: conjugate it (``jax.tree.map(jnp.conj, grads)``) before
``update``, as optax's documentation says.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from funcnet import _checks
from funcnet.optim.base import check_state, optimizer
from funcnet.optim.combine import call_update
from funcnet._describe import described


class SplitRealAndImaginaryArrays(NamedTuple):
    """optax's pair of real arrays split from one complex array."""

    real: Any
    imaginary: Any


class SplitRealAndImaginaryState(NamedTuple):
    """optax's ``SplitRealAndImaginaryState``: the inner optimizer's state, over the
    split tree."""

    inner_state: Any


def _split(x):
    """A complex leaf as its (real, imaginary) pair; any other leaf as it is."""
    if x is not None and jnp.iscomplexobj(x):
        return SplitRealAndImaginaryArrays(jnp.real(x), jnp.imag(x))
    return x


def _merge(x):
    """The complex array of a pair (``lax.complex``: exact, also for infinities)."""
    return lax.complex(x.real, x.imaginary) if isinstance(x, SplitRealAndImaginaryArrays) \
        else x


@described
def split_real_and_imaginary(inner):
    """Run ``inner`` on the real and imaginary parts of complex leaves as two real leaves
    (optax's ``split_real_and_imaginary``): ``z = a + ib`` becomes the pair ``(a, b)``
    for ``inner``'s ``init`` and ``update``, and the pair of updates ``(u_a, u_b)`` is
    returned as ``u_a + i u_b``. Real leaves pass through unchanged. So Adam's second
    moment of ``z`` is kept per part (``a`` and ``b`` separately), not of ``|g|^2``.

    Args:
      inner: an optimizer (funcnet's or optax's) for real parameters.

    Returns:
      An ``Optimizer`` with state :class:`SplitRealAndImaginaryState`.

    Raises:
      TypeError: ``inner`` is not an optimizer.
    """
    fn = "split_real_and_imaginary"
    _checks.check_optimizer(fn, "inner", inner)

    def split(tree):
        return jax.tree_util.tree_map(_split, tree)

    def init(params):
        with _checks.context(fn):
            return SplitRealAndImaginaryState(inner.init(split(params)))

    def update(updates, state, params=None, **extra_args):
        check_state(fn, state, SplitRealAndImaginaryState)
        with _checks.context(fn):
            out, inner_state = call_update(inner, split(updates), state.inner_state,
                                           None if params is None else split(params),
                                           extra_args)
        merged = jax.tree_util.tree_map(
            _merge, out, is_leaf=lambda x: isinstance(x, SplitRealAndImaginaryArrays))
        return merged, SplitRealAndImaginaryState(inner_state)

    return optimizer(init, update)
