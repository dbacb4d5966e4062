"""Helpers shared by the round-6 ports of ``optax.contrib`` (:mod:`.contrib_distance`,
:mod:`.contrib_betting`, :mod:`.contrib_dual`, :mod:`.contrib_momo`,
:mod:`.contrib_acprop`) and the line searches: tree inner products and sums in optax's
order, the ``value=`` check, the chains these optimizers are built from, and the scalar
arithmetic that keeps a state's dtypes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.adaptive_contrib import _vdot
from funcnet.optim.base import promote_dtypes
from funcnet.optim.combine import chain

__all__ = ["tree_vdot", "tree_l1", "check_value", "chain_under", "times"]


def _sum(xs, dtype=None):
    """``0 + x_1 + x_2 + ...`` leaf after leaf (optax's ``tree.reduce`` order), in the
    promoted dtype of the terms (``dtype`` for no term)."""
    xs = list(xs)
    if not xs:
        return jnp.zeros((), dtype if dtype is not None else float)
    dt = promote_dtypes(*[x.dtype for x in xs])
    total = xs[0].astype(dt)
    for x in xs[1:]:
        total = total + x.astype(dt)
    return total


def tree_vdot(a, b):
    """optax's ``tree.vdot(a, b)``: ``sum over leaves of sum(conj(a) b)``, leaf after
    leaf, each leaf's product in the promoted dtype of the pair (a Python number as an
    array, as optax takes it)."""
    def one(x, y):
        x, y = jnp.asarray(x), jnp.asarray(y)
        dt = promote_dtypes(x.dtype, y.dtype)
        return _vdot(x.astype(dt), y.astype(dt))
    return _sum(one(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                          jax.tree_util.tree_leaves(b)))


def tree_l1(tree):
    """``sum over leaves of sum(|x|)`` (optax's ``tree.sum(tree.map(abs, t))``)."""
    return _sum(jnp.sum(jnp.abs(x)) for x in jax.tree_util.tree_leaves(tree))


def check_value(fn: str, value) -> None:
    """``update(..., value=loss)`` is required (``TypeError`` otherwise), as for
    :func:`~funcnet.optim.polyak_sgd` and :func:`~funcnet.optim.reduce_on_plateau`
    (optax raises ``ValueError`` or a missing-argument ``TypeError``)."""
    if value is None:
        raise TypeError(f"{fn}: update needs value= (the loss; funcnet.train's step "
                        f"passes it)")


def chain_under(name: str, *blocks):
    """``chain(*(b() for b in blocks), name=name)``, the blocks built (and validated)
    under ``name`` (their errors read ``"<name>: <block>: ..."``)."""
    with _checks.context(name):
        return chain(*[b() for b in blocks], name=name)


def times(a, x: jax.Array) -> jax.Array:
    """``a * x`` in the promoted dtype of the two (a scalar step times a leaf)."""
    a = jnp.asarray(a)
    dt = promote_dtypes(a.dtype, x.dtype)
    return a.astype(dt) * x.astype(dt)
