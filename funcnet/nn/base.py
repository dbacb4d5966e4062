"""The layer protocol and the few checks that belong to layers rather than to ops.

A layer is a :class:`Layer`, a NamedTuple of two pure functions (stax's contract)::

    output_shape, params, state = layer.init(key, input_shape)   # one size may be -1
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
import numpy as np

from funcnet import _checks

__all__ = ["Layer", "ValueLayer"]


class Layer(NamedTuple):
    """A layer: a pair of pure functions, plus a display name.

    Attributes:
      init: ``init(key, input_shape) -> (output_shape, params, state)``. ``input_shape``
        is a tuple of ints in which ONE size may be ``-1`` (unknown): the leading batch,
        or any other axis whose size the layer does not need, e.g. the ``N`` of a
        time-major ``(T, -1, H)`` for a Dense, a norm or a Dropout after a recurrent
        layer (:func:`check_input_shape`); the returned ``output_shape`` keeps that
        ``-1``. Multi-input layers (``FanInSum``) take a tuple
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

def describe(value) -> str:
    """``value`` in an error message: ``"an array of shape (...)"`` or its type's name."""
    return (f"an array of shape {_checks.shape_of(value)}" if hasattr(value, "shape")
            else type(value).__name__)


def check_layer(fn: str, name: str, value) -> Layer:
    """``TypeError`` unless ``value`` is a :class:`Layer` (a function, or a layer factory
    not called, names its type)."""
    if not isinstance(value, Layer):
        raise TypeError(f"{fn}: {name} must be a Layer (init, apply), got "
                        f"{type(value).__name__}")
    return value


def check_keeps_shape(name: str, x_shape, y_shape, why: str) -> None:
    """``ValueError`` unless the inner layer maps ``x_shape`` to itself (``Residual``,
    ``Repeat``); ``why`` says what needs it."""
    if fmt(x_shape) != fmt(y_shape):
        raise ValueError(f"{name}: layer maps shape {fmt(x_shape)} to {fmt(y_shape)}; {why}")


def fmt(shape) -> str:
    """A shape as text, tuples of shapes nested: ``("N", 784) -> (N, 784)``; a ``None``
    entry (the recurrent layers' carry placeholder) prints as ``None``."""
    if shape is None:
        return "None"
    if not is_shape(shape):
        return "(" + ", ".join(fmt(s) for s in shape) + ")"
    shape = tuple(shape)
    if len(shape) == 1:
        return f"({shape[0]},)"
    return "(" + ", ".join(str(d) for d in shape) + ")"


def is_shape(s) -> bool:
    """Whether ``s`` is one shape (a tuple/list of sizes; ``()`` is a scalar's shape), as
    opposed to a tuple of shapes or ``None``."""
    return isinstance(s, (tuple, list)) and not any(
        isinstance(d, (tuple, list)) or d is None for d in s)


