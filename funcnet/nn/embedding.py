"""Embedding layer: integer token ids of any shape -> feature vectors.

References:
  Bengio, Ducharme, Vincent & Jauvin (2003), "A Neural Probabilistic Language Model",
  JMLR 3.
"""
from __future__ import annotations

import jax.numpy as jnp

from funcnet import _checks, ops
from funcnet.nn import initializers
from funcnet.nn.base import (Layer, check_dtype, check_input_shape, check_no_params,
                             check_params, check_weight_args, init_checked)
from funcnet._describe import described

__all__ = ["Embedding"]


@described
def Embedding(num_embeddings: int, features: int, *, embedding_init=None,
              dtype=None) -> Layer:
    """Lookup table ``y[..., :] = embedding[ids[...], :]`` over integer ids of any shape.

    Runs :func:`funcnet.ops.embedding`, whose backward rule scatter-adds the output
    cotangents into the table (repeated ids accumulate; ids get no gradient). An eager
    call with ids outside ``[0, num_embeddings)`` raises ``ValueError``; under ``jax.jit``
    such a position gives a row of NaN and no gradient (see the op).

    Shapes:
      input: integer ids of any shape, e.g. ``(N, T)`` tokens, time-major ``(T, N)`` or
        ``(N,)`` (rank 0 too); in ``init`` one size, the batch, may be ``-1`` (at any axis).
      output: ``(*ids.shape, features)``, in the table's dtype.
      params: ``{"embedding": (num_embeddings, features)}`` (Flax's name); state ``()``.

    Args:
      num_embeddings: ``V``, the number of rows (vocabulary size), an int >= 1.
      features: ``F``, the size of each vector, an int >= 1.
      embedding_init: initializer of the table; ``None`` (default) draws
        ``N(0, 1/features)``, Flax's ``Embed`` default (``variance_scaling(1.0, "fan_in",
        "normal", out_axis=0)``): unit-norm vectors in expectation. PyTorch draws
        ``N(0, 1)``: pass ``initializers.normal(1.0)``.
      dtype: dtype of the table; ``None`` is JAX's default float dtype. The table is
        not promoted (the input holds integers).

    Returns:
      A :class:`Layer` named ``"Embedding(num_embeddings, features)"``.

    Raises:
      TypeError: at construction, non-int sizes, a non-callable initializer or a
        non-float ``dtype``; in ``apply`` (from the op) non-integer ids.
      ValueError: sizes < 1, a bad ``input_shape``, params of another shape, and (from
        the op, eagerly) ids outside ``[0, num_embeddings)``.

    References:
      Bengio et al. (2003); Flax ``nn.Embed``.
    """
    V = _checks.static_int("Embedding", "num_embeddings", num_embeddings, minimum=1)
    F = _checks.static_int("Embedding", "features", features, minimum=1)
    name = f"Embedding({V}, {F})"
    if embedding_init is None:
        embedding_init = initializers.normal(F ** -0.5)
    check_weight_args(name, dtype, embedding_init=embedding_init)

    def init(key, input_shape):
        # ids have no feature axis: the (one) -1 may be anywhere, e.g. (T, -1)
        # time-major tokens for an LSTM
        shape = check_input_shape(name, key, input_shape, None)
        dt = check_dtype(name, dtype)
        return init_checked(name, apply, lambda k: (
            {"embedding": embedding_init(k, (V, F), dt)}, ()), key, shape, jnp.int32)

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_params(name, "params", params, {"embedding": (V, F)})
        check_no_params(name, (), state)
        with _checks.context(name):
            return ops.embedding(x, params["embedding"]), state

    return Layer(init, apply, name)
