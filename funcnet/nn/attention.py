"""Attention layers over :func:`funcnet.ops.dot_product_attention`: self-attention
(:func:`MultiHeadAttention`) and cross-attention (:func:`CrossAttention`). To pass a
padding mask (or an encoder's output) through a stack to the attention inside it, see
:mod:`funcnet.nn.side_inputs` (``OnFirst``, ``KeepRest``, ``DropRest``). Both layers take
``num_kv_heads`` (grouped-query attention); ``MultiHeadAttention(..., causal=True,
decode=True)`` keeps a key/value cache in its state for autoregressive decoding, and
``CrossAttention(..., decode=True)`` the keys and values of its context, projected once
(see :mod:`funcnet.nn.decoding`).

References:
  Vaswani et al. (2017), "Attention Is All You Need", https://arxiv.org/abs/1706.03762.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet import _checks, ops
from funcnet.nn import decoding, initializers, packing, position_bias as _pb
from funcnet.nn.base import (Layer, check_dtype, check_input_shape, check_no_params,
                             check_params, check_train, check_train_key, check_weight_args,
                             describe, fmt, init_checked, is_shape, is_shape_pair, promote,
                             split_pair)
from funcnet._describe import described

__all__ = ["MultiHeadAttention", "CrossAttention"]

_LAYOUT = "(N, T, F) or one sequence (T, F)"
_PROJECTIONS = ("q", "k", "v", "o")


@described(added=("window", "position_bias", "position_bias_buckets", "logit_soft_cap",
                  "scale", "qk_norm", "packed"))
def MultiHeadAttention(num_heads: int, *, qkv_features: int | None = None,
                       out_features: int | None = None, causal: bool = False,
                       dropout_rate: float = 0.0, use_bias: bool = True,
                       w_init=initializers.xavier_uniform(), b_init=initializers.zeros,
                       dtype=None, num_kv_heads: int | None = None,
                       decode: bool = False, rope=False, window: int | None = None,
                       position_bias: str | None = None,
                       position_bias_buckets: tuple = (32, 128),
                       logit_soft_cap: float | None = None,
                       scale: float | None = None, qk_norm: bool = False,
                       packed: bool = False) -> Layer:
    """Multi-head self-attention: projections, :func:`funcnet.ops.dot_product_attention`,
    output projection.

    For an input ``x`` ``(N, T, F)``, with ``D = qkv_features`` split into
    ``num_heads`` heads of ``dh = D / num_heads`` and ``K = num_kv_heads`` key/value
    heads (``Dkv = K dh``)::

        q = x wq + bq                                                 (N, T, D)
        k = x wk + bk,   v = x wv + bv                                (N, T, Dkv) each
        o = dot_product_attention(q, k, v, mask, causal=causal,       per head, scale
                                  dropout_rate=r (train only))        1/sqrt(dh)
        y = o wo + bo                                                 (N, T, out_features)

    Grouped-query attention (Ainslie et al. 2023; Llama 2, Mistral): with ``K <
    num_heads``, query head ``h`` attends with key/value head ``h // (num_heads / K)``,
    i.e. the same as repeating each key/value head ``num_heads / K`` times; ``K = 1`` is
    multi-query attention (Shazeer 2019). The k/v projections and a decoding cache shrink
    by ``num_heads / K``. ``K = num_heads`` (the default) is multi-head attention.

    Autoregressive decoding (``decode=True``, with ``causal=True``; Flax's
    ``decode=True``): ``init`` with ``(N, L, F)`` allocates a key/value cache of ``L``
    positions in the state (see :mod:`funcnet.nn.decoding`)::

        state = {"k": (N, L, K, dh), "v": (N, L, K, dh), "index": int32 ()}

    and ``apply`` on a chunk ``x`` ``(N, T, F)`` of the next ``T`` positions (a prompt,
    or one token) writes its ``k``, ``v`` at positions ``index .. index + T - 1``, lets
    query ``i`` of the chunk attend cache positions ``j <= index + i`` (and ``mask``, over
    the ``L`` positions), and returns ``(y, state with index + T)``: ``O(L)`` work per
    token instead of rerunning the prefix. Chunk by chunk, the outputs equal one causal
    call on the whole sequence (tests: to 1e-10 in float64). The params are the ones of
    the layer without ``decode``. Overflow (``index + T > L``) is a ``ValueError`` where
    ``index`` is concrete and a NaN output under ``jit`` / inside ``Repeat``; with a
    ``window`` the cache is a ring buffer that never overflows (``window`` below).

    Sliding-window attention (``window=W``; Mistral, Gemma 2, Longformer): query ``t``
    attends keys ``t - W < j <= t`` (causal) or ``|t - j| < W`` (not causal) only, besides
    the mask; the op skips the keys outside the window, so the work is ``O(T W)``.

    Position biases (``position_bias``; :mod:`funcnet.nn.position_bias`): a term of the
    positions ``i`` (query), ``j`` (key) added per head ``n`` to the scaled logits, shared
    over the batch. Neither is a ``T x S`` array: ALiBi goes to the op as ``alibi_slopes=``
    (O(N) memory) and T5 as ``bias_fn=`` with ``rel_bias`` as ``bias_params``
    (:func:`funcnet.nn.position_bias.t5_bias_fn`), gathered per block and its gradient
    summed per block (O(num_buckets N) memory); when decoding, both as ``bias_fn=`` of the
    chunk's and the cache's absolute positions
    (:func:`funcnet.nn.position_bias.positioned_bias_fn`)::

        "alibi":  s_nij += -m_n |i - j|                  (Press et al. 2022; BLOOM, MPT)
        "t5":     s_nij += rel_bias[bucket(j - i), n]    (Raffel et al. 2020, section 2.1)

    ALiBi has no params; slopes ``m_k = 2^(-8k/N)``, ``k = 1..N``, for ``N`` a power of 2,
    else the paper's interleaving. Its causal bias ``-m (i - j)`` equals ``-m |i - j|`` on
    the keys ``j <= i``; ``|i - j|`` is the symmetric choice without ``causal``. T5's
    buckets are bidirectional (its encoder) without ``causal``, unidirectional (its
    decoder) with it; ``rel_bias`` starts Glorot uniform (Mesh TensorFlow, T5X). Departures
    from T5: each layer has its own table (T5 shares one per stack), and the logits keep
    the ``1/sqrt(dh)`` scale unless ``scale=1.0`` (T5 has none). ``decode=True``: query
    ``t`` of a chunk is at ``index + t``, cache slot ``j`` at ``j``, so chunks equal the
    full pass (tests). With ``rope`` the bias adds to the rotated logits. With ``window``
    T5's bias is gathered per query block over its span: LongT5's local attention in
    ``O(T W)`` work and ``O(T)`` memory.

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
        the pair of shapes ``((N, T, F), mask_shape)``. With ``decode=True`` the last axis
        of the mask is the ``L`` cache positions (``(N, 1, 1, L)`` for padding).
      output: ``(N, T, out_features)`` (or ``(T, out_features)``).
      params: ``{"wq": (F, D), "wk", "wv": (F, Dkv), "wo": (D, out_features), "bq": (D,),
        "bk", "bv": (Dkv,), "bo": (out_features,)}`` (no ``b*`` when ``use_bias=False``;
        ``"rel_bias": (num_buckets, num_heads)`` with ``position_bias="t5"``; ``"q_norm",
        "k_norm": (dh,)`` with ``qk_norm=True``); state ``()``, or the cache above with
        ``decode=True`` (``(L, K, dh)`` and no ``N`` for a one-sequence ``init``).

    Args:
      num_heads: number of heads, an int >= 1.
      qkv_features: ``D``, the width of ``q``, ``k``, ``v``; default ``F``. A multiple of
        ``num_heads``.
      out_features: output width; default ``F``.
      causal: query ``t`` attends keys ``<= t`` only (language models).
      dropout_rate: drop probability in ``[0, 1)`` of the attention probabilities (see
        above; training only). A traced scalar (the layer built inside ``jax.vmap`` over
        a sweep of rates) is passed on to the op, which draws the static rate's mask.
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
        params are promoted to their common dtype. The decoding cache has this dtype.
      num_kv_heads: ``K``, the number of key/value heads, dividing ``num_heads``; default
        ``num_heads``.
      decode: keep a key/value cache in the state for autoregressive decoding (above);
        needs ``causal=True`` and an ``init`` shape ``(N, L, F)`` without ``-1``.
      rope: rotary position embedding of the queries and keys (RoFormer; Llama,
        Mistral, GPT-NeoX): ``True``, or a dict of keyword arguments of
        :func:`funcnet.ops.rotary_embedding` (``base``, ``rotary_dim``,
        ``interleaved``), e.g. ``{"base": 500000.0}``. Every head's ``q`` and ``k`` are
        rotated by their position after the projections (``v`` is not): position ``t``
        of the input, or ``index + t`` with ``decode=True`` (the cache holds rotated
        keys). The logits then depend on relative positions only, so the model needs no
        ``PositionEmbedding``. Default ``False``.
      window: ``None`` (every key) or an int ``W >= 1``, the sliding window above. With
        ``decode=True`` and an ``init`` length ``L >= W`` the cache is a ring buffer of the
        last ``W`` positions (``(N, W, K, dh)``; rope keys stay rotated at their absolute
        positions), so decoding runs past ``L`` without overflow; it takes no mask. With
        ``L < W`` the cache is the ordinary one of ``L`` positions. With dropout the op
        draws the window's own mask (see :func:`funcnet.ops.dot_product_attention`).
      position_bias: ``None`` (default), ``"alibi"`` or ``"t5"`` (above). With ``window``
        too (both computed per block of the window: LongT5's local attention with
        ``causal=False``), and with ``decode``
        (from the positions the cache, or the ring buffer of ``window``, holds).
      position_bias_buckets: ``"t5"``'s ``(num_buckets, max_distance)``, default
        ``(32, 128)`` (T5's): the rows of ``rel_bias`` (half of them per sign without
        ``causal``); distances ``>= max_distance`` share the last bucket.
      logit_soft_cap: ``None`` (default) or a float ``c > 0``: the scaled logits ``x``
        become ``c tanh(x / c)`` before the position bias and the mask (Gemma 2's
        attention soft-capping, ``c = 50``), in training, evaluation and decoding alike;
        the op's ``logit_soft_cap``. A traced scalar (the layer built inside ``jax.vmap``
        over caps) is the op's traced cap.
      scale: ``None`` (default: ``1/sqrt(dh)``) or a float multiplying the logits, the
        op's ``scale``: ``1.0`` for T5's unscaled logits (its checkpoints fold the scale
        into ``wq``), ``query_pre_attn_scalar ** -0.5`` for Gemma 2. A traced scalar (the
        layer built inside ``jax.vmap`` over scales; a learnable scale, with ``qk_norm``
        Henry et al. 2020's QKNorm) is the op's traced scale.
      qk_norm: RMS-normalize every head's queries and keys over their ``dh`` features
        before rope and the cache, ``q_h <- rms_norm(q_h, params["q_norm"])`` (and ``k``
        with ``"k_norm"``; :func:`funcnet.ops.rms_norm`, ``eps = 1e-6``, scales initialized
        to ones): QK-norm (Dehghani et al. 2023; Gemma 3, Qwen 3, OLMo 2 per head), which
        bounds the logits. Default ``False``.
      packed: the input is a pair ``(x, segment_ids)``: integer ids ``(N, T)`` (``(T,)``
        for one sequence) of the sequences packed in each row (T5X's and seqio's
        ``segment_ids``), a sequence being a run of equal consecutive ids (an id that comes
        back after another run starts a new sequence, as in
        :func:`~funcnet.nn.segment_positions`: ``[1, 1, 2, 2, 1, 1]`` holds three);
        position ``i`` attends position ``j`` of its own sequence only (besides ``causal``,
        ``window``), through the op's ``mask_fn=`` :func:`funcnet.ops.same_segment` on the
        runs' numbers (``[0, 0, 1, 1, 2, 2]``), evaluated per block: a step keeps the
        ``(N, T)`` numbers, not a ``(N, 1, T, T)`` mask; ``init`` takes ``(N, T, F)`` or
        ``((N, T, F), (N, T))``.
        A packed row equals its sequences run one by one (tests): positions, rope and the
        position biases stay those of the row (as T5X without ``segment_positions``), and
        ALiBi, T5's buckets and rope's rotation depend on ``j - i`` only, the same inside
        any segment (absolute positions before the layer restart per sequence with
        :func:`~funcnet.nn.PositionEmbedding` or :func:`~funcnet.nn.SinusoidalPositions`
        ``(packed=True)``, :func:`~funcnet.nn.segment_positions`). Not with
        ``decode=True``. Default ``False``.

    Returns:
      A :class:`Layer` named ``"MultiHeadAttention(num_heads)"``; ``apply`` takes ``key=``
      (needed when ``train=True`` and ``dropout_rate > 0``).

    Raises:
      TypeError: at construction, non-int sizes, a non-bool ``causal``, ``use_bias`` or
        ``qk_norm``, a non-number ``dropout_rate``, ``logit_soft_cap`` or ``scale``, a
        non-callable initializer or a non-float ``dtype``; in ``apply`` a non-float input.
      ValueError: at construction ``num_heads < 1``, ``qkv_features`` not a multiple of
        ``num_heads``, ``num_heads`` not a multiple of ``num_kv_heads``, ``dropout_rate``
        outside ``[0, 1)``, ``decode=True`` without ``causal=True``, ``window < 1``,
        a ``logit_soft_cap`` that is not finite and ``> 0``, a non-finite ``scale``, a
        ``position_bias`` other
        than ``None``, ``"alibi"``, ``"t5"``, ``position_bias_buckets`` not a pair of ints
        ``>= 1`` (``TypeError`` for a non-pair or non-int), too few for ``"t5"``, or given
        without ``"t5"``; in ``init`` a bad
        ``input_shape`` or ``F`` not a multiple of ``num_heads`` (no ``qkv_features``), a
        ``-1`` size with ``decode=True``; in ``apply`` params of another shape, a missing
        ``key`` for dropout, and the op's errors (mask shape, input features) prefixed
        with the layer's name; with ``decode=True`` a state that is not the cache of this
        batch and these heads, a chunk longer than the cache, a concrete overflow, a mask
        with the ring buffer of ``window``; ``packed=True`` with ``decode=True``, or
        without segment ids (of another shape than ``x``'s without features: ``TypeError``
        for a non-integer dtype).

    Example, greedy decoding of a causal language model ``gpt(decode)`` (a function that
    builds the model with ``decode=True`` in its attention and position layers)::

        _, _, cache = gpt(decode=True).init(key, (N, L))      # empty cache, index 0
        logits, cache = gpt(decode=True).apply(params, cache, prompt)   # (N, P) ids
        logits, cache = gpt(decode=True).apply(params, cache, next_ids[:, None])

    References:
      Vaswani et al. (2017), section 3.2.2; Rabe & Staats (2021); Dao et al. (2022).
      Shazeer (2019), "Fast Transformer Decoding: One Write-Head is All You Need",
      https://arxiv.org/abs/1911.02150; Ainslie et al. (2023), "GQA: Training Generalized
      Multi-Query Transformer Models from Multi-Head Checkpoints",
      https://arxiv.org/abs/2305.13245. Press, Smith & Lewis (2022), "Train Short, Test
      Long" (ALiBi), https://arxiv.org/abs/2108.12409; Raffel et al. (2020), T5,
      https://arxiv.org/abs/1910.10683, section 2.1.
    """
    heads = _checks.static_int("MultiHeadAttention", "num_heads", num_heads, minimum=1)
    name = f"MultiHeadAttention({heads})"
    causal = _checks.static_bool(name, "causal", causal)
    decode = _checks.static_bool(name, "decode", decode)
    rope = _rope_args(name, rope)
    if window is not None:
        window = _checks.static_int(name, "window", window, minimum=1)
    bias_spec = _pb.check(name, position_bias, position_bias_buckets, causal)
    logits = _logit_args(name, logit_soft_cap, scale, qk_norm)
    if decode and not causal:
        raise ValueError(f"{name}: decode=True needs causal=True (autoregressive decoding "
                         f"of causal self-attention: a query never sees a later position)")
    return _attention_layer(name, heads, num_kv_heads, False, qkv_features, out_features,
                            causal, dropout_rate, use_bias, w_init, b_init, dtype, decode,
                            rope, window, bias_spec, logits,
                            packing.packed_arg(name, packed, decode))


@described(added=("decode", "logit_soft_cap", "scale", "qk_norm", "packed"))
def CrossAttention(num_heads: int, *, qkv_features: int | None = None,
                   out_features: int | None = None, dropout_rate: float = 0.0,
                   use_bias: bool = True, w_init=initializers.xavier_uniform(),
                   b_init=initializers.zeros, dtype=None,
                   num_kv_heads: int | None = None, decode: bool = False,
                   logit_soft_cap: float | None = None, scale: float | None = None,
                   qk_norm: bool = False, packed: bool = False) -> Layer:
    """Multi-head cross-attention: queries from ``x``, keys and values from ``context``
    (an encoder-decoder transformer's decoder reading the encoder's output).

    For ``x`` ``(N, T, F)`` and ``context`` ``(N, S, Fc)`` (``S`` and ``Fc`` free), with
    ``D = qkv_features`` split into ``num_heads`` heads of ``dh = D / num_heads`` and
    ``K = num_kv_heads`` key/value heads (``Dkv = K dh``; grouped-query attention as in
    :func:`MultiHeadAttention`)::

        q = x wq + bq                                                  (N, T, D)
        k = context wk + bk,   v = context wv + bv                     (N, S, Dkv)
        o = dot_product_attention(q, k, v, mask,                       per head, scale
                                  dropout_rate=r (train only))         1/sqrt(D/num_heads)
        y = o wo + bo                                                  (N, T, out_features)

    The same code as :func:`MultiHeadAttention` (shared projections, op call, dropout,
    per-sequence form, errors); only ``k`` and ``v`` are projected from ``context``. No
    ``causal``: a query's position says nothing about the context's. As Flax's
    ``MultiHeadDotProductAttention(...)(inputs_q, inputs_kv)`` and PyTorch's
    ``nn.MultiheadAttention(query, key=context, value=context)`` (``kdim = vdim = Fc``).

    Decoding (``decode=True``; T5, Whisper): the context (the encoder's output) is the
    same at every generated token, so its ``k``, ``v`` are projected once and kept in the
    state ``{"k": (N, S, K, dh), "v": (N, S, K, dh), "primed": bool ()}``, which ``init``
    with ``((N, T, F), (N, S, Fc)[, mask_shape])`` allocates (zeros, not primed). ``apply``
    on ``(x, context[, mask])`` projects the context into the cache and attends (the first
    call: a start token or a prompt); on ``(x, None[, mask])`` it reads the cache (no
    ``S x Fc`` projection per token). The mask over the ``S`` positions is passed at every
    call; ``T`` is free; the params are those without ``decode``, and so are the outputs
    (tests: 1e-10 in float64). See :mod:`funcnet.nn.decoding`.

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
      params: ``{"wq": (F, D), "wk", "wv": (Fc, Dkv), "wo": (D, out_features), "bq": (D,),
        "bk", "bv": (Dkv,), "bo": (out_features,)}`` (no ``b*`` when ``use_bias=False``;
        ``"q_norm", "k_norm": (dh,)`` with ``qk_norm=True``); state ``()``, or the cache
        above with ``decode=True``.

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
      num_kv_heads: ``K``, the number of key/value heads, dividing ``num_heads``; default
        ``num_heads``.
      decode: cache the context's keys and values in the state (above); ``init`` needs
        the context's shape without ``-1``. Default ``False``.
      logit_soft_cap: ``None`` (default) or a float ``c > 0`` (or a traced scalar), the
        op's soft cap of the logits (as :func:`MultiHeadAttention`).
      scale: ``None`` (default: ``1/sqrt(dh)``) or a float multiplying the logits (``1.0``
        for T5), or a traced scalar; as :func:`MultiHeadAttention`.
      qk_norm: RMS-normalize every head's queries and keys (as
        :func:`MultiHeadAttention`). Default ``False``.
      packed: the input is ``(x, context, (x_ids, context_ids))``, the segment ids ``(N,
        T)`` and ``(N, S)`` of the sequences packed in each row of ``x`` and of the context
        (T5X's packed encoder-decoder: the decoder's segment ``k`` reads the encoder's
        segment ``k``). Ids are matched by equality here, not by runs: step ``i`` of ``x``
        reads step ``j`` of the context where ``x_ids[i] == context_ids[j]``, wherever
        they are in their rows (an id used by two runs pairs them all: give each packed
        pair its own id), through the op's ``mask_fn=`` :func:`funcnet.ops.same_segment`:
        a step keeps the ids, not a ``(N, 1, T, S)`` mask; ``init`` takes the shapes of
        ``(x, context)`` or ``(x, context, (x_ids, context_ids))``. Not with
        ``decode=True``. Default ``False``.

    Returns:
      A :class:`Layer` named ``"CrossAttention(num_heads)"``; ``apply`` takes ``key=``
      (needed when ``train=True`` and ``dropout_rate > 0``).

    Raises:
      TypeError: as :func:`MultiHeadAttention`; an input that is not a tuple ``(x,
        context[, mask])``; a non-float ``x`` or ``context``; a ``None`` context without
        ``decode``.
      ValueError: as :func:`MultiHeadAttention`; a tuple of another length; ``x`` and
        ``context`` of different ranks or batch sizes; the op's errors (mask shape)
        prefixed with the layer's name; with ``decode=True`` an ``init`` without the
        context's shape or with a ``-1`` in it, a state that is not this cache, a context
        of another length ``S`` or batch than the cache's, reading a cache never primed
        (eagerly; NaN outputs under ``jit``).

    Example::

        layer = nn.CrossAttention(2)
        out, params, _ = layer.init(key, ((-1, 5, 8), (-1, 7, 3)))   # out (-1, 5, 8)
        y, _ = layer.apply(params, (), (x, context, mask))           # mask (N, 1, 1, 7)

    References:
      Vaswani et al. (2017), sections 3.2.2 and 3.2.3 ("encoder-decoder attention").
    """
    heads = _checks.static_int("CrossAttention", "num_heads", num_heads, minimum=1)
    name = f"CrossAttention({heads})"
    decode = _checks.static_bool(name, "decode", decode)
    return _attention_layer(name, heads, num_kv_heads, True, qkv_features, out_features,
                            False, dropout_rate, use_bias, w_init, b_init, dtype,
                            decode, None, None, None,
                            _logit_args(name, logit_soft_cap, scale, qk_norm),
                            packing.packed_arg(name, packed, decode))


def _logit_args(name: str, soft_cap, scale, qk_norm) -> dict:
    """The checked ``logit_soft_cap``, ``scale`` (the op's keywords) and ``qk_norm``."""
    return {"logit_soft_cap": _checks.check_soft_cap(name, soft_cap),
            "scale": None if scale is None else _checks.hyperparameter(name, "scale", scale),
            "qk_norm": _checks.static_bool(name, "qk_norm", qk_norm)}


_ROPE_ARGS = ("base", "rotary_dim", "interleaved")


def _rope_args(name: str, rope) -> dict | None:
    """``rope=`` as the keyword arguments of ``ops.rotary_embedding`` (``None``: off).
    Their values are the op's to check (at ``init``, which traces ``apply``)."""
    if isinstance(rope, bool):
        return {} if rope else None
    if not isinstance(rope, dict):
        raise TypeError(f"{name}: rope must be a bool or a dict of keyword arguments of "
                        f"ops.rotary_embedding {list(_ROPE_ARGS)}, got {type(rope).__name__}")
    unknown = sorted(set(rope) - set(_ROPE_ARGS))
    if unknown:
        raise ValueError(f"{name}: rope has the keys {unknown}, expected keyword arguments "
                         f"of ops.rotary_embedding among {list(_ROPE_ARGS)}")
    return dict(rope)


def _attention_layer(name, heads, kv_heads, cross, qkv_features, out_features, causal,
                     dropout_rate, use_bias, w_init, b_init, dtype, decode, rope,
                     window, bias_spec, logits, packed=False) -> Layer:
    """The init/apply of both attention layers; ``cross``: keys and values are projected
    from a ``context`` (the second input) instead of from ``x``; ``decode``: a key/value
    cache in ``state`` (:mod:`funcnet.nn.decoding`; with ``cross``, the context's);
    ``rope``: ``None`` or the keyword arguments of the rotary embedding of ``q`` and
    ``k``; ``window``: ``None`` or the sliding window; ``bias_spec``: ``None`` or the
    position bias of :func:`funcnet.nn.position_bias.check`; ``logits``: the
    :func:`_logit_args` (the op's ``logit_soft_cap`` and ``scale``, and ``qk_norm``);
    ``packed``: the mask's place holds segment ids (:func:`funcnet.nn.packing.segments`),
    runs of equal ids in self-attention, matched by equality with ``cross``."""
    if kv_heads is None:
        kv_heads = heads
    kv_heads = _checks.static_int(name, "num_kv_heads", kv_heads, minimum=1)
    if heads % kv_heads:
        raise ValueError(f"{name}: num_heads={heads} is not a multiple of num_kv_heads="
                         f"{kv_heads} (each key/value head serves num_heads / num_kv_heads "
                         f"query heads)")
    if qkv_features is not None:
        qkv_features = _checks.static_int(name, "qkv_features", qkv_features, minimum=1)
        _check_heads(name, "qkv_features", qkv_features, heads)
    if out_features is not None:
        out_features = _checks.static_int(name, "out_features", out_features, minimum=1)
    rate = _checks.check_rate(name, "dropout_rate", dropout_rate)
    check_weight_args(name, dtype, use_bias, w_init=w_init, b_init=b_init)
    t5 = bias_spec is not None and bias_spec[0] == "t5"
    op_logits = {k: logits[k] for k in ("logit_soft_cap", "scale")}
    qk_norm = logits["qk_norm"]
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
        if decode and not cross:
            decoding.check_decode_shape(name, shape)
        f = shape[-1]
        fc = f
        if cross:
            if c_shape is None:
                raise ValueError(f"{name}: input_shape {fmt(input_shape)} has no context "
                                 f"shape; init takes the shapes of {layout}")
            c_shape = check_input_shape(name, key, c_shape, (2, 3), ctx_layout, needs=1)
            fc = c_shape[-1]
            if decode:
                decoding.check_decode_shape(name, c_shape, "the context's shape",
                                            "(N, S, Fc)", "the S context positions")
        d = qkv_features if qkv_features is not None else f
        if qkv_features is None:
            _check_heads(name, f"the input features F={f} (qkv_features=None)", f, heads)
        dkv = d // heads * kv_heads
        out = out_features if out_features is not None else f
        dt = check_dtype(name, dtype)

        def make(key):
            keys = jax.random.split(key, 8)
            params = {}
            for i, p in enumerate(_PROJECTIONS):
                params[f"w{p}"] = w_init(keys[i], {"q": (f, d), "o": (d, out)}.get(p, (fc, dkv)),
                                         dt)
                if use_bias:
                    params[f"b{p}"] = b_init(keys[4 + i], {"q": (d,), "o": (out,)}.get(p, (dkv,)),
                                             dt)
            if qk_norm:   # RMSNorm scales of every head's q and k: ones
                params["q_norm"], params["k_norm"] = (jnp.ones((d // heads,), dt) for _ in "qk")
            if t5:   # T5 (Mesh TF, T5X): Glorot uniform; its own key, the others unchanged
                params["rel_bias"] = initializers.xavier_uniform()(
                    jax.random.fold_in(key, 8), (bias_spec[1], heads), dt)
            if decode and cross:   # the context's keys/values: (N, S, K, dh), or (S, K, dh)
                return params, decoding.init_memory(c_shape[:-2], c_shape[-2], kv_heads,
                                                    d // heads, dt)
            if decode:   # the cache of every sequence: (N, L, K, dh), or (L, K, dh)
                size = shape[-2] if window is None else min(shape[-2], window)  # W: a ring
                return params, decoding.init_cache(shape[:-2], size, kv_heads, d // heads, dt)
            return params, ()
        shapes, dtypes = (shape,), (dt,)
        if cross:
            shapes, dtypes = shapes + (c_shape,), dtypes + (dt,)
        if packed and m_shape is None:    # segment ids: x's (and context's) shape without
            m_shape = tuple(shape[:-1])   # its features
            m_shape = (m_shape, tuple(c_shape[:-1])) if cross else m_shape
        if m_shape is not None:   # the op checks the mask against x (and context) now
            mask = (tuple(check_input_shape(name, key, m, None) for m in m_shape)
                    if packed and cross else check_input_shape(name, key, m_shape, None))
            shapes, dtypes = shapes + (mask,), dtypes + (jnp.int32 if packed else jnp.bool_,)
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
        segments = None
        if packed:      # the op's mask_fn reads them (below): self-attention's sequences are
            # runs of equal ids, numbered; the cross pairs x's and context's ids by equality
            segments, mask = packing.segments(name, x, mask, ctx if cross else None), None
            segments = segments if cross else packing.sequence_numbers(segments)
        check_params(name, "params", params, _shapes(params))
        if not decode:
            check_no_params(name, (), state)
        cached = cross and ctx is None      # decode=True: the context's k, v from the cache
        if cached and not decode:
            raise TypeError(f"{name}: context is None: only CrossAttention(..., decode=True) "
                            f"reads the keys and values of a context given earlier")
        if cross and not cached:
            _checks.check_float(name, "context", ctx)
        x, (params, ctx) = promote(x, (params, ctx), name)
        _checks.check_rank(name, "x", x, (2, 3), _LAYOUT)
        if cross and not cached:
            _checks.check_rank(name, "context", ctx, x.ndim,
                               f"(N, S, Fc) for x {_checks.shape_of(x)}" if x.ndim == 3
                               else f"(S, Fc) for one sequence x {_checks.shape_of(x)}")
            if x.ndim == 3:
                _checks.check_same_leading(name, {"x": x, "context": ctx})
        d = params["wq"].shape[1]
        _check_heads(name, "params['wq'].shape[1]", d, heads)
        dh = d // heads
        single = x.ndim == 2
        xb = x[None] if single else x
        cb = xb if not cross else None if cached else ctx[None] if single else ctx
        if single and mask is not None and jnp.ndim(mask) == 3:
            mask = mask[None]     # one sequence's (heads or 1, T or 1, S): vmap over examples
        n, t = xb.shape[:2]
        drop = rate if check_train(name, train) else 0.0
        if _checks.may_drop(drop):
            check_train_key(name, key, f" with dropout_rate={_checks.value_text(rate)}")
        with _checks.context(name):
            q = _project(xb, params, "q").reshape(n, t, heads, dh)
            k, v = (None, None) if cached else (
                _project(cb, params, p).reshape(n, cb.shape[1], kv_heads, dh) for p in "kv")
            if qk_norm:   # before rope and the cache (Gemma 3, Qwen 3)
                q = ops.rms_norm(q, params["q_norm"])
                k = None if cached else ops.rms_norm(k, params["k_norm"])
            if rope is not None and not decode:   # positions 0 .. T-1
                q, k = rotate(None, q, k)
        fits = mask_fn = mask_params = None
        if packed:      # segment ids, read per block
            mask_fn, mask_params = ops.same_segment, segments
        if cross and decode:   # write the context's k, v into the cache, or read them
            k, v, state, fits = decoding.cached_memory(
                name, state, k, v, () if single else (n,), kv_heads, dh, q.dtype)
        elif decode:   # its errors name the layer themselves; what each query sees and the
            # positions of a bias: functions of a block's positions (no T x L array)
            q, k, v, mask, state, fits, positions = decoding.attend_cached(
                name, state, q, k, v, mask, heads, single,
                None if rope is None else rotate, window)
            mask_fn, mask_params = decoding.visible_fn(window), positions
        slopes = bias_fn = bias_params = None
        if bias_spec is not None and decode:   # query t at index + t, keys where cached
            bias_fn = _pb.positioned_bias_fn(bias_spec, heads, jnp.dtype(q.dtype))
            bias_params = (params.get("rel_bias"), positions)
        elif bias_spec is not None and bias_spec[0] == "alibi":
            # positions 0 .. T-1 for queries and keys, the op's own: O(N) memory, no T x S
            slopes = jnp.asarray(_pb.alibi_slopes(heads), _checks.compute_dtype(q.dtype))
        elif bias_spec is not None:   # T5: gathered per block by the op
            bias_fn, bias_params = _pb.t5_bias_fn(bias_spec), params["rel_bias"]
        with _checks.context(name):
            o = ops.dot_product_attention(q, k, v, mask, alibi_slopes=slopes,
                                          bias_fn=bias_fn, bias_params=bias_params,
                                          mask_fn=mask_fn, mask_params=mask_params,
                                          causal=causal and not decode, dropout_rate=drop,
                                          dropout_key=key if _checks.may_drop(drop) else None,
                                          window=None if decode else window,
                                          **op_logits)
            y = _project(o.reshape(n, t, d), params, "o")
        y = decoding.guard(y, fits)
        return (y[0] if single else y), state

    def rotate(positions, q, k):
        """``q``, ``k`` rotated by ``positions`` (``None``: ``arange(T)``)."""
        return tuple(ops.rotary_embedding(a, positions, **rope) for a in (q, k))

    def _shapes(params):
        """Expected params shapes, sizes read from ``wq``/``wk``/``wo`` where not fixed."""
        def dims(w):
            w = params.get(w) if isinstance(params, dict) else None
            return (_checks.shape_of(w) + (None, None))[:2] if w is not None else (None, None)
        fq, dq = dims("wq")
        fk = dims("wk")[0] if cross else fq
        d = qkv_features if qkv_features is not None else dq
        dkv = None if d is None or d % heads else d // heads * kv_heads   # else: see apply
        o = out_features if out_features is not None else dims("wo")[1]
        shapes = {"wq": (fq, d), "wk": (fk, dkv), "wv": (fk, dkv), "wo": (d, o)}
        if use_bias:
            shapes.update({"bq": (d,), "bk": (dkv,), "bv": (dkv,), "bo": (o,)})
        if t5:
            shapes["rel_bias"] = (bias_spec[1], heads)
        if qk_norm:
            shapes["q_norm"] = shapes["k_norm"] = (None if d is None else d // heads,)
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
