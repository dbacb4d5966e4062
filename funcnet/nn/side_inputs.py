"""Side inputs through a stack: three combinators that pass a mask (or a context) through
the layers of a stack to the attention inside it (:func:`OnFirst`, :func:`KeepRest`,
:data:`DropRest`, :func:`Select`).

Side inputs: a layer's input is one array or a tuple, and the combinators pass a tuple on
as it is, so a key-padding mask reaches an attention layer only if every layer before it
passes it on. LayerNorm, Dense, ``Residual`` take one array. For a tuple ``(x, *rest)``
(``rest``: a mask, an encoder's output, or both)::

    OnFirst(f):                   (x, *rest) -> (f(x), *rest)            f reads x only
    KeepRest(g):                  (x, *rest) -> (g((x, *rest)), *rest)   g reads all
    KeepRest(g, residual=True):   (x, *rest) -> (x + g((x, *rest)), *rest)
    DropRest:                     (x, *rest) -> x
    Select(0, 2):                 (x, a, b)  -> (x, b)                   pick entries

A pre-LN transformer encoder block over a padded batch, ``(x, mask) -> (x', mask)`` with
``mask`` ``(N, 1, 1, T)`` (``True`` = a real token)::

    attn = nn.serial(nn.OnFirst(nn.LayerNorm()), nn.MultiHeadAttention(4))  # (x, m) -> y
    ffn = nn.serial(nn.LayerNorm(), nn.Dense(64), nn.GELU(), nn.Dense(16))
    block = nn.serial(nn.KeepRest(attn, residual=True), nn.OnFirst(nn.Residual(ffn)))
    encoder = nn.serial(block, block, nn.DropRest, nn.LayerNorm())          # -> (N, T, 16)
    encoder.init(key, ((-1, T, 16), (-1, 1, 1, T)))

A decoder block reads ``(x, context, mask)`` (``context`` the encoder's output, ``mask``
``(N, 1, 1, S)`` its padding): causal self-attention on ``x`` alone (right padding of
``x`` needs no mask under ``causal``: a real query never sees a later, padded key), then
cross-attention::

    self_attn = nn.OnFirst(nn.Residual(nn.serial(nn.LayerNorm(),
                                                 nn.MultiHeadAttention(4, causal=True))))
    cross = nn.KeepRest(nn.serial(nn.OnFirst(nn.LayerNorm()), nn.CrossAttention(4)),
                        residual=True)
    block = nn.serial(self_attn, cross, nn.OnFirst(nn.Residual(ffn)))

With a padded target too, the block reads ``(x, x_mask, context, context_mask)`` and each
attention picks its entries with :func:`Select`::

    self_attn = nn.KeepRest(nn.serial(nn.Select(0, 1), nn.OnFirst(nn.LayerNorm()),
                                      nn.MultiHeadAttention(4, causal=True)), residual=True)
    cross = nn.KeepRest(nn.serial(nn.Select(0, 2, 3), nn.OnFirst(nn.LayerNorm()),
                                  nn.CrossAttention(4)), residual=True)
    block = nn.serial(self_attn, cross, nn.OnFirst(nn.Residual(ffn)))

References:
  Trax's data-stack combinators (``tl.Residual``, ``tl.Select``) pass side inputs the
  same way.
"""
from __future__ import annotations

from funcnet import _checks
from funcnet.nn.base import (Layer, ValueLayer, check_keeps_shape, check_no_params, check_train,
                             describe, fmt, init_child, is_shape)
from funcnet.nn.combinators import _add, _check_layers
from funcnet._describe import described

__all__ = ["OnFirst", "KeepRest", "DropRest", "Select"]


# ------------------------------------------------- side inputs through combinators
# A tuple ``(x, *rest)`` flows through a stack: the layers that read ``x`` only are
# wrapped in OnFirst, those that read the side inputs too (attention) in KeepRest, and
# DropRest ends the stack. Params and state are the wrapped layer's, as in ``Residual``.

def _tuple_shapes(name: str, input_shape) -> tuple:
    """``init``'s ``(x_shape, *rest_shapes)``: a tuple of at least 2 entries, the first
    one a shape (the rest may be shapes, tuples of shapes or ``None``)."""
    if is_shape(input_shape) or not isinstance(input_shape, (tuple, list)):
        raise TypeError(f"{name}: input_shape must be a tuple of shapes (x, *rest), got "
                        f"{fmt(input_shape) if is_shape(input_shape) else repr(input_shape)}; "
                        f"the input is a tuple such as (x, mask)")
    if len(input_shape) < 2:
        raise ValueError(f"{name}: input_shape {fmt(input_shape)} has {len(input_shape)} "
                         f"entries, expected at least 2 (x, *rest)")
    return tuple(input_shape)


