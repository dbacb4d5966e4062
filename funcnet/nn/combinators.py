"""Combinators: ``serial``, ``parallel``, ``FanOut``, ``FanInSum``, ``FanInConcat``,
``Identity`` and ``Residual`` (stax's branching vocabulary, plus a residual wrapper).

Branching data is a tuple: ``FanOut(2)`` turns ``x`` into ``(x, x)``, ``parallel(f, g)``
maps ``(a, b)`` to ``(f(a), g(b))``, ``FanInSum`` / ``FanInConcat`` turn a tuple back
into one array. Shapes follow the same structure in ``init`` (a tuple of shapes). A
ResNet block with a projection shortcut, as in stax::

    nn.serial(nn.FanOut(2), nn.parallel(residual, shortcut), nn.FanInSum, nn.ReLU())

and with an identity shortcut ``nn.Residual(residual)`` (``x + residual(x)``).

Invariant: state, keys and ``train`` flow through every combinator as through
``serial``: params and state are tuples with one entry per sub-layer (``Residual`` keeps
its one layer's params and state as they are), a ``key`` is split into one key per
sub-layer (``None`` stays ``None``), ``train`` is passed unchanged. A sub-layer's error
carries its place, one entry per level: ``"serial[1]: parallel[0] (Dense(3)): affine:
..."``.

Stax compatibility: the parameter-free ``FanInSum`` and ``Identity`` are layers (stax
style, ``nn.FanInSum``) that also return themselves when called (funcnet style,
``nn.FanInSum()``, like ``nn.ReLU()``); ``FanOut(n)`` and ``FanInConcat(axis=-1)`` take
arguments and are called, as in stax. Unlike stax, branches are tuples (stax uses lists;
both are accepted as inputs), and inputs of ``FanInSum`` must have equal shapes (no
broadcasting) while their dtypes promote as in the layers (float32 + float64 -> float64).

References:
  ``jax/example_libraries/stax.py`` (``serial``, ``parallel``, ``FanOut``, ``FanInSum``,
  ``FanInConcat``, ``Identity``). He, Zhang, Ren, Sun (2016), "Deep Residual Learning for
  Image Recognition", https://arxiv.org/abs/1512.03385.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.nn.base import (Layer, ValueLayer, apply_child, check_keeps_shape, check_layer,
                             check_no_params, check_train, describe, fmt, init_child)
from funcnet._describe import described

__all__ = ["serial", "parallel", "FanOut", "FanInSum", "FanInConcat", "Identity", "Residual"]


def _check_layers(fn: str, layers) -> tuple:
    return tuple(check_layer(fn, f"argument {i}", layer) for i, layer in enumerate(layers))


def _check_entries(fn: str, what: str, tree, names: Sequence[str]) -> None:
    """``tree`` must be a tuple/list with one entry per sub-layer."""
    if not isinstance(tree, (tuple, list)) or len(tree) != len(names):
        got = (f"{type(tree).__name__} with {len(tree)} entries"
               if isinstance(tree, (tuple, list)) else type(tree).__name__)
        raise ValueError(
            f"{fn}: {what} is a {got}, expected a tuple with one entry per layer "
            f"({len(names)}: {', '.join(names)}); got structure "
            f"{jax.tree_util.tree_structure(tree)}. Was it made by another model's init?")


def _split(fn: str, key, n: int, *, required: bool = False) -> list:
    """One key per sub-layer (``None`` for every one when ``key`` is ``None`` and not
    ``required``, as in ``apply``; ``init`` requires a key)."""
    if key is None and not required:
        return [None] * n
    key = _checks.check_key(fn, key)
    return list(jax.random.split(key, n)) if n else []


def _branches(fn: str, what: str, value, n: int | None = None, hint: str = "") -> tuple:
    """A tuple/list with one entry per branch (``n`` of them, or at least one)."""
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{fn}: {what} must be a tuple with one entry per branch, got "
                        f"{describe(value)}{hint}")
    if (n is not None and len(value) != n) or len(value) < 1:
        want = f"{n}" if n is not None else "at least 1"
        raise ValueError(f"{fn}: {what} has {len(value)} entries, expected {want} (one per "
                         f"branch){hint}")
    return tuple(value)


def _shapes(fn: str, input_shape, n: int | None = None, hint: str = "",
            allow_none: bool = False) -> tuple:
    """``input_shape`` of a multi-input layer: a tuple of shapes (with ``allow_none``,
    ``None`` entries too: the recurrent layers' carry placeholder, for a branch such as
    ``Identity`` that passes it on)."""
    shapes = _branches(fn, "input_shape", input_shape, n, hint)
    for i, s in enumerate(shapes):
        if s is None and allow_none:
            continue
        if not isinstance(s, (tuple, list)):
            raise TypeError(f"{fn}: input_shape must be a tuple of shapes (one per branch), "
                            f"got {input_shape!r}: entry {i} is {type(s).__name__}{hint}")
    return tuple(None if s is None else tuple(s) for s in shapes)


def _arrays(fn: str, x, n: int | None = None) -> tuple:
    xs = _branches(fn, "x", x, n)
    for i, a in enumerate(xs):
        _checks.check_array(fn, f"x[{i}]", a)
    return xs


def _same_shapes(fn: str, what: str, shapes: Sequence[tuple], why: str) -> None:
    for i, s in enumerate(shapes[1:], 1):
        if tuple(s) != tuple(shapes[0]):
            raise ValueError(f"{fn}: {what}[{i}] has shape {fmt(s)} but {what}[0] has shape "
                             f"{fmt(shapes[0])}; {why}")


def _add(xs):
    """Elementwise sum of equal-shape arrays in their common dtype (JAX's promotion)."""
    with jax.numpy_dtype_promotion("standard"):
        dt = jnp.result_type(*xs)
    total = xs[0].astype(dt)
    for a in xs[1:]:
        total = total + a.astype(dt)
    return total


# ------------------------------------------------------------------- serial, parallel

@described
def serial(*layers: Layer) -> Layer:
    """Compose layers in sequence: ``serial(f, g, h)(x) = h(g(f(x)))``.

    ``init`` threads the shape through every layer and splits ``key`` once into one key
    per layer. ``apply`` threads ``x`` and each layer's state; when a ``key`` is given it
    is split into one key per layer (so a dropout layer gets a fresh key), when ``key`` is
    ``None`` every layer receives ``None``.

    Args:
      *layers: the :class:`Layer` s, applied first to last.

    Returns:
      A :class:`Layer` named ``"serial"`` whose params and state are tuples with one entry
      per layer. ``apply(params, state, x, key=None, train=False) -> (y, new_state)``.

    Raises:
      TypeError: at construction, if an argument is not a Layer.
      ValueError: in ``apply``, if ``params`` or ``state`` is not a tuple/list with one
        entry per layer (a params tree from another model); the message lists both
        structures. Errors of a layer carry its place, ``"serial[i] (name): ..."``
        (``"serial[i]: ..."`` before a nested combinator's own place).
    """
    layers = _check_layers("serial", layers)
    names = [layer.name for layer in layers]
    where = [f"serial[{i}]" for i in range(len(layers))]

    def init(key, input_shape):
        keys = _split("serial.init", key, len(layers), required=True)
        shape, params, states = input_shape, [], []
        for i, (layer, k) in enumerate(zip(layers, keys)):
            shape, p, s = init_child(where[i], i, layer, k, shape)
            params.append(p)
            states.append(s)
        return shape, tuple(params), tuple(states)

    def apply(params, state, x, *, key=None, train=False):
        train = check_train("serial", train)
        _check_entries("serial", "params", params, names)
        _check_entries("serial", "state", state, names)
        new_states = []
        for i, (layer, p, s, k) in enumerate(zip(layers, params, state,
                                                 _split("serial", key, len(layers)))):
            x, s = apply_child(where[i], layer, p, s, x, k, train)
            new_states.append(s)
        return x, tuple(new_states)

    return Layer(init, apply, "serial", layers)


@described
def parallel(*layers: Layer) -> Layer:
    """Apply one layer per element of a tuple input: ``(a, b) -> (f(a), g(b))`` (stax).

    Usually preceded by :func:`FanOut` and followed by :data:`FanInSum` or
    :func:`FanInConcat`.

    Shapes:
      ``init`` takes a tuple of input shapes, one per layer, and returns the tuple of their
      output shapes; ``apply`` takes a tuple (or list) of arrays and returns a tuple.
      params and state: tuples with one entry per layer.

    Args:
      *layers: the :class:`Layer` s, one per branch.

    Returns:
      A :class:`Layer` named ``"parallel"``; ``key`` is split into one key per branch.

    Raises:
      TypeError: at construction, if an argument is not a Layer; in ``init``/``apply`` if
        the input is not a tuple (of shapes).
      ValueError: an input tuple or params/state with the wrong number of entries.
    """
    layers = _check_layers("parallel", layers)
    names = [layer.name for layer in layers]
    n = len(layers)
    where = [f"parallel[{i}]" for i in range(n)]
    hint = f"; put FanOut({n}) before parallel to feed one input to every branch"

    def init(key, input_shape):
        keys = _split("parallel.init", key, n, required=True)
        shapes = _shapes("parallel", input_shape, n, hint, allow_none=True)
        outs = [init_child(where[i], i, layer, k, s)
                for i, (layer, k, s) in enumerate(zip(layers, keys, shapes))]
        return tuple(tuple(o) for o in zip(*outs)) if outs else ((), (), ())

    def apply(params, state, x, *, key=None, train=False):
        train = check_train("parallel", train)
        xs = _branches("parallel", "x", x, n, hint)
        _check_entries("parallel", "params", params, names)
        _check_entries("parallel", "state", state, names)
        outs = [apply_child(where[i], layer, p, s, xi, k, train)
                for i, (layer, p, s, xi, k) in enumerate(
                    zip(layers, params, state, xs, _split("parallel", key, n)))]
        return tuple(y for y, _ in outs), tuple(s for _, s in outs)

    return Layer(init, apply, "parallel", layers)


# ----------------------------------------------------------------- fan out / fan in

@described
def FanOut(n: int) -> Layer:
    """``x -> (x, ..., x)``, ``n`` copies, to feed :func:`parallel` branches (stax).

    Args:
      n: the number of copies, an int >= 1.

    Returns:
      A parameter-free :class:`Layer` named ``"FanOut(n)"``; ``init`` returns a tuple of
      ``n`` copies of the input shape.
    """
    n = _checks.static_int("FanOut", "n", n, minimum=1)
    name = f"FanOut({n})"

    def init(key, input_shape):
        _checks.check_key(f"{name}.init", key)
        return (input_shape,) * n, (), ()

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_no_params(name, params, state)
        return (x,) * n, state

    return Layer(init, apply, name)


def _fan_in_sum() -> ValueLayer:
    name = "FanInSum"
    why = "FanInSum adds its inputs elementwise (no broadcasting)"

    def init(key, input_shape):
        _checks.check_key(f"{name}.init", key)
        shapes = _shapes(name, input_shape)
        _same_shapes(name, "input_shape", shapes, why)
        return shapes[0], (), ()

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_no_params(name, params, state)
        xs = _arrays(name, x)
        _same_shapes(name, "x", [_checks.shape_of(a) for a in xs], why)
        return _add(xs), state

    return ValueLayer(init, apply, name)


FanInSum = _fan_in_sum()
"""``(x_0, ..., x_k) -> x_0 + ... + x_k`` (stax's ``FanInSum``): a layer value; ``nn.FanInSum()``
returns the same layer. Inputs must have equal shapes; dtypes promote (float32 + float64
-> float64). Params ``()``, state ``()``."""


@described
def FanInConcat(axis: int = -1) -> Layer:
    """``(x_0, ..., x_k) -> concatenate(x_i, axis)`` (stax's ``FanInConcat``).

    Every input must have the same rank and the same sizes except along ``axis``; dtypes
    promote as in :data:`FanInSum`. With the default ``axis=-1`` (features / channels),
    ``((N, 3), (N, 4)) -> (N, 7)``.

    Args:
      axis: a static int in ``[-rank, rank)``.

    Returns:
      A parameter-free :class:`Layer` named ``"FanInConcat(axis)"``.
    """
    axis = _checks.static_int("FanInConcat", "axis", axis)
    name = f"FanInConcat({axis})"

    def concat_shape(what, shapes):
        rank = len(shapes[0])
        for i, s in enumerate(shapes):
            if len(s) != rank:
                raise ValueError(f"{name}: {what}[{i}] has shape {fmt(s)} but {what}[0] has "
                                 f"shape {fmt(shapes[0])}; inputs must have equal ranks")
        ax = _checks.check_axis(name, axis, rank)
        for i, s in enumerate(shapes):
            if s[:ax] + s[ax + 1:] != shapes[0][:ax] + shapes[0][ax + 1:]:
                raise ValueError(f"{name}: {what}[{i}] has shape {fmt(s)} but {what}[0] has "
                                 f"shape {fmt(shapes[0])}; inputs must agree on every axis "
                                 f"but axis {axis}")
        sizes = [s[ax] for s in shapes]
        return shapes[0][:ax] + (-1 if -1 in sizes else sum(sizes),) + shapes[0][ax + 1:]

    def init(key, input_shape):
        _checks.check_key(f"{name}.init", key)
        return concat_shape("input_shape", _shapes(name, input_shape)), (), ()

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_no_params(name, params, state)
        xs = _arrays(name, x)
        concat_shape("x", [_checks.shape_of(a) for a in xs])
        with jax.numpy_dtype_promotion("standard"):
            dt = jnp.result_type(*xs)
        return jnp.concatenate([a.astype(dt) for a in xs], axis=axis), state

    return Layer(init, apply, name)


def _identity() -> ValueLayer:
    name = "Identity"

    def init(key, input_shape):
        _checks.check_key(f"{name}.init", key)
        return input_shape, (), ()

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_no_params(name, params, state)
        return x, state

    return ValueLayer(init, apply, name)


Identity = _identity()
"""``x -> x`` for any input, including tuples (stax's ``Identity``): a layer value;
``nn.Identity()`` returns the same layer. Params ``()``, state ``()``."""


# --------------------------------------------------------------------------- residual

@described
def Residual(layer: Layer) -> Layer:
    """``x -> x + layer(x)``: a residual connection around ``layer`` (He et al. 2016).

    The same as ``serial(FanOut(2), parallel(layer, Identity), FanInSum)``, with the
    wrapped layer's params and state kept as they are (no extra tuple), and the key and
    ``train`` passed to ``layer`` unchanged.

    Shapes: ``layer`` must map the input shape to itself; output: the input's shape, in
    the common dtype of ``x`` and ``layer(x)``.

    Args:
      layer: a :class:`Layer`.

    Returns:
      A :class:`Layer` named ``"Residual(<layer name>)"``.

    Raises:
      TypeError: at construction, if ``layer`` is not a Layer.
      ValueError: in ``init`` (and ``apply``) if ``layer`` changes the shape, e.g.
        ``Residual(Dense(3))`` on 4 features; use a projection shortcut
        (``FanOut(2)``, ``parallel(layer, projection)``, ``FanInSum``) for that.
    """
    (layer,) = _check_layers("Residual", (layer,))
    name = f"Residual({layer.name})"
    why = ("x + layer(x) needs layer to keep the shape (use FanOut(2), parallel(layer, "
           "projection), FanInSum for a projection shortcut)")

    def init(key, input_shape):
        key = _checks.check_key(f"{name}.init", key)
        with _checks.context(name):   # our name already holds the layer's name
            out, params, state = init_child(None, 0, layer, key, input_shape)
        check_keeps_shape(name, input_shape, out, why)
        return input_shape, params, state

    def apply(params, state, x, *, key=None, train=False):
        train = check_train(name, train)
        with _checks.context(name):
            y, state = layer.apply(params, state, x, key=key, train=train)
        _checks.check_array(name, "x", x)
        _checks.check_array(name, "layer(x)", y)
        check_keeps_shape(name, _checks.shape_of(x), _checks.shape_of(y), why)
        return _add((x, y)), state

    return Layer(init, apply, name, (layer,))
