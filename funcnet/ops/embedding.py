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
from funcnet.ops._arrays import as_array, flat
from funcnet.ops._labels import valid_labels
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp, explicit_sharding, gather_sharding

__all__ = ["embedding"]


def check_embedding_args(fn, ids, table):
    """Checks of ``embedding`` and its twin; returns ``(ids, table)`` as arrays, ``ids``
    as int32/int64 (:func:`funcnet._checks.as_indices`: small dtypes are widened so
    that the out-of-range marker ``V`` fits, and no cast wraps a bad id into ``[0, V)``)."""
    _checks.check_integer(fn, "ids", ids, "token ids; cast float ids with .astype(int)")
    _checks.check_float(fn, "table", table)
    _checks.check_rank(fn, "table", table, 2, "(V, F)")
    shape = _checks.shape_of(table)
    _checks.check_nonempty(fn, "table", table, "at least one row (V >= 1) to look ids up in",
                           (0,))
    _checks.check_index_range(fn, "ids", ids, shape[0],
                              f"ids in [0, {shape[0]}) for a table of shape {shape}")
    return _checks.as_indices(ids, shape[0]), as_array(table)


def embedding_forward(ids, table):
    """``table[ids]`` with NaN rows where an id is outside ``[0, V)``.

    On a mesh with ``Explicit`` axes the gather is told its result's sharding, which JAX
    cannot infer: split like ``ids``, the features like ``table``'s."""
    ok = valid_labels(ids, table.shape[0])
    idx = jnp.where(ok, ids, 0)
    sharding = gather_sharding(table, idx)
    rows = (jnp.take(table, idx, axis=0) if sharding is None
            else table.at[idx].get(out_sharding=sharding))
    return jnp.where(ok[..., None], rows, jnp.full((), jnp.nan, table.dtype))


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _embedding(ids, table, num_embeddings, sharding):
    del num_embeddings, sharding
    return embedding_forward(ids, table)


def _embedding_fwd(ids, table, num_embeddings, sharding):
    del num_embeddings, sharding
    return embedding_forward(ids, table), ids


def _embedding_bwd(num_embeddings, sharding, ids, g):
    # Out-of-range ids (forward gave NaN) are sent to row V and dropped by the scatter;
    # ids are int32/int64 (check_embedding_args), so V fits. ``sharding``: the table's on
    # a mesh with Explicit axes, where the ids (maybe time-major, (T, N) with N split)
    # are not flattened and the scatter is told its result's layout.
    rows = jnp.where(valid_labels(ids, num_embeddings), ids, num_embeddings)
    if sharding is None:
        rows = rows.reshape(-1)
    dtable = jnp.zeros((num_embeddings, g.shape[-1]), g.dtype).at[rows].add(
        g if sharding is not None else flat(g), mode="drop", out_sharding=sharding)
    return None, dtable


defvjp(_embedding, _embedding_fwd, _embedding_bwd)


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

    Ids of any integer dtype work (int8/uint8/int16 ids with ``V`` beyond their range, and
    uint64 ids, included: they are widened or clipped to int32/int64 first, so the
    out-of-range rule holds); a Python int id gives one row ``(F,)``, as ``jnp.take``.

    Args:
      ids: integer array of any shape, or a Python int (token ids), values in ``[0, V)``.
      table: ``(V, F)`` floating array, ``V >= 1`` (``F = 0`` works).

    Returns:
      ``(*ids.shape, F)`` array of ``table``'s dtype.

    Raises:
      TypeError: non-integer ``ids`` (float or bool), non-floating ``table``.
      ValueError: ``table`` not of rank 2 or with no row (``V = 0``, also under ``jit``);
        concrete ``ids`` outside ``[0, V)``.

    References:
      Bengio et al. (2003), "A Neural Probabilistic Language Model", JMLR 3 (learned
      word feature vectors). ``docs/formulas.md``, "Beyond the notes".
    """
    ids, table = check_embedding_args("embedding", ids, table)
    return _embedding(ids, table, table.shape[0], explicit_sharding(table))
