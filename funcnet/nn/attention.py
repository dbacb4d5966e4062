"""Multi-head self-attention layer over :func:`funcnet.ops.dot_product_attention`.

References:
  Vaswani et al. (2017), "Attention Is All You Need", https://arxiv.org/abs/1706.03762.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet import _checks, ops
from funcnet.nn import initializers
from funcnet.nn.base import (Layer, check_dtype, check_input_shape, check_train,
                             check_train_key, check_weight_args, init_checked, is_shape_pair,
                             split_pair, weights_and_input)

__all__ = ["MultiHeadAttention"]

_LAYOUT = "(N, T, F) or one sequence (T, F)"


def MultiHeadAttention(num_heads: int, *, qkv_features: int | None = None,
                       out_features: int | None = None, causal: bool = False,
                       dropout_rate: float = 0.0, use_bias: bool = True,
                       w_init=initializers.xavier_uniform(), b_init=initializers.zeros,
                       dtype=None) -> Layer:
    """Multi-head self-attention: projections, :func:`funcnet.ops.dot_product_attention`,
    output projection.

    For an input ``x`` ``(N, T, F)``, with ``D = qkv_features`` split into
    ``num_heads`` heads of ``D / num_heads``::

        q = x wq + bq,   k = x wk + bk,   v = x wv + bv              (N, T, D) each
        o = dot_product_attention(q, k, v, mask, causal=causal,       per head, scale
                                  dropout_rate=r (train only))        1/sqrt(D/num_heads)
        y = o wo + bo                                                 (N, T, out_features)

    The attention op's backward rule recomputes the probabilities blockwise, so a
    training step keeps ``O(T)`` per head for the attention, not ``T x T``; the
    projections are :func:`funcnet.ops.affine` (:func:`funcnet.ops.matmul` without bias).

    Dropout (``train=True``, ``dropout_rate > 0``) drops attention probabilities, as
    Flax's ``MultiHeadDotProductAttention`` and PyTorch's ``nn.MultiheadAttention`` do:
    the op draws the mask from ``key`` block by block and regenerates it in its backward
    rule, so memory stays ``O(T)``. The mask is drawn independently for every (example,
    head, query, key), as PyTorch does; Flax's default ``broadcast_dropout=True`` shares
    one ``(T, T)`` mask across the batch and the heads (and its bits differ for the same
    key anyway). Add an ``nn.Dropout`` after the layer for the usual residual dropout.

    Shapes:
      input: ``x`` ``(N, T, F)`` or one sequence ``(T, F)``; or a pair ``(x, mask)`` with a
        boolean ``mask`` (``True`` = attend) of rank 4, each axis 1 or the full size of
        ``(N, num_heads, T, T)`` (e.g. ``(N, 1, 1, T)`` for padded keys), or ``(T, T)``;
        for one sequence also rank 3 ``(num_heads or 1, T or 1, T)``, which is what
        ``jax.vmap`` over examples makes of a ``(N, 1, 1, T)`` mask; ``init`` then takes
        the pair of shapes ``((N, T, F), mask_shape)``.
      output: ``(N, T, out_features)`` (or ``(T, out_features)``).
      params: ``{"wq", "wk", "wv": (F, D), "wo": (D, out_features), "bq", "bk", "bv": (D,),
        "bo": (out_features,)}`` (no ``b*`` when ``use_bias=False``); state ``()``.

    Args:
      num_heads: number of heads, an int >= 1.
      qkv_features: ``D``, the width of ``q``, ``k``, ``v``; default ``F``. A multiple of
        ``num_heads``.
      out_features: output width; default ``F``.
      causal: query ``t`` attends keys ``<= t`` only (language models).
      dropout_rate: drop probability in ``[0, 1)`` of the attention probabilities (see
        above; training only).
      use_bias: add the biases of the four projections.
      w_init: initializer of the four kernels; default
        :func:`~funcnet.nn.initializers.xavier_uniform`, drawn for each ``(F, D)`` /
        ``(D, out)`` kernel on its own fans. Close to PyTorch's ``nn.MultiheadAttention``,
        not equal: PyTorch draws xavier_uniform over its packed ``(3D, F)`` in-projection
        (fan_out ``3D``: a bound ``sqrt(2)`` times smaller for ``F = D``) and its
        out-projection as ``nn.Linear`` (``U(+-1/sqrt(D))``); Flax's default is LeCun
        normal truncated at 2 sigma. Any ``jax.nn.initializers`` initializer works.
      b_init: initializer of the biases; default zeros.
      dtype: dtype of the params; ``None`` is JAX's default float dtype. The input and the
        params are promoted to their common dtype.

    Returns:
      A :class:`Layer` named ``"MultiHeadAttention(num_heads)"``; ``apply`` takes ``key=``
      (needed when ``train=True`` and ``dropout_rate > 0``).

    Raises:
      TypeError: at construction, non-int sizes, a non-bool ``causal``/``use_bias``, a
        non-number ``dropout_rate``, a non-callable initializer or a non-float ``dtype``;
        in ``apply`` a non-float input.
      ValueError: at construction ``num_heads < 1``, ``qkv_features`` not a multiple of
        ``num_heads``, ``dropout_rate`` outside ``[0, 1)``; in ``init`` a bad
        ``input_shape`` or ``F`` not a multiple of ``num_heads`` (no ``qkv_features``); in
        ``apply`` params of another shape, a missing ``key`` for dropout, and the op's
        errors (mask shape, input features) prefixed with the layer's name.

    References:
      Vaswani et al. (2017), section 3.2.2; Rabe & Staats (2021); Dao et al. (2022).
    """
    heads = _checks.static_int("MultiHeadAttention", "num_heads", num_heads, minimum=1)
    name = f"MultiHeadAttention({heads})"
    if qkv_features is not None:
        qkv_features = _checks.static_int(name, "qkv_features", qkv_features, minimum=1)
        _check_heads(name, "qkv_features", qkv_features, heads)
    if out_features is not None:
        out_features = _checks.static_int(name, "out_features", out_features, minimum=1)
    causal = _checks.static_bool(name, "causal", causal)
    rate = _checks.static_float(name, "dropout_rate", dropout_rate, 0.0, 1.0,
                                high_inclusive=False)
    check_weight_args(name, dtype, use_bias, w_init=w_init, b_init=b_init)
    projections = ("q", "k", "v", "o")

    def init(key, input_shape):
        paired = is_shape_pair(input_shape)
        x_shape = input_shape[0] if paired else input_shape
        shape = check_input_shape(name, key, x_shape, (2, 3), _LAYOUT, needs=1)
        f = shape[-1]
        d = qkv_features if qkv_features is not None else f
        if qkv_features is None:
            _check_heads(name, f"the input features F={f} (qkv_features=None)", f, heads)
        out = out_features if out_features is not None else f
        dt = check_dtype(name, dtype)

        def make(key):
            keys = jax.random.split(key, 8)
            params = {}
            for i, p in enumerate(projections):
                params[f"w{p}"] = w_init(keys[i], (d, out) if p == "o" else (f, d), dt)
                if use_bias:
                    params[f"b{p}"] = b_init(keys[4 + i], (out,) if p == "o" else (d,), dt)
            return params, ()
        if paired:   # the op checks the mask against x now
            mask = check_input_shape(name, key, input_shape[1], None)
            return init_checked(name, apply, make, key, (shape, mask), (dt, jnp.bool_))
        return init_checked(name, apply, make, key, shape, dt)

    def apply(params, state, x, *, key=None, train=False):
        x, mask = split_pair(name, x, "x", "mask")
        x, params = weights_and_input(name, params, state, x, _shapes(params))
        _checks.check_rank(name, "x", x, (2, 3), _LAYOUT)
        d = params["wq"].shape[1]
        _check_heads(name, "params['wq'].shape[1]", d, heads)
        single = x.ndim == 2
        xb = x[None] if single else x
        if single and mask is not None and jnp.ndim(mask) == 3:
            mask = mask[None]     # one sequence's (heads or 1, T or 1, T): vmap over examples
        n, t = xb.shape[:2]
        drop = rate if check_train(name, train) else 0.0
        if drop > 0.0:
            check_train_key(name, key, f" with dropout_rate={rate:g}")
        with _checks.context(name):
            q, k, v = (_project(xb, params, p).reshape(n, t, heads, d // heads)
                       for p in "qkv")
            o = ops.dot_product_attention(q, k, v, mask, causal=causal, dropout_rate=drop,
                                          dropout_key=key if drop > 0.0 else None)
            y = _project(o.reshape(n, t, d), params, "o")
        return (y[0] if single else y), state

    def _shapes(params):
        """Expected params shapes, sizes read from ``wq``/``wo`` where not fixed."""
        wq = params.get("wq") if isinstance(params, dict) else None
        wo = params.get("wo") if isinstance(params, dict) else None
        fq, dq = (_checks.shape_of(wq) + (None, None))[:2] if wq is not None else (None, None)
        d = qkv_features if qkv_features is not None else dq
        o = out_features if out_features is not None else (
            (_checks.shape_of(wo) + (None, None))[1] if wo is not None else None)
        shapes = {f"w{p}": (d, o) if p == "o" else (fq, d) for p in projections}
        if use_bias:
            shapes.update({f"b{p}": (o,) if p == "o" else (d,) for p in projections})
        return shapes

    return Layer(init, apply, name)


def _check_heads(name: str, what: str, d: int, heads: int) -> None:
    if d % heads:
        raise ValueError(f"{name}: {what} is {d}, expected a multiple of num_heads={heads} "
                         "(each head gets an equal share of the features)")


def _project(x, params, p):
    if f"b{p}" in params:
        return ops.affine(x, params[f"w{p}"], params[f"b{p}"])
    return ops.matmul(x, params[f"w{p}"])