def check_input_shape(name: str, key, input_shape, ranks: Sequence[int] | None = None,
                      layout: str = "", needs: int = 0, batch_axis: int | None = None) -> tuple:
    """Validate ``init``'s arguments: a PRNG key and a shape of positive ints.

    The one rule of unknown sizes: ONE size may be ``-1`` (unknown: the batch, or any
    other axis the layer does not read), on any axis but the last ``needs`` ones (the
    axes the layer reads: ``1`` for the features of Dense or LayerNorm, ``3`` for the
    ``(H, W, C)`` of an image); with ``batch_axis``, only on that axis (Flatten: ``0``,
    a time-major recurrent layer: ``1``). So after ``LSTM(...).init(key, (T, -1, D))``
    a Dense, a norm or a Dropout accepts ``(T, -1, H)``. ``TypeError`` for a non-tuple
    or a non-int size (``4.5``), ``ValueError`` for a rank outside ``ranks``, a size
    below 1 (other than the one ``-1``), or a ``-1`` where the layer needs the size.
    """
    _checks.check_key(f"{name}.init", key)
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError(f"{name}: input_shape must be a tuple of ints, got "
                        f"{type(input_shape).__name__} {input_shape!r}")
    if not is_shape(input_shape):
        raise TypeError(f"{name}: input_shape must be one shape (a tuple of ints), got the "
                        f"tuple of shapes {fmt(input_shape)}: {name} takes one array, and "
                        f"the layer before outputs several (FanOut, return_carry=True, "
                        f"return_lengths=True, ...)")
    shape = tuple(_checks.static_int(name, f"input_shape[{i}]", d)
                  for i, d in enumerate(input_shape))
    if ranks is not None and len(shape) not in ranks:
        want = (f">= {ranks.start}" if isinstance(ranks, range) and len(ranks) > 2
                else " or ".join(map(str, ranks)))
        raise ValueError(f"{name}: input_shape {shape} has rank {len(shape)}, expected rank "
                         f"{want} {layout}".rstrip())
    unknown = [i for i, d in enumerate(shape) if d == -1]
    if any(d < 1 and d != -1 for d in shape) or len(unknown) > 1:
        raise ValueError(f"{name}: input_shape {shape} must have positive sizes, except one "
                         f"-1 (an unknown size, e.g. the batch)")
    free = (range(len(shape) - needs) if batch_axis is None
            else [batch_axis] if batch_axis < len(shape) - needs else [])
    if unknown and unknown[0] not in free:
        where = ("no axis may be -1" if not free else
                 f"only axis {free[0]} (the batch) may be -1" if batch_axis is not None else
                 "only axis 0 may be -1" if len(free) == 1 else
                 f"only one of axes 0 to {len(free) - 1} may be -1")
        layout = f" {layout}" if layout else ""
        raise ValueError(f"{name}: input_shape {shape} has -1 at axis {unknown[0]}, a size "
                         f"the layer needs{layout}; {where}")
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


def check_train(name: str, train) -> bool:
    """``apply``'s ``train`` must be a Python bool (it selects Python code paths, so a
    string such as ``"False"`` or a traced value cannot work). Checked at the boundary:
    by the combinators and by the layers that read ``train``; a Python check, no device
    work. ``TypeError`` naming the layer; for a tracer, the hint to mark it static."""
    if isinstance(train, (bool, np.bool_)):
        return bool(train)
    if isinstance(train, jax.core.Tracer):
        raise TypeError(f"{name}: train must be a Python bool, got a traced value "
                        f"({type(train).__name__}); under jax.jit mark it static, e.g. "
                        f"jax.jit(f, static_argnames='train')")
    return _checks.static_bool(name, "train", train)


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


def kernel_and_bias(key, w_shape: tuple, use_bias: bool, w_init, b_init, dtype,
                    bias_size: int | None = None) -> dict:
    """``{"w": w_init(k1, w_shape), "b": b_init(k2, (bias_size,))}`` (no ``"b"`` without
    bias; ``bias_size`` defaults to ``w_shape[-1]``), from one split of ``key``."""
    kw, kb = jax.random.split(key)
    params = {"w": w_init(kw, w_shape, dtype)}
    if use_bias:
        params["b"] = b_init(kb, (w_shape[-1] if bias_size is None else bias_size,), dtype)
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


def padding_1d(name: str, padding):
    """1-D padding (``p``, ``(lo, hi)``, ``'SAME'``, ``'VALID'``) as the 2-D padding of the
    same op on ``(N, 1, L, C)`` (``Conv1D``, ``MaxPool1D``, ...)."""
    if isinstance(padding, str):
        return _checks.normalize_padding(name, padding)
    pair = (padding, padding) if not isinstance(padding, (tuple, list)) else tuple(padding)
    if len(pair) != 2:
        raise TypeError(f"{name}: padding must be an int, a pair (lo, hi), 'SAME' or 'VALID', "
                        f"got {padding!r}")
    lo, hi = (_checks.static_int(name, "padding", p, minimum=0) for p in pair)
    return ((0, 0), (lo, hi))


def with_batch(name: str, x, fn: Callable, example_rank: int = 3):
    """``fn`` (an NHWC op call) on ``(N, H, W, C)``, or on one example ``(H, W, C)`` (an
    array of rank ``example_rank``, checked by the caller; 2 for one ``(L, C)`` sequence)
    by adding and removing a batch axis; the op's errors gain the layer's name."""
    with _checks.context(name):
        return fn(x[None])[0] if x.ndim == example_rank else fn(x)


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


