"""Embedding lookup with a scatter-add backward rule (beyond the notes).

``embedding(ids, table)`` is ``table[ids]``; its backward rule adds each output row's
cotangent into the row of the table it came from, so repeated ids accumulate. Ids must
lie in ``[0, V)``: an eager call with concrete ids checks that and raises; under ``jit``
(ids unknown at trace time) an out-of-range id, negative ones included, gives a row of
NaN and no gradient (see :func:`embedding`).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._labels import valid_labels
from funcnet.ops._mode import has_twin

__all__ = ["embedding"]


def check_embedding_args(fn, ids, table) -> int:
    """Checks of ``embedding`` and its twin; returns ``V`` (the number of rows)."""
    _checks.check_integer(fn, "ids", ids, "token ids; cast float ids with .astype(int)")
    _checks.check_float(fn, "table", table)
    _checks.check_rank(fn, "table", table, 2, "(V, F)")
    v = _checks.shape_of(table)[0]
    _checks.check_index_range(fn, "ids", ids, v, f"ids in [0, {v}) for a table of shape "
                                                 f"{_checks.shape_of(table)}")
    return v


def embedding_forward(ids, table):
    """``table[ids]`` with NaN rows where an id is outside ``[0, V)``."""
    ok = valid_labels(ids, table.shape[0])
    rows = jnp.take(table, jnp.where(ok, ids, 0), axis=0)
    return jnp.where(ok[..., None], rows, jnp.full((), jnp.nan, table.dtype))


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _embedding(ids, table, num_embeddings):
    del num_embeddings
    return embedding_forward(ids, table)


def _embedding_fwd(ids, table, num_embeddings):
    del num_embeddings
    return embedding_forward(ids, table), ids


def _embedding_bwd(num_embeddings, ids, g):
    f = g.shape[-1]
    # Out-of-range ids (forward gave NaN) are sent to row V and dropped by the scatter.
    rows = jnp.where(valid_labels(ids, num_embeddings), ids, num_embeddings).reshape(-1)
    dtable = jnp.zeros((num_embeddings, f), g.dtype).at[rows].add(
        g.reshape(-1, f), mode="drop")
    return None, dtable


_embedding.defvjp(_embedding_fwd, _embedding_bwd)


@has_twin
def embedding(ids, table):
    """Embedding lookup ``y[..., :] = table[ids[...], :]``.

    Backward, a scatter-add into the table (``ids`` get no cotangent)::

        dtable[v, :] = sum over positions p with ids[p] = v of dy[p, :]

    so an id that occurs ``k`` times receives the sum of its ``k`` cotangents, and rows
    of ids that never occur get 0. Residual: ``ids`` only (integers; the table is not
    kept).

    Out-of-range ids: an eager call with concrete ``ids`` (``funcnet._checks.concrete``)
    raises ``ValueError`` for any id outside ``[0, V)``. Under ``jax.jit``/``vmap``/
    ``grad`` the ids are unknown at trace time, so funcnet does not clip them (which
    would silently train the wrong row) nor wrap negative ids Python-style (as
    ``jnp.take`` does): such a position gets a row of NaN, which surfaces in the loss,
    and contributes nothing to ``dtable``. (``jnp.take``'s default ``mode="fill"`` also
    gives NaN above ``V``, but treats ``-1`` as the last row.)

    Args:
      ids: integer array of any shape (token ids), values in ``[0, V)``.
      table: ``(V, F)`` floating array.

    Returns:
      ``(*ids.shape, F)`` array of ``table``'s dtype.

    Raises:
      TypeError: non-integer ``ids`` (float or bool), non-floating ``table``.
      ValueError: ``table`` not of rank 2; concrete ``ids`` outside ``[0, V)``.

    References:
      Bengio et al. (2003), "A Neural Probabilistic Language Model", JMLR 3 (learned
      word feature vectors). ``docs/formulas.md``, "Beyond the notes".
    """
    v = check_embedding_args("embedding", ids, table)
    return _embedding(ids, table, v)
