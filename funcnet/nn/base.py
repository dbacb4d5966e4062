"""The layer protocol and the few checks that belong to layers rather than to ops.

A layer is a :class:`Layer`, a NamedTuple of two pure functions (stax's contract)::

    output_shape, params, state = layer.init(key, input_shape)   # batch dim may be -1
    y, state = layer.apply(params, state, x, key=None, train=False)

``params`` and ``state`` are pytrees of arrays: a ``dict`` of arrays for a layer with
weights (``{"w": ..., "b": ...}``), ``()`` for a layer without. ``state`` holds what a
layer updates itself during training (batch-norm running statistics); it is ``()`` for
stateless layers. Combinators (:func:`~funcnet.nn.serial`, :func:`~funcnet.nn.parallel`)
have a ``tuple`` of per-layer params and a ``tuple`` of per-layer states.

Invariant: every check runs once, at the lowest public boundary. An op
(:mod:`funcnet.ops`) checks its arguments; a layer checks only what is its own (its
constructor arguments, its ``init`` ``input_shape``, the keys and shapes of its params
dict) and calls the op inside ``_checks.context(name)``, so the op's error gains the
layer's name: ``"Dense(3): affine: x has shape (2, 5) and w has shape (4, 3); ..."``.
``init`` computes the output shape by tracing ``apply`` (:func:`apply_shape`), so the
ops' shape rules are written once and their checks already run at ``init`` time.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from funcnet import _checks

__all__ = ["Layer", "ValueLayer"]


class Layer(NamedTuple):
    """A layer: a pair of pure functions, plus a display name.

    Attributes:
      init: ``init(key, input_shape) -> (output_shape, params, state)``. ``input_shape``
        is a tuple of ints whose leading batch dimension may be ``-1``; the returned
        ``output_shape`` keeps that ``-1``. Multi-input layers (``FanInSum``) take a tuple
        of shapes, multi-output layers (``FanOut``) return one.
      apply: ``apply(params, state, x, key=None, train=False) -> (y, state)``. ``key``
        (keyword-only in the built-in layers) is a PRNG key for stochastic layers;
        ``train`` selects training behaviour (batch statistics, dropout). ``train`` is a
        Python bool: mark it static under ``jax.jit``.
      name: shown in error messages and by :func:`funcnet.nn.summary`, e.g. ``"Dense(100)"``.
      layers: the sub-layers of a combinator (``serial``, ``parallel``, ``Residual``),
        ``()`` for a leaf layer.

    ``Layer(init, apply)`` stays constructible positionally; unpack stax-style with
    ``init, apply, *_ = layer``.
    """

    init: Callable[..., Any]
    apply: Callable[..., Any]
    name: str = "Layer"
    layers: tuple = ()


class ValueLayer(Layer):
    """A parameter-free layer usable as a value (stax) or called (funcnet): ``nn.FanInSum``
    and ``nn.FanInSum()`` are the same layer, so both ``stax.serial(..., FanInSum)`` habits
    and ``nn.ReLU()``-style calls work."""

    __slots__ = ()

    def __call__(self) -> "ValueLayer":
        return self

    def __repr__(self) -> str:
        return f"Layer(name={self.name!r})"


# ----------------------------------------------------------------------- own checks

def fmt(shape) -> str:
    """A shape as text, tuples of shapes nested: ``("N", 784) -> (N, 784)``."""
    if isinstance(shape, (tuple, list)) and any(isinstance(d, (tuple, list)) for d in shape):
        return "(" + ", ".join(fmt(s) for s in shape) + ")"
    shape = tuple(shape)
    if len(shape) == 1:
        return f"({shape[0]},)"
    return "(" + ", ".join(str(d) for d in shape) + ")"


def check_input_shape(name: str, key, input_shape, ranks: Sequence[int] | None = None,
                      layout: str = "", batch_axis: int = 0, batched_rank: int = 1) -> tuple:
    """Validate ``init``'s arguments: a PRNG key and a shape of positive ints.

    Only ``input_shape[batch_axis]`` may be ``-1`` (unknown batch), and only in shapes of
    rank >= ``batched_rank`` (a rank-1 ``(D,)`` is one example for Dense: its ``D`` must
    be known). ``TypeError`` for a non-tuple or a non-int size (``4.5``), ``ValueError``
    for a rank outside ``ranks`` or a size below 1.
    """
    _checks.check_key(f"{name}.init", key)
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError(f"{name}: input_shape must be a tuple of ints, got "
                        f"{type(input_shape).__name__} {input_shape!r}")
    shape = tuple(_checks.static_int(name, f"input_shape[{i}]", d)
                  for i, d in enumerate(input_shape))
    if ranks is not None and len(shape) not in ranks:
        want = (f">= {ranks.start}" if isinstance(ranks, range) and len(ranks) > 2
                else " or ".join(map(str, ranks)))
        raise ValueError(f"{name}: input_shape {shape} has rank {len(shape)}, expected rank "
                         f"{want} {layout}".rstrip())
    batched = len(shape) >= batched_rank
    if any(d < 1 and not (batched and i == batch_axis and d == -1)
           for i, d in enumerate(shape)):
        raise ValueError(f"{name}: input_shape {shape} must have positive sizes (only the "
                         "batch dimension may be -1)")
    return shape


def check_params(name: str, what: str, tree, shapes: dict) -> None:
    """``tree`` must be a dict with exactly the keys of ``shapes``, each an array of that
    shape (``None`` matches any size). Params of another layer or model fail here."""
    if not isinstance(tree, dict) or set(tree) != set(shapes):
        got = (f"a dict with keys {sorted(map(str, tree))}" if isinstance(tree, dict)
               else f"{type(tree).__name__} {jax.tree_util.tree_structure(tree)}")
        raise ValueError(f"{name}: {what} must be a dict with keys {sorted(shapes)}, got "
                         f"{got}")
    for k, want in shapes.items():
        _checks.check_array(name, f"{what}['{k}']", tree[k])
        _checks.check_shape(name, f"{what}['{k}']", tree[k], want,
                            "made by another layer or model?")


def check_train_key(name: str, key, condition: str = "") -> None:
    """``apply(..., train=True)`` of a layer that draws random numbers needs ``key``: the
    one message of every such layer (``condition``, e.g. `` with dropout_rate=0.5``,
    says when the key is needed)."""
    if key is None:
        raise ValueError(
            f"{name}: train=True{condition} needs a PRNG key to draw the dropout mask; call "
            f"apply(params, state, x, key=jax.random.PRNGKey(...), train=True) (or pass "
            f"train=False for evaluation)")


def check_no_params(name: str, params, state) -> None:
    """A parameter-free layer must receive empty params and state (``()``)."""
    for what, tree in (("params", params), ("state", state)):
        if jax.tree_util.tree_leaves(tree):
            raise ValueError(
                f"{name}: {what} must be empty (() — {name} has no {what}), got "
                f"{jax.tree_util.tree_structure(tree)} with leaf shapes "
                f"{[_checks.shape_of(a) for a in jax.tree_util.tree_leaves(tree)]}")


def check_weight_args(name: str, dtype, use_bias: bool | None = None, **initializers) -> None:
    """A constructor's checks of ``dtype`` (a float dtype or ``None``), ``use_bias`` (a
    bool) and its initializers (callables ``(key, shape, dtype)``), at construction."""
    check_dtype(name, dtype)
    if use_bias is not None:
        _checks.static_bool(name, "use_bias", use_bias)
    for what, fn in initializers.items():
        _checks.check_callable(name, what, fn, "(key, shape, dtype)")


def kernel_and_bias(key, w_shape: tuple, use_bias: bool, w_init, b_init, dtype) -> dict:
    """``{"w": w_init(k1, w_shape), "b": b_init(k2, (w_shape[-1],))}`` (no ``"b"`` without
    bias), from one split of ``key``."""
    kw, kb = jax.random.split(key)
    params = {"w": w_init(kw, w_shape, dtype)}
    if use_bias:
        params["b"] = b_init(kb, (w_shape[-1],), dtype)
    return params


def weights_and_input(name: str, params, state, x, shapes: dict):
    """The prologue of a stateless layer with weights: ``params`` must be this layer's
    (:func:`check_params`), ``state`` empty; returns ``(x, params)`` promoted."""
    check_params(name, "params", params, shapes)
    check_no_params(name, (), state)
    return promote(x, params, name)


def check_dtype(name: str, dtype):
    """``dtype`` resolved now (``None`` = JAX's default float dtype); call it at
    construction to reject a bad dtype early and again in ``init`` to resolve ``None``
    under the configuration of that moment (``jax_enable_x64``)."""
    return _checks.check_dtype(name, "dtype", dtype)


def promote(x, params, name: str = "promote"):
    """``(x, params)`` cast to their common floating dtype (JAX's standard promotion).

    As Flax's ``promote_dtype``: float32 params with a float64 input compute in float64,
    bfloat16 params with a float32 input in float32. The casts are explicit, so this also
    works under ``jax_numpy_dtype_promotion="strict"``. Non-float leaves of ``params`` are
    left alone (the op refuses them).

    Raises:
      TypeError: ``x`` is not a floating array (a list, an int array): ``name`` says who.
    """
    _checks.check_float(name, "x", x)
    floating = [_checks.dtype_of(a) for a in jax.tree_util.tree_leaves(params)
                if jnp.issubdtype(_checks.dtype_of(a), jnp.floating)]
    with jax.numpy_dtype_promotion("standard"):
        dt = jnp.result_type(x, *floating)

    def cast(a):
        return a.astype(dt) if jnp.issubdtype(_checks.dtype_of(a), jnp.floating) else a
    return x.astype(dt), jax.tree_util.tree_map(cast, params)


def with_batch(name: str, x, fn: Callable):
    """``fn`` (an NHWC op call) on ``(N, H, W, C)``, or on one example ``(H, W, C)`` (an
    array of rank 3, checked by the caller) by adding and removing a batch axis; the op's
    errors gain the layer's name."""
    with _checks.context(name):
        return fn(x[None])[0] if x.ndim == 3 else fn(x)


def split_pair(name: str, x, first: str, second: str):
    """A layer input that is an array or a pair ``(array, extra)`` (a mask, a carry):
    returns ``(array, extra)``, ``extra`` None for a plain array. A tuple or list of
    another length is a ``ValueError``; ``first``/``second`` name the two in it."""
    if not isinstance(x, (tuple, list)):
        return x, None
    if len(x) != 2:
        raise ValueError(f"{name}: input must be {first} or a pair ({first}, {second}), got "
                         f"a {type(x).__name__} of {len(x)} entries")
    return x[0], x[1]


def is_shape_pair(input_shape) -> bool:
    """Whether ``init``'s ``input_shape`` is a pair of shapes ``(x_shape, other_shape)``."""
    return (isinstance(input_shape, (tuple, list)) and len(input_shape) == 2
            and isinstance(input_shape[0], (tuple, list)))


def probe(name: str, fn: Callable, *shapes) -> None:
    """Run ``fn`` abstractly (``jax.eval_shape``) on float32 inputs of ``shapes``: a
    constructor lets the op check its static arguments (window, padding, slope) before
    any data is seen, with the op's own rules and messages."""
    with _checks.context(name):
        jax.eval_shape(fn, *[jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes])


def apply_shape(apply: Callable, params, state, shape: tuple, dtype,
                batch_axis: int | None = 0) -> tuple:
    """The output shape of ``apply`` on an input of ``shape``, by ``jax.eval_shape``.

    A ``-1`` at ``batch_axis`` is traced as 1 and put back at the same axis of the
    output. Nothing is computed; every check of the layer and its ops runs, so ``init``
    refuses what ``apply`` would refuse.
    """
    unknown = batch_axis is not None and len(shape) > batch_axis and shape[batch_axis] == -1
    traced = tuple(1 if unknown and i == batch_axis else d for i, d in enumerate(shape))
    out = jax.eval_shape(lambda p, s, x: apply(p, s, x)[0], params, state,
                         jax.ShapeDtypeStruct(traced, dtype))
    out = tuple(out.shape)
    return out[:batch_axis] + (-1,) + out[batch_axis + 1:] if unknown else out


def init_checked(apply: Callable, make: Callable, key, shape: tuple, dtype,
                 batch_axis: int | None = 0) -> tuple:
    """``(output_shape, params, state)`` of a layer's ``init``, checked before drawing.

    ``make(key) -> (params, state)`` creates the arrays. It is first traced abstractly, so
    :func:`apply_shape` runs the layer's and its ops' checks on the abstract params: a bad
    ``input_shape`` fails before any random number is drawn (or any program compiled).
    """
    abstract = jax.eval_shape(make, key)
    out = apply_shape(apply, *abstract, shape, dtype, batch_axis)
    return (out, *make(key))


# ------------------------------------------------------- children of combinators
# ``summary`` records every child's init while it traces a model: the combinators call
# their children through these two functions, which also add the child's place and name
# to its errors once per level (``_checks.context(where, name)``): nested combinators
# print the whole path, ``"serial[2]: parallel[1]: serial[0] (Dense(3)): affine: ..."``.

class _Row(NamedTuple):
    path: tuple
    layer: Layer
    output_shape: Any
    n_params: int
    n_state: int


_RECORDER: contextvars.ContextVar = contextvars.ContextVar("funcnet_nn_summary", default=None)


def count_params(tree) -> int:
    """Total number of scalars in a pytree of arrays (or ``jax.ShapeDtypeStruct`` s).

    E.g. ``Dense(100)`` on 784 inputs: ``784 * 100 + 100 = 78500``.
    """
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree)))


