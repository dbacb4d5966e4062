"""The layer protocol, the ``serial`` combinator and the shape checks shared by layers.

A layer is a :class:`Layer`, a NamedTuple of two pure functions (stax's contract)::

    output_shape, params, state = layer.init(key, input_shape)   # batch dim may be -1
    y, state = layer.apply(params, state, x, key=None, train=False)

``params`` and ``state`` are pytrees of arrays: a ``dict`` of arrays for a layer with
weights (``{"w": ..., "b": ...}``), ``()`` for a layer without. ``state`` holds what a
layer updates itself during training (batch-norm running statistics); it is ``()`` for
stateless layers. A model built with :func:`serial` has a ``tuple`` of per-layer
params and a ``tuple`` of per-layer states, one entry per layer, in order: tuples of
dicts of arrays, which print readably and describe themselves in a JSON checkpoint.

Shapes: the leading axis is the batch ``N`` (``-1`` in ``init`` when not yet known);
only the batch dimension may be ``-1``. Every ``apply`` checks its input and params at
trace time (static shapes, never traced values) and raises ``ValueError`` naming the
layer, the argument, and the expected and actual shapes.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np

from funcnet.ops._checks import shape_of  # noqa: F401  (re-used by the layer modules)

__all__ = ["Layer", "serial"]


class Layer(NamedTuple):
    """A layer: a pair of pure functions, plus a display name.

    Attributes:
      init: ``init(key, input_shape) -> (output_shape, params, state)``. ``input_shape``
        is a tuple of ints whose leading batch dimension may be ``-1``; the returned
        ``output_shape`` keeps that ``-1``.
      apply: ``apply(params, state, x, key=None, train=False) -> (y, state)``. ``key``
        (keyword-only in the built-in layers) is a PRNG key for stochastic layers;
        ``train`` selects training behaviour (batch statistics, dropout). ``train`` is a
        Python bool: mark it static under ``jax.jit``.
      name: shown in error messages and by :func:`funcnet.nn.summary`, e.g. ``"Dense(100)"``.
      layers: the sub-layers of a combinator (``serial``), ``()`` for a leaf layer.

    ``Layer(init, apply)`` stays constructible positionally; unpack stax-style with
    ``init, apply, *_ = layer``.
    """

    init: Callable[..., Any]
    apply: Callable[..., Any]
    name: str = "Layer"
    layers: tuple = ()


def serial(*layers: Layer) -> Layer:
    """Compose layers in sequence: ``serial(f, g, h)(x) = h(g(f(x)))``.

    ``init`` threads the shape through every layer and splits ``key`` once into one key
    per layer. ``apply`` threads ``x`` and each layer's state; when a ``key`` is given it
    is split into one key per layer (so a dropout layer gets a fresh key), when ``key`` is
    ``None`` every layer receives ``None``.

    Args:
      *layers: the :class:`Layer` s, applied first to last.

    Returns:
      A :class:`Layer` whose params and state are tuples with one entry per layer.
      ``apply(params, state, x, key=None, train=False) -> (y, new_state)``.

    Raises:
      TypeError: at construction, if an argument is not a Layer.
      ValueError: in ``apply``, if ``params`` or ``state`` is not a tuple/list with one
        entry per layer (a params tree from another model); the message lists both
        structures. Errors of the layers themselves are re-raised with the layer index.
    """
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"serial: argument {i} must be a Layer (init, apply), got {type(layer).__name__}")
    layers = tuple(layers)
    names = [layer.name for layer in layers]
    n = len(layers)

    def init(key, input_shape):
        keys = jax.random.split(key, n) if n else []
        shape = tuple(input_shape)
        params, states = [], []
        for layer, k in zip(layers, keys):
            shape, p, s = layer.init(k, shape)
            params.append(p)
            states.append(s)
        return shape, tuple(params), tuple(states)

    def apply(params, state, x, *, key=None, train=False):
        _check_entries("params", params, names)
        _check_entries("state", state, names)
        keys = jax.random.split(key, n) if (key is not None and n) else [None] * n
        new_states = []
        for i, (layer, p, s, k) in enumerate(zip(layers, params, state, keys)):
            try:
                x, s = layer.apply(p, s, x, key=k, train=train)
            except ValueError as e:
                if str(e).startswith("serial"):
                    raise
                raise ValueError(f"serial layer {i} ({layer.name}): {e}") from e
            new_states.append(s)
        return x, tuple(new_states)

    return Layer(init, apply, "serial", layers)


def _check_entries(what: str, tree, names: Sequence[str]) -> None:
    if not isinstance(tree, (tuple, list)) or len(tree) != len(names):
        got = (f"{type(tree).__name__} with {len(tree)} entries"
               if isinstance(tree, (tuple, list)) else type(tree).__name__)
        raise ValueError(
            f"serial: {what} is a {got}, expected a tuple with one entry per layer "
            f"({len(names)}: {', '.join(names)}); got structure "
            f"{jax.tree_util.tree_structure(tree)}. Was it made by another model's init?")


# ----------------------------------------------------------------------------- helpers
# Shared trace-time checks; each takes the layer name first so messages read
# "Dense(100): input has shape (32, 5, 784), expected rank 2 (N, 784)".

def fmt(shape) -> str:
    """Format a shape with ``N`` for the batch axis: ``("N", 784) -> (N, 784)``."""
    shape = tuple(shape)
    if len(shape) == 1:
        return f"({shape[0]},)"
    return "(" + ", ".join(str(d) for d in shape) + ")"


def check_no_params(name: str, params, state) -> None:
    """A parameter-free layer must receive empty params and state (``()``)."""
    for what, tree in (("params", params), ("state", state)):
        if jax.tree_util.tree_leaves(tree):
            raise ValueError(
                f"{name}: {what} must be empty (() — {name} has no {what}), got "
                f"{jax.tree_util.tree_structure(tree)} with leaf shapes "
                f"{[shape_of(a) for a in jax.tree_util.tree_leaves(tree)]}")


def check_dict(name: str, what: str, tree, keys: Sequence[str]) -> None:
    """``tree`` must be a dict with exactly ``keys`` (params from another model fail here)."""
    if not isinstance(tree, dict) or set(tree) != set(keys):
        got = (f"a dict with keys {sorted(tree)}" if isinstance(tree, dict)
               else f"{type(tree).__name__} {jax.tree_util.tree_structure(tree)}")
        raise ValueError(f"{name}: {what} must be a dict with keys {sorted(keys)}, got {got}")


def check_float_input(name: str, x, like=None, like_name: str = "params") -> None:
    """``x`` must be a floating array (``like``/``like_name`` are unused: see :func:`promote`)."""
    del like, like_name
    dt = jax.numpy.result_type(x)
    if not jax.numpy.issubdtype(dt, jax.numpy.floating):
        raise TypeError(f"{name}: input must have a floating dtype, got {dt} "
                        f"with shape {shape_of(x)}")


def promote(x, params):
    """``(x, params)`` cast to their common floating dtype (JAX's standard promotion).

    As Flax's ``promote_dtype``: float32 params with a float64 input compute in float64,
    bfloat16 params with a float32 input in float32. The casts are explicit, so this also
    works under ``jax_numpy_dtype_promotion="strict"``.
    """
    leaves = [a for a in jax.tree_util.tree_leaves(params)
              if jax.numpy.issubdtype(jax.numpy.result_type(a), jax.numpy.floating)]
    with jax.numpy_dtype_promotion("standard"):
        dt = jax.numpy.result_type(x, *[jax.numpy.result_type(a) for a in leaves])

    def cast(a):
        return a.astype(dt) if jax.numpy.issubdtype(jax.numpy.result_type(a),
                                                    jax.numpy.floating) else a
    return x.astype(dt), jax.tree_util.tree_map(cast, params)


def check_init_shape(name: str, input_shape, ranks: Sequence[int], expected: str,
                     batch_axis: int | None = 0) -> tuple:
    """Validate an ``init`` shape: allowed rank, positive dims except a -1 batch."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) not in ranks:
        raise ValueError(f"{name}: input_shape {shape} has rank {len(shape)}, expected "
                         f"{expected}")
    if any(d <= 0 and not (i == batch_axis and d == -1) for i, d in enumerate(shape)):
        raise ValueError(f"{name}: input_shape {shape} must have positive sizes "
                         "(only the batch dimension may be -1)")
    return shape


def pair(name: str, what: str, v) -> tuple[int, int]:
    """An int or a pair of ints -> a pair of positive ints."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (int(v), int(v))
    if (not isinstance(v, (tuple, list)) or len(v) != 2
            or not all(isinstance(d, (int, np.integer)) and d > 0 for d in v)):
        raise ValueError(f"{name}: {what} must be a positive int or a pair of positive "
                         f"ints, got {v!r}")
    return (int(v[0]), int(v[1]))


def padding_pairs(name: str, padding) -> Any:
    """Normalise padding to ``'SAME'``, or ``((top, bottom), (left, right))`` ints."""
    if isinstance(padding, str):
        p = padding.upper()
        if p == "SAME":
            return "SAME"
        if p == "VALID":
            return ((0, 0), (0, 0))
        raise ValueError(f"{name}: padding must be an int, a pair, 'SAME' or 'VALID', "
                         f"got {padding!r}")
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool) and padding >= 0:
        return ((int(padding),) * 2,) * 2
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        if all(isinstance(p, (int, np.integer)) and p >= 0 for p in padding):
            return tuple((int(p), int(p)) for p in padding)
        if all(isinstance(p, (tuple, list)) and len(p) == 2 for p in padding):
            return tuple((int(p[0]), int(p[1])) for p in padding)
    raise ValueError(f"{name}: padding must be a non-negative int, a pair, 'SAME' or "
                     f"'VALID', got {padding!r}")


def window_output_size(name: str, size: int, window: int, stride: int, pad) -> int:
    """Spatial output size of a convolution / pooling window along one axis.

    ``out = floor((size + lo + hi - window) / stride) + 1``; with ``'SAME'``,
    ``out = ceil(size / stride)``.
    """
    if pad == "SAME":
        return -(-size // stride)
    lo, hi = pad
    out = (size + lo + hi - window) // stride + 1
    if out <= 0:
        raise ValueError(f"{name}: window {window} does not fit an input of size {size} "
                         f"with padding ({lo}, {hi})")
    return out


def prod(shape) -> int:
    return int(math.prod(shape))
