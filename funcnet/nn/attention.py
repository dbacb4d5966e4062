"""Attention layers over :func:`funcnet.ops.dot_product_attention`: self-attention
(:func:`MultiHeadAttention`) and cross-attention (:func:`CrossAttention`). To pass a
padding mask (or an encoder's output) through a stack to the attention inside it, see
:mod:`funcnet.nn.side_inputs` (``OnFirst``, ``KeepRest``, ``DropRest``).

References:
  Vaswani et al. (2017), "Attention Is All You Need", https://arxiv.org/abs/1706.03762.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet import _checks, ops
from funcnet.nn import initializers
from funcnet.nn.base import (Layer, check_dtype, check_input_shape, check_no_params,
                             check_params, check_train, check_train_key, check_weight_args,
                             describe, fmt, init_checked, is_shape, is_shape_pair, promote,
                             split_pair)

__all__ = ["MultiHeadAttention", "CrossAttention"]

_LAYOUT = "(N, T, F) or one sequence (T, F)"
_PROJECTIONS = ("q", "k", "v", "o")


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

    Inside a stack (``Residual(serial(LayerNorm(), ...))``) the mask reaches the layer
    through :func:`OnFirst` / :func:`KeepRest` (see the module docstring).

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
    causal = _checks.static_bool(name, "causal", causal)
    return _attention_layer(name, heads, False, qkv_features, out_features, causal,
                            dropout_rate, use_bias, w_init, b_init, dtype)


def CrossAttention(num_heads: int, *, qkv_features: int | None = None,
                   out_features: int | None = None, dropout_rate: float = 0.0,
                   use_bias: bool = True, w_init=initializers.xavier_uniform(),
                   b_init=initializers.zeros, dtype=None) -> Layer:
    """Multi-head cross-attention: queries from ``x``, keys and values from ``context``
    (an encoder-decoder transformer's decoder reading the encoder's output).

    For ``x`` ``(N, T, F)`` and ``context`` ``(N, S, Fc)`` (``S`` and ``Fc`` free), with
    ``D = qkv_features`` split into ``num_heads`` heads of ``D / num_heads``::

        q = x wq + bq                                                  (N, T, D)
        k = context wk + bk,   v = context wv + bv                     (N, S, D)
        o = dot_product_attention(q, k, v, mask,                       per head, scale
                                  dropout_rate=r (train only))         1/sqrt(D/num_heads)
        y = o wo + bo                                                  (N, T, out_features)

    The same code as :func:`MultiHeadAttention` (shared projections, op call, dropout,
    per-sequence form, errors); only ``k`` and ``v`` are projected from ``context``. No
    ``causal``: a query's position says nothing about the context's. As Flax's
    ``MultiHeadDotProductAttention(...)(inputs_q, inputs_kv)`` and PyTorch's
    ``nn.MultiheadAttention(query, key=context, value=context)`` (``kdim = vdim = Fc``).

    Shapes:
      input: a pair ``(x, context)`` or a triple ``(x, context, mask)``: ``x`` ``(N, T, F)``,
        ``context`` ``(N, S, Fc)`` (the same ``N``), a boolean ``mask`` (``True`` =
        attend) of rank 4, each axis 1 or the full size of ``(N, num_heads, T, S)`` (a
        padded context: ``(N, 1, 1, S)``), or ``(T, S)``. One sequence: ``x`` ``(T, F)``,
        ``context`` ``(S, Fc)``, ``mask`` ``(T, S)`` or rank 3 ``(num_heads or 1, T or 1,
        S)`` (what ``jax.vmap`` over examples makes of ``(N, 1, 1, S)``). ``init`` takes
        the tuple of shapes, ``((N, T, F), (N, S, Fc))`` or ``((N, T, F), (N, S, Fc),
        mask_shape)``; ``-1`` (one unknown size) may stand for ``N`` in all of them.
      output: ``(N, T, out_features)`` (or ``(T, out_features)``).
      params: ``{"wq": (F, D), "wk", "wv": (Fc, D), "wo": (D, out_features), "bq", "bk",
        "bv": (D,), "bo": (out_features,)}`` (no ``b*`` when ``use_bias=False``); state
        ``()``.

    Args:
      num_heads: number of heads, an int >= 1.
      qkv_features: ``D``; default ``F`` (``x``'s features). A multiple of ``num_heads``.
      out_features: output width; default ``F``.
      dropout_rate: drop probability in ``[0, 1)`` of the attention probabilities
        (training only; as :func:`MultiHeadAttention`).
      use_bias: add the biases of the four projections.
      w_init: initializer of the four kernels (each on its own fans); default
        :func:`~funcnet.nn.initializers.xavier_uniform`.
      b_init: initializer of the biases; default zeros.
      dtype: dtype of the params; ``None`` is JAX's default float dtype. ``x``,
        ``context`` and the params are promoted to their common dtype.

    Returns:
      A :class:`Layer` named ``"CrossAttention(num_heads)"``; ``apply`` takes ``key=``
      (needed when ``train=True`` and ``dropout_rate > 0``).

    Raises:
      TypeError: as :func:`MultiHeadAttention`; an input that is not a tuple ``(x,
        context[, mask])``; a non-float ``x`` or ``context``.
      ValueError: as :func:`MultiHeadAttention`; a tuple of another length; ``x`` and
        ``context`` of different ranks or batch sizes; the op's errors (mask shape)
        prefixed with the layer's name.

    Example::

        layer = nn.CrossAttention(2)
        out, params, _ = layer.init(key, ((-1, 5, 8), (-1, 7, 3)))   # out (-1, 5, 8)
        y, _ = layer.apply(params, (), (x, context, mask))           # mask (N, 1, 1, 7)

    References:
      Vaswani et al. (2017), sections 3.2.2 and 3.2.3 ("encoder-decoder attention").
    """
    heads = _checks.static_int("CrossAttention", "num_heads", num_heads, minimum=1)
    return _attention_layer(f"CrossAttention({heads})", heads, True, qkv_features,
                            out_features, False, dropout_rate, use_bias, w_init, b_init,
                            dtype)


def _attention_layer(name, heads, cross, qkv_features, out_features, causal, dropout_rate,
                     use_bias, w_init, b_init, dtype) -> Layer:
    """The init/apply of both attention layers; ``cross``: keys and values are projected
    from a ``context`` (the second input) instead of from ``x``."""
    if qkv_features is not None:
        qkv_features = _checks.static_int(name, "qkv_features", qkv_features, minimum=1)
        _check_heads(name, "qkv_features", qkv_features, heads)
    if out_features is not None:
        out_features = _checks.static_int(name, "out_features", out_features, minimum=1)
    rate = _checks.static_float(name, "dropout_rate", dropout_rate, 0.0, 1.0,
                                high_inclusive=False)
    check_weight_args(name, dtype, use_bias, w_init=w_init, b_init=b_init)
    if cross:
        layout = "(x, context) or (x, context, mask)"
        ctx_layout = "(N, S, Fc) or one sequence (S, Fc)"

    def split_shapes(input_shape):
        """``(x_shape, context_shape or None, mask_shape or None)``, checked."""
        if not cross:
            paired = is_shape_pair(input_shape)
            x_shape = input_shape[0] if paired else input_shape
            return x_shape, None, (input_shape[1] if paired else None)
        if is_shape(input_shape) or not isinstance(input_shape, (tuple, list)):
            raise TypeError(f"{name}: input_shape must be a tuple of shapes {layout}, got "
                            f"{fmt(input_shape) if is_shape(input_shape) else repr(input_shape)}")
        if len(input_shape) not in (2, 3):
            raise ValueError(f"{name}: input_shape {fmt(input_shape)} has {len(input_shape)} "
                             f"entries, expected 2 or 3: the shapes of {layout}")
        return tuple(input_shape) + (None,) * (3 - len(input_shape))

    def init(key, input_shape):
        x_shape, c_shape, m_shape = split_shapes(input_shape)
        shape = check_input_shape(name, key, x_shape, (2, 3), _LAYOUT, needs=1)
        f = shape[-1]
        fc = f
        if cross:
            c_shape = check_input_shape(name, key, c_shape, (2, 3), ctx_layout, needs=1)
            fc = c_shape[-1]
        d = qkv_features if qkv_features is not None else f
        if qkv_features is None:
            _check_heads(name, f"the input features F={f} (qkv_features=None)", f, heads)
        out = out_features if out_features is not None else f
        dt = check_dtype(name, dtype)

        def make(key):
            keys = jax.random.split(key, 8)
            params = {}
            for i, p in enumerate(_PROJECTIONS):
                params[f"w{p}"] = w_init(keys[i], {"q": (f, d), "o": (d, out)}.get(p, (fc, d)),
                                         dt)
                if use_bias:
                    params[f"b{p}"] = b_init(keys[4 + i], (out,) if p == "o" else (d,), dt)
            return params, ()
        shapes, dtypes = (shape,), (dt,)
        if cross:
            shapes, dtypes = shapes + (c_shape,), dtypes + (dt,)
        if m_shape is not None:   # the op checks the mask against x (and context) now
            mask = check_input_shape(name, key, m_shape, None)
            shapes, dtypes = shapes + (mask,), dtypes + (jnp.bool_,)
        if len(shapes) == 1:
            return init_checked(name, apply, make, key, shape, dt)
        return init_checked(name, apply, make, key, shapes, dtypes)

    def split_input(x):
        """``(x, context or None, mask or None)`` from ``apply``'s input."""
        if not cross:
            x, mask = split_pair(name, x, "x", "mask")
            return x, None, mask
        if not isinstance(x, (tuple, list)):
            raise TypeError(f"{name}: input must be a tuple {layout}, got {describe(x)}")
        if len(x) not in (2, 3):
            raise ValueError(f"{name}: input must be a tuple {layout}, got a "
                             f"{type(x).__name__} of {len(x)} entries")
        return tuple(x) + (None,) * (3 - len(x))

    def apply(params, state, x, *, key=None, train=False):
        x, ctx, mask = split_input(x)
        check_params(name, "params", params, _shapes(params))
        check_no_params(name, (), state)
        if cross:
            _checks.check_float(name, "context", ctx)
        x, (params, ctx) = promote(x, (params, ctx), name)
        _checks.check_rank(name, "x", x, (2, 3), _LAYOUT)
        if cross:
            _checks.check_rank(name, "context", ctx, x.ndim,
                               f"(N, S, Fc) for x {_checks.shape_of(x)}" if x.ndim == 3
                               else f"(S, Fc) for one sequence x {_checks.shape_of(x)}")
            if x.ndim == 3:
                _checks.check_same_leading(name, {"x": x, "context": ctx})
        d = params["wq"].shape[1]
        _check_heads(name, "params['wq'].shape[1]", d, heads)
        single = x.ndim == 2
        xb = x[None] if single else x
        cb = xb if not cross else ctx[None] if single else ctx
        if single and mask is not None and jnp.ndim(mask) == 3:
            mask = mask[None]     # one sequence's (heads or 1, T or 1, S): vmap over examples
        n, t = xb.shape[:2]
        s = cb.shape[1]
        drop = rate if check_train(name, train) else 0.0
        if drop > 0.0:
            check_train_key(name, key, f" with dropout_rate={rate:g}")
        with _checks.context(name):
            q = _project(xb, params, "q").reshape(n, t, heads, d // heads)
            k, v = (_project(cb, params, p).reshape(n, s, heads, d // heads) for p in "kv")
            o = ops.dot_product_attention(q, k, v, mask, causal=causal, dropout_rate=drop,
                                          dropout_key=key if drop > 0.0 else None)
            y = _project(o.reshape(n, t, d), params, "o")
        return (y[0] if single else y), state

    def _shapes(params):
        """Expected params shapes, sizes read from ``wq``/``wk``/``wo`` where not fixed."""
        def dims(w):
            w = params.get(w) if isinstance(params, dict) else None
            return (_checks.shape_of(w) + (None, None))[:2] if w is not None else (None, None)
        fq, dq = dims("wq")
        fk = dims("wk")[0] if cross else fq
        d = qkv_features if qkv_features is not None else dq
        o = out_features if out_features is not None else dims("wo")[1]
        shapes = {"wq": (fq, d), "wk": (fk, d), "wv": (fk, d), "wo": (d, o)}
        if use_bias:
            shapes.update({f"b{p}": (o,) if p == "o" else (d,) for p in _PROJECTIONS})
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