def _tuple_input(name: str, x) -> tuple:
    """``apply``'s ``(x, *rest)``: a tuple or list of at least 2 entries."""
    if not isinstance(x, (tuple, list)):
        raise TypeError(f"{name}: input must be a tuple (x, *rest), e.g. (x, mask), got "
                        f"{describe(x)}")
    if len(x) < 2:
        raise ValueError(f"{name}: input must be a tuple (x, *rest) of at least 2 entries, "
                         f"got a {type(x).__name__} of {len(x)}")
    return tuple(x)


@described
def OnFirst(layer: Layer) -> Layer:
    """``(x, *rest) -> (layer(x), *rest)``: ``layer`` on the first entry of a tuple, the
    rest passed through unchanged (a mask, an encoder's output, lengths).

    For the layers of a stack that do not read the side inputs (LayerNorm, Dense, an MLP,
    ``Residual(mlp)``). The same function as ``parallel(layer, Identity, ...)`` with one
    ``Identity`` per side input, for any number of them, and with ``layer``'s own params
    and state (no extra tuple).

    Shapes: ``init`` takes ``(x_shape, *rest_shapes)`` and returns ``(layer's output shape,
    *rest_shapes)``; ``apply`` takes a tuple (or list) of at least 2 entries and returns a
    tuple. Params and state: ``layer``'s; ``key`` and ``train`` go to ``layer`` unchanged.

    Example::

        nn.serial(nn.OnFirst(nn.LayerNorm()), nn.MultiHeadAttention(4))   # (x, mask) -> y

    Raises:
      TypeError: at construction, if ``layer`` is not a Layer; an input (shape) that is not
        a tuple.
      ValueError: a tuple of fewer than 2 entries; ``layer``'s errors, prefixed with
        ``"OnFirst(<layer name>)"``.
    """
    (layer,) = _check_layers("OnFirst", (layer,))
    name = f"OnFirst({layer.name})"

    def init(key, input_shape):
        key = _checks.check_key(f"{name}.init", key)
        first, *rest = _tuple_shapes(name, input_shape)
        with _checks.context(name):   # our name already holds the layer's name
            out, params, state = init_child(None, 0, layer, key, first)
        return (out, *rest), params, state

    def apply(params, state, x, *, key=None, train=False):
        train = check_train(name, train)
        first, *rest = _tuple_input(name, x)
        with _checks.context(name):
            y, state = layer.apply(params, state, first, key=key, train=train)
        return (y, *rest), state

    return Layer(init, apply, name, (layer,))


@described
def KeepRest(layer: Layer, *, residual: bool = False) -> Layer:
    """``(x, *rest) -> (layer((x, *rest)), *rest)``: ``layer`` reads the whole tuple (an
    attention layer reads ``(x, mask)`` or ``(x, context, mask)``), its output replaces
    ``x`` and the side inputs are kept for the next layers.

    With ``residual=True``: ``(x, *rest) -> (x + layer((x, *rest)), *rest)``, the residual
    connection of a transformer sub-layer (``nn.Residual`` adds to one array only).

    Shapes: ``init`` takes ``(x_shape, *rest_shapes)``; ``layer`` gets all of it and its
    output shape replaces ``x_shape`` (with ``residual=True`` it must equal ``x_shape``).
    Output: a tuple ``(y, *rest)``; with ``residual``, ``y`` is in the common dtype of ``x``
    and ``layer``'s output. Params and state: ``layer``'s; ``key`` and ``train`` go to
    ``layer`` unchanged.

    Example, the attention sub-layer of a pre-LN encoder block over a padded batch::

        attn = nn.serial(nn.OnFirst(nn.LayerNorm()), nn.MultiHeadAttention(4))
        sub = nn.KeepRest(attn, residual=True)    # (x, mask) -> (x + attn((x, mask)), mask)
        sub.init(key, ((-1, T, F), (-1, 1, 1, T)))

    Args:
      layer: a :class:`Layer` that takes the tuple.
      residual: add ``x`` to ``layer``'s output.

    Raises:
      TypeError: at construction, if ``layer`` is not a Layer or ``residual`` not a bool;
        an input (shape) that is not a tuple.
      ValueError: a tuple of fewer than 2 entries; with ``residual``, a ``layer`` that
        changes ``x``'s shape; ``layer``'s errors, prefixed with the combinator's name.
    """
    (layer,) = _check_layers("KeepRest", (layer,))
    residual = _checks.static_bool("KeepRest", "residual", residual)
    name = f"KeepRest({layer.name}{', residual=True' if residual else ''})"

    why = "x + layer((x, *rest)) needs the same shape"

    def init(key, input_shape):
        key = _checks.check_key(f"{name}.init", key)
        shapes = _tuple_shapes(name, input_shape)
        with _checks.context(name):
            out, params, state = init_child(None, 0, layer, key, shapes)
        if residual and not is_shape(out):
            raise ValueError(f"{name}: layer outputs the tuple of shapes {fmt(out)}; x + "
                             f"layer((x, *rest)) needs one array")
        if residual:
            check_keeps_shape(name, shapes[0], out, why)
        return (tuple(shapes[0]) if residual else out, *shapes[1:]), params, state

    def apply(params, state, x, *, key=None, train=False):
        train = check_train(name, train)
        xs = _tuple_input(name, x)
        with _checks.context(name):
            y, state = layer.apply(params, state, xs, key=key, train=train)
        if residual:
            _checks.check_array(name, "x", xs[0])
            _checks.check_array(name, "layer((x, *rest))", y)
            check_keeps_shape(name, _checks.shape_of(xs[0]), _checks.shape_of(y), why)
            y = _add((xs[0], y))
        return (y, *xs[1:]), state

    return Layer(init, apply, name, (layer,))