def abstract_input(fn: str, shapes, dtypes, size: int):
    """``jax.ShapeDtypeStruct`` s for a shape or a tree (nested tuples) of shapes, every
    ``-1`` traced as ``size``; ``None`` entries (a carry placeholder) stay ``None``.

    ``dtypes`` is a dtype (for every array) or a tree of dtypes with the structure of
    ``shapes`` or a prefix of it (JAX's rule for ``in_axes``): ``(None, None, jnp.int32)``
    for ``((T, N, D), None, (N,))``; a ``None`` dtype is JAX's default float dtype.
    """
    if shapes is None:
        return None
    if is_shape(shapes):
        return jax.ShapeDtypeStruct(tuple(size if d == -1 else d for d in shapes),
                                    _checks.check_dtype(fn, "input_dtype", dtypes,
                                                        kind=jnp.generic))
    if not isinstance(shapes, (tuple, list)):
        raise TypeError(f"{fn}: input_shape must be a shape or a tuple of shapes, got "
                        f"{type(shapes).__name__} {shapes!r}")
    if isinstance(dtypes, (tuple, list)):
        if len(dtypes) != len(shapes):
            raise ValueError(f"{fn}: input_dtype {dtypes!r} has {len(dtypes)} entries, "
                             f"expected one per entry of input_shape {fmt(shapes)} "
                             f"({len(shapes)}), or one dtype for all")
    else:
        dtypes = (dtypes,) * len(shapes)
    return tuple(abstract_input(fn, s, d, size) for s, d in zip(shapes, dtypes))


def _has_unknown(shapes) -> bool:
    if shapes is None:
        return False
    if is_shape(shapes):
        return -1 in tuple(shapes)
    return any(map(_has_unknown, shapes))


def apply_shape(name: str, apply: Callable, params, state, shapes, dtypes) -> Any:
    """The output shape (tree) of ``apply`` on an input of ``shapes`` (a shape or a tree
    of shapes, see :func:`abstract_input`), by ``jax.eval_shape``.

    Nothing is computed; every check of the layer and its ops runs, so ``init`` refuses
    what ``apply`` would refuse. Every ``-1`` in ``shapes`` is one unknown size (the
    batch ``N`` of ``x``, of a carry and of lengths alike): ``apply`` is traced with it
    set to 1 and to 2, and an output axis that follows it (1, then 2) is ``-1``. An
    output axis that changes otherwise (a ``Flatten`` of the unknown axis) needs the
    size: a ``ValueError``.
    """
    def trace(size):
        return jax.eval_shape(lambda p, s, x: apply(p, s, x)[0], params, state,
                              abstract_input(name, shapes, dtypes, size))

    def merge(a, b):
        a, b = tuple(a.shape), tuple(b.shape)
        if a == b:
            return a
        if len(a) == len(b) and all(m == n or (m, n) == (1, 2) for m, n in zip(a, b)):
            return tuple(-1 if m != n else m for m, n in zip(a, b))
        raise ValueError(f"{name}: the output shape depends on the unknown (-1) size of "
                         f"input_shape {fmt(shapes)} (it is {a} for a size of 1 and {b} for "
                         f"2): give that size")
    first = trace(1)
    if not _has_unknown(shapes):
        return jax.tree_util.tree_map(lambda a: tuple(a.shape), first)
    return jax.tree_util.tree_map(merge, first, trace(2))


def init_checked(name: str, apply: Callable, make: Callable, key, shapes, dtypes) -> tuple:
    """``(output_shape, params, state)`` of a layer's ``init``, checked before drawing.

    ``make(key) -> (params, state)`` creates the arrays; an initializer's error in it
    gains the layer's name (``"LayerNorm: compute_fans: shape (4,) has rank 1 ..."``). It
    is first traced abstractly, so :func:`apply_shape` runs the layer's and its ops'
    checks on the abstract params: a bad ``input_shape`` fails before any random number
    is drawn (or any program compiled).
    """
    with _checks.context(name):
        abstract = jax.eval_shape(make, key)
    out = apply_shape(name, apply, *abstract, shapes, dtypes)
    with _checks.context(name):
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