def init_child(where: str | None, index: int, layer: Layer, key, input_shape):
    """``layer.init(key, input_shape)`` for child ``index`` of a combinator; its errors
    carry its place ``where`` and its name (``where=None``: left as they are), and
    :func:`funcnet.nn.summary` sees it as a row."""
    recorder = _RECORDER.get()
    with (_checks.context(where, layer.name) if where else contextlib.nullcontext()):
        if recorder is None:
            return layer.init(key, input_shape)
        rows, path = recorder
        slot = len(rows)
        rows.append(None)
        path.append(index)
        try:
            out = layer.init(key, input_shape)
        finally:
            here = tuple(path)
            path.pop()
        rows[slot] = _Row(here, layer, out[0], count_params(out[1]), count_params(out[2]))
        return out


def apply_child(where: str, layer: Layer, params, state, x, key, train):
    """``layer.apply`` of a combinator's child; its errors carry ``where`` and its name."""
    with _checks.context(where, layer.name):
        return layer.apply(params, state, x, key=key, train=train)


def record_inits(fn: Callable):
    """Run ``fn()`` while recording every :func:`init_child` call; returns
    ``(fn(), rows)`` with rows in call order (a combinator before its children)."""
    rows: list = []
    token = _RECORDER.set((rows, []))
    try:
        out = fn()
    finally:
        _RECORDER.reset(token)
    return out, rows