def _drop_rest() -> ValueLayer:
    name = "DropRest"

    def init(key, input_shape):
        _checks.check_key(f"{name}.init", key)
        return _tuple_shapes(name, input_shape)[0], (), ()

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_no_params(name, params, state)
        return _tuple_input(name, x)[0], state

    return ValueLayer(init, apply, name)


DropRest = _drop_rest()
"""``(x, *rest) -> x``: ends a stack that carried side inputs (a mask, a context), e.g.
before the head of an encoder. A layer value; ``nn.DropRest()`` returns the same layer.
Params ``()``, state ``()``."""


@described
def Select(*indices: int) -> Layer:
    """``(a_0, a_1, ..., a_n) -> (a_i for i in indices)``: the entries of a tuple input
    that the next layer reads, in the order given (Trax's ``tl.Select``); one index gives
    that entry itself, not a 1-tuple.

    Inside :func:`KeepRest` it hands an attention layer its own side inputs out of
    several, e.g. ``Select(0, 1)`` for a self-attention's ``(x, x_mask)`` and
    ``Select(0, 2, 3)`` for a cross-attention's ``(x, context, context_mask)`` out of
    ``(x, x_mask, context, context_mask)`` (module docstring).

    Shapes: ``init`` takes the tuple of shapes and returns the selected ones (an entry may
    be any shape, a tuple of shapes or ``None``). Params ``()``, state ``()``.

    Args:
      *indices: at least one int >= 0; repeats are allowed (``Select(0, 0)`` duplicates
        the first entry).

    Raises:
      TypeError: at construction, an index that is not an int (a bool, a float); an input
        (shape) that is not a tuple or list.
      ValueError: at construction no index or a negative one; an input with no entry at
        the largest index.
    """
    if not indices:
        raise ValueError("Select: expected at least one index, got none")
    picked = tuple(_checks.static_int("Select", f"index {k}", i, minimum=0)
                   for k, i in enumerate(indices))
    name = f"Select({', '.join(map(str, picked))})"
    need = max(picked) + 1

    def pick(what: str, entries, shapes: bool):
        one_shape = shapes and is_shape(entries)    # (-1, 4): one shape, not a tuple of them
        if not isinstance(entries, (tuple, list)) or one_shape:
            got = fmt(entries) if one_shape else describe(entries)
            raise TypeError(f"{name}: {what} must be a tuple with at least {need} entries, "
                            f"got {got}")
        if len(entries) < need:
            raise ValueError(f"{name}: {what} has {len(entries)} entries, expected at least "
                             f"{need} (indices {list(picked)})")
        out = tuple(entries[i] for i in picked)
        return out[0] if len(out) == 1 else out

    def init(key, input_shape):
        _checks.check_key(f"{name}.init", key)
        return pick("input_shape", input_shape, True), (), ()

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_no_params(name, params, state)
        return pick("the input", x, False), state

    return Layer(init, apply, name)
