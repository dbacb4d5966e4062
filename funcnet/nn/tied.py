"""``TiedEmbedding``: a language model's input embedding and output projection as one
table (weight tying).

GPT-2, T5 and most small language models map token ids to vectors with an embedding
table ``E`` ``(V, F)`` and map the last hidden states back to ``V`` logits with ``Eᵀ``:
one parameter matrix, trained by both uses. In a stack (``serial``) every layer owns its
params, so the tie is a wrapper around the part of the model between the two uses::

    body = nn.serial(nn.PositionEmbedding(T), nn.Repeat(block, 12), nn.LayerNorm())
    model = nn.TiedEmbedding(V, D, body)        # ids (N, T) -> logits (N, T, V)

References:
  Press & Wolf (2017), "Using the Output Embedding to Improve Language Models",
  https://arxiv.org/abs/1608.05859; Flax ``nn.Embed.attend``.
"""
from __future__ import annotations

import jax

from funcnet import _checks, ops
from funcnet.nn.base import (Layer, apply_child, check_layer, check_train, fmt, init_child, is_shape,
                             promote)
from funcnet.nn.combinators import Identity
from funcnet.nn.embedding import Embedding
from funcnet._describe import described

__all__ = ["TiedEmbedding"]

WHERE = ("TiedEmbedding[embedding]", "TiedEmbedding[body]")
_DROP_REST = "end a body that carries side inputs (ids, *rest) with nn.DropRest"


@described
def TiedEmbedding(num_embeddings: int, features: int, body: Layer = Identity, *,
                  embedding_init=None, dtype=None) -> Layer:
    """Embedding, ``body``, then the transposed embedding table as the output projection.

    For integer ids ``(..., )`` and a table ``E`` ``(V, F)``::

        h = E[ids]                     (..., F)       funcnet.ops.embedding
        h = body(h)                    (..., F)       params["body"], state
        logits = h Eᵀ                  (..., V)       funcnet.ops.matmul

    ``E`` receives the sum of both uses' gradients (the embedding op's scatter-add and the
    product's ``dEᵀ = hᵀ g``), as in a model written with one shared array. ``body``'s
    state flows as through ``serial`` (batch-norm statistics, a decoding cache), with its
    ``key`` and ``train``. The logits are in the common dtype of ``h`` and ``E``.

    Side inputs (a padding mask, an encoder's output; :mod:`funcnet.nn.side_inputs`):
    the input may be a tuple ``(ids, *rest)``; ``body`` then gets ``(E[ids], *rest)`` and
    must return one array (end it with :data:`~funcnet.nn.DropRest`)::

        blocks = nn.Repeat(nn.serial(nn.KeepRest(attn, residual=True),
                                     nn.OnFirst(nn.Residual(mlp))), 12)
        model = nn.TiedEmbedding(V, D, nn.serial(blocks, nn.DropRest, nn.RMSNorm()))
        model.init(key, ((-1, T), (-1, 1, 1, T)))           # (ids, key-padding mask)

    Shapes:
      input: integer ids of any shape, e.g. ``(N, T)``; in ``init`` one size may be
        ``-1``. Or a tuple ``(ids, *rest)`` (``init``: ``(ids_shape, *rest_shapes)``).
      output: ``(*ids.shape, V)`` when ``body`` keeps the shape; in general
        ``(*body_output.shape[:-1], V)``.
      params: ``{"embedding": (V, F), "body": body's params}``; state: ``body``'s state.

    Args:
      num_embeddings: ``V``, the vocabulary size, an int >= 1.
      features: ``F``, the model width, an int >= 1.
      body: the layer between the two uses (default :data:`~funcnet.nn.Identity`: a
        bigram model). Its output's last axis must be ``F``.
      embedding_init, dtype: as :func:`~funcnet.nn.Embedding` (default ``N(0, 1/F)``).

    Returns:
      A :class:`Layer` named ``"TiedEmbedding(V, F, <body name>)"``.

    Raises:
      TypeError: at construction, as :func:`~funcnet.nn.Embedding`, or ``body`` not a
        Layer.
      ValueError: in ``init`` or ``apply``, a ``body`` whose output's last axis is not
        ``F`` or whose output is a tuple; params without the ``"embedding"``/``"body"``
        entries; the embedding's and ``body``'s own errors, which carry their place.

    Example::

        model = nn.TiedEmbedding(50257, 768, nn.serial(blocks, nn.LayerNorm()))
        _, params, state = model.init(key, (-1, 1024))
        logits, state = model.apply(params, state, ids)           # (N, 1024, 50257)

    References:
      Press & Wolf (2017); Radford et al. (2019), GPT-2.
    """
    V = _checks.static_int("TiedEmbedding", "num_embeddings", num_embeddings, minimum=1)
    F = _checks.static_int("TiedEmbedding", "features", features, minimum=1)
    check_layer("TiedEmbedding", "body", body)
    embed = Embedding(V, F, embedding_init=embedding_init, dtype=dtype)
    name = f"TiedEmbedding({V}, {F}, {body.name})"

    def check_width(shape) -> None:
        if not is_shape(shape):
            raise ValueError(f"{name}: body outputs the tuple of shapes {fmt(shape)}, "
                             f"expected one (..., {F}) for the output projection; "
                             f"{_DROP_REST}")
        if not shape or shape[-1] != F:
            raise ValueError(f"{name}: body maps the embeddings (..., {F}) to "
                             f"{fmt(shape)}, expected a last axis of {F} (the table's "
                             f"width, which the output projection Eᵀ needs)")

    def init(key, input_shape):
        key = _checks.check_key(f"{name}.init", key)
        k_embed, k_body = jax.random.split(key)
        ids_shape, rest = _split(input_shape, is_shape)
        h_shape, p_embed, _ = init_child(WHERE[0], 0, embed, k_embed, ids_shape)
        body_shape = h_shape if rest is None else (h_shape, *rest)
        out_shape, p_body, s_body = init_child(WHERE[1], 1, body, k_body, body_shape)
        check_width(out_shape)
        return (*out_shape[:-1], V), {**p_embed, "body": p_body}, s_body

    def apply(params, state, x, *, key=None, train=False):
        train = check_train(name, train)
        if not isinstance(params, dict) or set(params) != {"embedding", "body"}:
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(f"{name}: params has entries {got}, expected ['body', "
                             f"'embedding'] (made by another layer or model?)")
        table = params["embedding"]
        ids, rest = _split(x, lambda a: not (isinstance(a, (tuple, list)) and a
                                             and hasattr(a[0], "shape")))
        h, _ = apply_child(WHERE[0], embed, {"embedding": table}, (), ids, None, train)
        h, state = apply_child(WHERE[1], body, params["body"], state,
                               h if rest is None else (h, *rest), key, train)
        if isinstance(h, (tuple, list)):
            raise ValueError(f"{name}: body outputs a {type(h).__name__} of {len(h)} "
                             f"entries, expected one array (..., {F}) for the output "
                             f"projection; {_DROP_REST}")
        check_width(_checks.shape_of(h))
        h, table = promote(h, table, name)
        with _checks.context(name):
            return ops.matmul(h, table.T), state

    return Layer(init, apply, name, (embed, body))


def _split(x, single):
    """``(ids, None)`` for ``single(x)``, ``(ids, rest)`` for a tuple ``(ids, *rest)`` of
    at least 2 entries (side inputs for ``body``); anything else is left to the embedding
    (whose error names it)."""
    if single(x) or not isinstance(x, (tuple, list)) or len(x) < 2:
        return x, None
    return x[0], tuple(x[1:])
