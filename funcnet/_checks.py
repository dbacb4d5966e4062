"""The one validation module of funcnet: every package checks its arguments with these.

Private, but shared: any funcnet package may import it (it imports nothing from funcnet,
only NumPy and JAX, so it sits below ``ops`` in the layering). One rule everywhere:

* ``TypeError`` for a wrong type or dtype (a float where an int is needed, a list where
  an array is needed, an int array where a float array is needed);
* ``ValueError`` for a wrong value or shape (a negative count, NaN, a rank or shape
  mismatch).

Messages read ``"<fn>: <argument> <what was got>, expected <what was expected>"``, for
example ``"affine: b has shape (4,), expected (3,)"``. Every check runs on static
information (Python values, shapes, dtypes), never on traced values, so it runs at trace
time under ``jit``. Checks of *concrete* values (labels in range, finite hyperparameters)
go through :func:`concrete` and are skipped for tracers.

Layers add their name to an op's error with :func:`context` instead of repeating the op's
checks: ``with context("Dense(3)"): ops.affine(x, w, b)`` turns ``"affine: x has shape
(4, 5), ..."`` into ``"Dense(3): affine: x has shape (4, 5), ..."`` (same exception type,
chained to the original).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "shape_of", "dtype_of", "path_str", "context",
    "check_array", "check_float", "check_integer", "check_rank", "check_min_rank",
    "check_shape", "check_same_shape", "check_broadcastable", "check_same_dtype", "check_axis",
    "static_int", "static_float", "static_bool", "static_choice", "concrete",
    "check_index_range", "check_lengths", "check_callable", "check_optimizer", "check_key",
    "normalize_pair", "normalize_padding", "is_array", "is_key",
    "check_array_leaves", "check_divisible", "check_groups", "check_dtype", "check_nonempty",
    "check_hyperparameter", "check_same_leading", "check_batch_size", "valid_steps",
    "as_indices",
]


# ------------------------------------------------------------------------ formatting
def shape_of(x) -> tuple:
    """The static shape of an array, a tracer, a ``ShapeDtypeStruct`` or a number."""
    return tuple(np.shape(x)) if not hasattr(x, "shape") else tuple(x.shape)


def dtype_of(x):
    """The dtype of an array-like (``jnp.result_type``; Python numbers give weak types)."""
    return jnp.result_type(x)


def path_str(path) -> str:
    """``jax.tree_util.keystr`` of a key path, ``"<root>"`` for the root."""
    return jax.tree_util.keystr(path) or "<root>"


@contextlib.contextmanager
def context(prefix: str, name: str | None = None):
    """Re-raise a plain ``ValueError``/``TypeError`` from the block as ``"prefix: msg"``.

    The new exception has the same type and is chained (``from``) to the original, so a
    layer names itself in an op's error without repeating the op's checks
    (``"Dense(3): affine: ..."``). Exceptions of other types (including subclasses of
    ``ValueError`` such as a ``CheckpointError``, and JAX's tracer errors) pass through
    unchanged.

    With ``name`` (a combinator calling its child layer ``name`` at place ``prefix``),
    every level of the path reads once: the child is named as ``"prefix (name): ..."``
    (a custom layer that does not name itself is named too), its own leading
    ``"name: "`` is not repeated, and before a child combinator's own path only the
    place is added: ``"serial[2]: parallel[1]: serial[0] (Dense(3)): affine: ..."``.
    """
    try:
        yield
    except (ValueError, TypeError) as err:
        if type(err) not in (ValueError, TypeError):
            raise
        msg = str(err)
        if name is not None:
            msg = msg.removeprefix(f"{name}: ")
            if not msg.startswith(f"{name}["):
                prefix = f"{prefix} ({name})"
        raise type(err)(f"{prefix}: {msg}") from err


# ------------------------------------------------------------------- array arguments
def is_array(x) -> bool:
    """Array-like: anything with ``shape`` and ``dtype`` (NumPy, JAX, tracers, memory maps,
    ``jax.ShapeDtypeStruct``)."""
    return hasattr(x, "shape") and hasattr(x, "dtype")


def is_key(x) -> bool:
    """A typed PRNG key array (``jax.random.key(0)``, not the raw ``uint32[2]`` of
    ``jax.random.PRNGKey``), which NumPy cannot hold."""
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _is_number(x) -> bool:
    return isinstance(x, (int, float, complex, np.number)) and not isinstance(x, (bool, np.bool_))


def _is_real(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(
        x, (bool, np.bool_))


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def check_array(fn: str, name: str, x) -> None:
    """``x`` must be an array (NumPy, JAX, tracer) or a Python/NumPy number.

    Raises ``TypeError`` for lists, tuples, ``None`` and other objects: funcnet never
    converts a nested list silently (``jnp.asarray`` it first).
    """
    if _is_number(x):
        return
    if not is_array(x):
        hint = " (convert it with jnp.asarray first)" if isinstance(x, (list, tuple)) else ""
        raise TypeError(f"{fn}: {name} must be an array, got {type(x).__name__}{hint}")


def check_float(fn: str, name: str, x) -> None:
    """``x`` must be an array with a real floating dtype (float16/bfloat16/32/64)."""
    check_array(fn, name, x)
    dt = dtype_of(x)
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{fn}: {name} must have a floating dtype, got {dt} with shape "
                        f"{shape_of(x)}")


def check_bool(fn: str, name: str, x):
    """A bool array (a mask such as optax's ``where``); returns it as a JAX array."""
    check_array(fn, name, x)
    if jnp.result_type(x) != jnp.bool_:
        raise TypeError(f"{fn}: {name} must be a bool array, got {jnp.result_type(x)}")
    return jnp.asarray(x)


def check_integer(fn: str, name: str, x, what: str = "") -> None:
    """``x`` must be an array with an integer dtype (class indices, token ids)."""
    check_array(fn, name, x)
    dt = dtype_of(x)
    if not jnp.issubdtype(dt, jnp.integer):
        extra = f" ({what})" if what else ""
        raise TypeError(f"{fn}: {name} must have an integer dtype{extra}, got {dt} with "
                        f"shape {shape_of(x)}")


def check_rank(fn: str, name: str, x, ranks: int | Iterable[int], expected: str = "") -> None:
    """``x.ndim`` must be one of ``ranks``; ``expected`` describes the layout, e.g. ``(N, D)``."""
    ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
    shape = shape_of(x)
    if len(shape) not in ranks:
        want = " or ".join(str(r) for r in ranks)
        layout = f" {expected}" if expected else ""
        raise ValueError(f"{fn}: {name} has shape {shape} (rank {len(shape)}), expected "
                         f"rank {want}{layout}")


def check_min_rank(fn: str, name: str, x, rank: int) -> None:
    shape = shape_of(x)
    if len(shape) < rank:
        raise ValueError(f"{fn}: {name} has shape {shape}, expected rank >= {rank}")


def check_nonempty(fn: str, name: str, x, expected: str, axes: Sequence[int] | None = None) -> None:
    """``x`` (or its ``axes``) must have no zero-size axis; ``expected`` says what is needed.

    For reductions that are undefined on nothing (a mean over an empty batch, a softmax
    over zero classes, a window of zero size): ``"softmax: x has shape (4, 0), expected
    at least one class along axis 1"``.
    """
    shape = shape_of(x)
    sizes = shape if axes is None else tuple(shape[a] for a in axes)
    if 0 in sizes:
        raise ValueError(f"{fn}: {name} has shape {shape}, expected {expected}")


def check_shape(fn: str, name: str, x, expected: Sequence, why: str = "") -> None:
    """``x.shape`` must equal ``expected``; ``None`` in ``expected`` matches any size."""
    shape, expected = shape_of(x), tuple(expected)
    if len(shape) != len(expected) or any(e is not None and s != e
                                           for s, e in zip(shape, expected)):
        shown = "(" + ", ".join("*" if e is None else str(e) for e in expected) + \
            ("," if len(expected) == 1 else "") + ")"
        extra = f" ({why})" if why else ""
        raise ValueError(f"{fn}: {name} has shape {shape}, expected {shown}{extra}")


def check_same_shape(fn: str, a_name: str, a, b_name: str, b) -> None:
    if shape_of(a) != shape_of(b):
        raise ValueError(f"{fn}: {a_name} has shape {shape_of(a)} but {b_name} has shape "
                         f"{shape_of(b)}; they must match (no broadcasting)")


def check_broadcastable(fn: str, name: str, x, target: Sequence, layout: str = "") -> None:
    """``x`` must broadcast to ``target`` without rank promotion tricks: rank <=
    ``len(target)`` and every trailing size equal to ``target``'s or 1."""
    shape, target = shape_of(x), tuple(target)
    if len(shape) > len(target) or any(s not in (1, t) for s, t in
                                       zip(shape[::-1], target[::-1])):
        extra = f" {layout}" if layout else ""
        raise ValueError(f"{fn}: {name} has shape {shape}, expected a shape broadcastable "
                         f"to {target}{extra} (each size 1 or equal)")


def check_same_dtype(fn: str, a_name: str, a, b_name: str, b) -> None:
    da = getattr(a, "dtype", None)
    if da is not None and da == getattr(b, "dtype", None):
        return  # the common case, without jnp.result_type (ops call this per eager call)
    if dtype_of(a) != dtype_of(b):
        raise TypeError(f"{fn}: {a_name} has dtype {dtype_of(a)} but {b_name} has dtype "
                        f"{dtype_of(b)}; cast one of them explicitly")


def check_axis(fn: str, axis, ndim: int, name: str = "axis") -> int:
    """A static axis in ``[-ndim, ndim)``; returns it as a non-negative int."""
    static_int(fn, name, axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{fn}: {name} {axis} is out of range for an input of rank {ndim}")
    return int(axis) % ndim


def row_axes(fn: str, axis, ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """optax's ``axis`` of a loss over rows (an int or a tuple: the axes a row runs along)
    as ``(rest, axes)``, both non-negative: ``x.transpose(rest + axes)`` puts a row's axes
    last, in the order given."""
    if isinstance(axis, (int, np.integer)):
        axes = (axis,)
    elif isinstance(axis, (tuple, list)):
        axes = tuple(axis)
    else:
        raise TypeError(f"{fn}: axis must be an int or a tuple of ints, got {axis!r}")
    axes = tuple(check_axis(fn, ax, ndim) for ax in axes)
    if not axes or len(set(axes)) != len(axes):
        raise ValueError(f"{fn}: axis must name distinct axes, got {axis!r}")
    return tuple(i for i in range(ndim) if i not in axes), axes


def check_dtype(fn: str, name: str, dtype, *, kind=jnp.floating):
    """``dtype`` (``None`` = JAX's default float dtype) as a NumPy dtype of ``kind``.

    ``None`` means ``jnp.result_type(float)``: float32, or float64 under
    ``jax_enable_x64`` (the convention of ``jax.nn.initializers`` and of the peers).
    """
    if dtype is None:
        return jnp.dtype(jnp.result_type(float))
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be a dtype, got {dtype!r}") from None
    if not jnp.issubdtype(dt, kind):
        raise TypeError(f"{fn}: {name} must be a {getattr(kind, '__name__', kind)} dtype, "
                        f"got {dt}")
    return dt


# ------------------------------------------------------------ static (Python) values
def static_int(fn: str, name: str, value, *, minimum: int | None = None,
               maximum: int | None = None) -> int:
    """A Python/NumPy int (not a bool, not a float such as ``4.5`` or ``4.0``).

    ``TypeError`` for a non-int, ``ValueError`` outside ``[minimum, maximum]``.
    """
    if not _is_int(value):
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{fn}: {name} must be <= {maximum}, got {value}")
    return value


def int_of_array(value):
    """A concrete 0-d integer array as a Python int, anything else as it is: the form
    ``inject_hyperparams`` gives an int hyperparameter (it keeps ints in its state as
    arrays, as optax does), for the checks of an argument that must be an int."""
    if (is_array(value) and not is_traced(value) and shape_of(value) == ()
            and jnp.issubdtype(dtype_of(value), jnp.integer)):
        v = concrete(value)
        return value if v is None else int(v)
    return value


def traced_int(value) -> bool:
    """A traced 0-d integer (``inject_hyperparams``' int hyperparameter under ``jit``)."""
    return (is_traced(value) and shape_of(value) == ()
            and jnp.issubdtype(dtype_of(value), jnp.integer))


def static_ints(fn: str, name: str, value) -> tuple[int, ...]:
    """A tuple (or list) of Python/NumPy ints as a tuple of ints (``dropout``'s
    ``broadcast_dims``): ``TypeError`` for another container or a non-int entry."""
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{fn}: {name} must be a tuple of ints, got {type(value).__name__}")
    return tuple(static_int(fn, name, v) for v in value)


def static_float(fn: str, name: str, value, low: float | None = None,
                 high: float | None = None, *, low_inclusive: bool = True,
                 high_inclusive: bool = True) -> float:
    """A Python/NumPy real number, finite, inside the interval (``None`` = unbounded).

    ``TypeError`` for a non-number (bools, strings, arrays of size > 1, tracers);
    ``ValueError`` for NaN, infinity or a value outside the interval.
    """
    if not _is_real(value):
        if not (hasattr(value, "shape") and shape_of(value) == ()
                and not isinstance(value, jax.core.Tracer)
                and jnp.issubdtype(dtype_of(value), jnp.number)):
            raise TypeError(f"{fn}: {name} must be a Python float, got "
                            f"{type(value).__name__} {value!r:.60}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{fn}: {name} must be finite, got {v}")
    below = low is not None and (v < low if low_inclusive else v <= low)
    above = high is not None and (v > high if high_inclusive else v >= high)
    if below or above:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        brackets = ("[" if low_inclusive and low is not None else "(",
                    "]" if high_inclusive and high is not None else ")")
        raise ValueError(f"{fn}: {name} must be in {brackets[0]}{lo}, {hi}{brackets[1]}, "
                         f"got {v:g}")
    return v


def check_soft_cap(fn: str, cap):
    """Attention's ``logit_soft_cap``: ``None``, or a cap ``c > 0`` (:func:`hyperparameter`:
    a Python float when concrete, a scalar array when traced)."""
    if cap is None:
        return None
    return hyperparameter(fn, "logit_soft_cap", cap, 0.0, low_inclusive=False)


def is_traced(value) -> bool:
    """A hyperparameter given as a tracer (a ``jax.vmap`` sweep, an argument of a jitted
    function): its value is unknown at trace time, so an op that accepts one takes it as
    data instead of choosing its program by it."""
    return isinstance(value, jax.core.Tracer)


def check_hyperparameter(fn: str, name: str, value, low: float | None = None,
                         high: float | None = None, *, low_inclusive: bool = True,
                         high_inclusive: bool = True) -> None:
    """A real scalar hyperparameter that may be traced (``jit``/``vmap`` sweeps).

    Static checks always run: ``TypeError`` for a non-number (``None``, a string, a
    bool, a function, a complex or non-numeric array), ``ValueError`` for an array of
    shape other than ``()``. When the value is concrete (a Python/NumPy number or a
    concrete array), it must also pass :func:`static_float` (finite, inside the
    interval; same messages). Tracers skip that value check.
    """
    if not (_is_real(value) or (is_array(value) and not isinstance(value, (bool, np.bool_)))):
        raise TypeError(f"{fn}: {name} must be a number or a scalar array, got "
                        f"{type(value).__name__} {value!r:.60}")
    if hasattr(value, "dtype"):
        dt = dtype_of(value)
        if not (jnp.issubdtype(dt, jnp.floating) or jnp.issubdtype(dt, jnp.integer)):
            raise TypeError(f"{fn}: {name} must have a real numeric dtype, got {dt}")
        if shape_of(value) != ():
            raise ValueError(f"{fn}: {name} must be a scalar, got shape {shape_of(value)}")
    v = concrete(value)
    if v is not None:
        static_float(fn, name, float(v), low, high, low_inclusive=low_inclusive,
                     high_inclusive=high_inclusive)


def hyperparameter(fn: str, name: str, value, low: float | None = None,
                   high: float | None = None, *, low_inclusive: bool = True,
                   high_inclusive: bool = True):
    """:func:`check_hyperparameter`, returned as a Python float when concrete (the static
    program; :func:`static_float`'s checks), or, traced (a ``jax.vmap`` sweep, a ``jit``
    argument), as a scalar array of JAX's default float dtype, its shape and dtype
    checked but not its value."""
    check_hyperparameter(fn, name, value, low, high, low_inclusive=low_inclusive,
                         high_inclusive=high_inclusive)
    if is_traced(value):
        return jnp.asarray(value, jax.dtypes.canonicalize_dtype(jnp.float64))
    return float(concrete(value))


def check_rate(fn: str, name: str, value):
    """A probability in ``[0, 1)`` (a dropout rate): :func:`hyperparameter`."""
    return hyperparameter(fn, name, value, 0.0, 1.0, high_inclusive=False)


def may_drop(rate) -> bool:
    """Whether a rate of :func:`check_rate` may be above 0: a traced one, or a static one
    that is (the static program of rate 0 is the identity)."""
    return is_traced(rate) or rate > 0.0


def value_text(value) -> str:
    """A number for names and messages: ``f"{value:g}"``, or ``"traced"``."""
    return "traced" if is_traced(value) else f"{value:g}"


def static_bool(fn: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def static_choice(fn: str, name: str, value, choices: Sequence) -> Any:
    """``value`` must be one of ``choices`` (strings compared exactly)."""
    if value not in tuple(choices):
        raise ValueError(f"{fn}: {name} must be one of {', '.join(map(repr, choices))}, "
                         f"got {value!r}")
    return value


def concrete(x) -> np.ndarray | None:
    """``x`` as a NumPy array when its value is known now, else ``None``.

    Tracers (under ``jit``/``vmap``/``grad``) and callables (schedules) give ``None``:
    such values cannot be checked at trace time. Use it for checks of *values* (labels in
    range, finite hyperparameters) that run on eager calls and are skipped under ``jit``.
    """
    if x is None or callable(x) or isinstance(x, jax.core.Tracer):
        return None
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return None
    try:
        return np.asarray(x)
    except Exception:  # noqa: BLE001 - anything that is not a plain array is skipped
        return None


def check_index_range(fn: str, name: str, x, size: int, expected: str) -> None:
    """Concrete integer indices must lie in ``[0, size)`` (skipped for tracers).

    The one check of class labels and token ids on eager calls: ``ValueError`` naming the
    first bad value and where it is, ``"<fn>: <name> hold 7 (at index (1,)), expected
    <expected>"``. Under ``jit`` the values are unknown; the ops then give a NaN result
    for such an index (see :mod:`funcnet.ops._labels`).
    """
    values = concrete(x)
    if values is None or values.size == 0 or values.dtype.kind not in "iu":
        return  # traced, empty, or an abstract stand-in (e.g. a ShapeDtypeStruct)
    lo, hi = values.min(), values.max()
    if lo < 0 or hi >= size:
        bad = int(lo if lo < 0 else hi)
        where = tuple(int(i) for i in np.argwhere(values == bad)[0])
        raise ValueError(f"{fn}: {name} hold {bad} (at index {where}), expected {expected}")


def check_lengths(fn: str, xs, lengths):
    """``lengths`` ``(N,)`` integers, one per sequence of a time-major ``xs`` ``(T, N, ...)``;
    concrete values must lie in ``[0, T]``. Returns ``lengths`` as a JAX array.

    The one check of sequence lengths (:func:`funcnet.nn.flip_sequences`, the recurrent
    ops and layers). Returned as a signed integer array of at least 32 bits. Under ``jit``
    the values are unknown; the callers give NaN for the sequences whose length is
    outside ``[0, T]``.
    """
    check_array(fn, "xs", xs)
    check_min_rank(fn, "xs", xs, 2)
    check_integer(fn, "lengths", lengths, "steps per sequence")
    t, n = shape_of(xs)[:2]
    check_shape(fn, "lengths", lengths, (n,),
                f"one length per sequence of the time-major xs {shape_of(xs)}")
    check_index_range(fn, "lengths", lengths, t + 1, f"lengths in [0, T = {t}]")
    return as_indices(jnp.asarray(lengths), t + 1)   # int32/int64; a bad length stays bad


def as_indices(x, size: int):
    """Integer indices ``x`` as int32/int64 that keep every index outside ``[0, size)``
    outside it (the cast never wraps a bad index into a valid one).

    The one cast of indices, labels and lengths (:func:`funcnet.ops.embedding`, the class
    losses, :func:`check_lengths`). int32/int64 are returned as they are; smaller dtypes
    (int8/uint8 cannot hold ``size``, e.g. the out-of-range marker of the embedding's
    backward) are cast to int32 exactly; uint32/uint64 are first clipped to ``size`` in
    their own dtype, since casting wraps ``2**32`` (uint64) to 0. ``size`` must be a
    Python int >= 1.
    """
    x = x if is_array(x) else jnp.asarray(x)     # NumPy stays NumPy, as it came
    dt = x.dtype
    if dt in (jnp.int32, jnp.int64):
        return x
    if dt.itemsize < 4:
        return x.astype(jnp.int32)
    target = jnp.int32 if size < np.iinfo(np.int32).max else jnp.int64
    return jnp.minimum(x, jnp.asarray(min(size, np.iinfo(dt).max), dt)).astype(target)


def compute_dtype(dtype):
    """At least float32: bfloat16/float16 statistics and logs are computed in float32."""
    return jnp.dtype(jnp.float32) if jnp.dtype(dtype).itemsize < 4 else jnp.dtype(dtype)


def valid_steps(lengths, shape):
    """Booleans ``t < lengths[n]`` (the real steps of a padded time-major batch, with
    ``lengths`` checked by :func:`check_lengths`) of shape ``(T, N)`` followed by unit
    axes up to the rank of ``shape`` ``(T, N, ...)``."""
    mask = jnp.arange(shape[0], dtype=lengths.dtype)[:, None] < lengths[None, :]
    return mask.reshape(mask.shape + (1,) * (len(shape) - 2))


def check_callable(fn: str, name: str, value, signature: str = "") -> None:
    if not callable(value):
        sig = f" {signature}" if signature else ""
        raise TypeError(f"{fn}: {name} must be callable{sig}, got {type(value).__name__}")


def check_optimizer(fn: str, name: str, t) -> None:
    """optax's protocol: an object with callable ``init`` and ``update`` (funcnet's
    ``Optimizer``, optax's ``GradientTransformation``, ``optax.MultiSteps``)."""
    if not (callable(getattr(t, "init", None)) and callable(getattr(t, "update", None))):
        raise TypeError(f"{fn}: {name} must be an optimizer (init, update), got "
                        f"{type(t).__name__} (e.g. funcnet.optim.adam(1e-3) or an optax "
                        f"GradientTransformation)")


# ------------------------------------------------------------------------ PRNG keys
def check_key(fn: str, key, *, allow_seed: bool = False, name: str = "key"):
    """The one PRNG-key validator: a raw ``uint32[2]`` key or a typed scalar key.

    Args:
      fn, name: for the message.
      key: ``jax.random.PRNGKey(s)`` (``uint32[2]``), ``jax.random.key(s)`` (typed, shape
        ``()``), or with ``allow_seed`` a Python int seed.
      allow_seed: accept an int seed and return ``jax.random.PRNGKey(seed)``.

    Returns:
      The key (a seed converted to a raw key).

    Raises:
      TypeError: ``key`` is not a key (or an int seed where allowed).
      ValueError: a batch of keys (wrong shape) where one key is needed.
    """
    if allow_seed and isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return jax.random.PRNGKey(int(key))
    dtype = getattr(key, "dtype", None)
    if is_key(key):
        if shape_of(key) != ():
            raise ValueError(f"{fn}: {name} must be a single PRNG key, got a typed key "
                             f"array of shape {shape_of(key)}")
        return key
    if dtype is not None and np.dtype(dtype) == np.uint32 and hasattr(key, "shape"):
        if shape_of(key) != (2,):
            raise ValueError(f"{fn}: {name} must be a single PRNG key of shape (2,), got "
                             f"shape {shape_of(key)}")
        return key
    seed = " or an int seed" if allow_seed else ""
    raise TypeError(f"{fn}: {name} must be a PRNG key (jax.random.PRNGKey(0) or "
                    f"jax.random.key(0)){seed}, got {type(key).__name__}"
                    + (f" with dtype {dtype} and shape {shape_of(key)}" if dtype is not None
                       else ""))


# ------------------------------------------------------------ window arguments (NHWC)
def normalize_pair(fn: str, name: str, value, *, minimum: int = 1) -> tuple[int, int]:
    """The one window normaliser: an int ``k`` or a pair ``(kh, kw)`` -> ``(kh, kw)``.

    Used for kernel sizes, windows, strides and dilations; ``TypeError`` for a non-int,
    ``ValueError`` for a value below ``minimum``.
    """
    pair = (value, value) if _is_int(value) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(map(_is_int, pair)):
        raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def normalize_padding(fn: str, padding):
    """Padding spec -> ``'SAME'`` or ``((lo_h, hi_h), (lo_w, hi_w))`` non-negative ints.

    Accepts an int ``p`` (all four sides), a pair ``(ph, pw)`` (symmetric per spatial
    axis), a pair of ``(lo, hi)`` pairs, ``'VALID'`` (no padding) or ``'SAME'`` (kept as
    the string: its sizes depend on the input, see ``ops._window.resolve_padding``).
    Runs at construction time in layers, so a bad padding fails before any data is seen.
    """
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0), (0, 0))
        if mode == "SAME":
            return "SAME"
        raise ValueError(f"{fn}: padding must be 'SAME', 'VALID' or ints, got {padding!r}")
    if _is_int(padding):
        pads = ((padding, padding), (padding, padding))
    elif isinstance(padding, (tuple, list)) and len(padding) == 2 and all(map(_is_int, padding)):
        pads = tuple((p, p) for p in padding)
    elif (isinstance(padding, (tuple, list)) and len(padding) == 2
          and all(isinstance(p, (tuple, list)) and len(p) == 2 and all(map(_is_int, p))
                  for p in padding)):
        pads = tuple(tuple(p) for p in padding)
    else:
        raise TypeError(f"{fn}: padding must be an int, a pair of ints, a pair of (lo, hi) "
                        f"pairs, 'SAME' or 'VALID', got {padding!r}")
    if min(min(p) for p in pads) < 0:
        raise ValueError(f"{fn}: padding must be non-negative, got {padding!r}")
    return tuple((int(lo), int(hi)) for lo, hi in pads)


# ------------------------------------------------------------------------- pytrees
def check_array_leaves(fn: str, what: str, tree, min_rank: int = 0) -> None:
    """Every leaf of ``tree`` must be an array of rank >= ``min_rank`` (path in the message)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not is_array(leaf):
            raise TypeError(f"{fn}: {what}{path_str(path)} must be an array, got "
                            f"{type(leaf).__name__}")
        if len(leaf.shape) < min_rank:
            raise ValueError(f"{fn}: {what}{path_str(path)} has shape {tuple(leaf.shape)}, "
                             f"expected rank >= {min_rank}")


def check_divisible(fn: str, what: str, tree, parts: int, why: str) -> None:
    """Every leaf's leading size must be divisible by ``parts`` (raises ``ValueError``)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = shape_of(leaf)
        if not shape or shape[0] % parts:
            raise ValueError(f"{fn}: {what}{path_str(path)} has shape {shape}; its leading "
                             f"size must be divisible by {parts} ({why})")


def check_groups(fn: str, what: str, size: int, groups: int, name: str = "groups") -> None:
    """``size`` (``what`` says where it comes from) must be divisible by ``groups``, the
    argument ``name``: ``"conv2d: x has shape (2, 8, 8, 6): in_channels 6 is not divisible
    by groups=4"`` (raises ``ValueError``)."""
    if size % groups:
        raise ValueError(f"{fn}: {what} is not divisible by {name}={groups}")


def check_same_leading(fn: str, named: dict, parts: int | None = None, why: str = ""):
    """One leading (batch) size ``N`` for every leaf of ``named``; returns ``N``.

    ``named`` maps a name to an array or a pytree of arrays, e.g. ``{"x": x, "y": y}``; a
    leaf is named by its name and its path (``x``, ``x['image']``, ``arrays[1]``). Every
    leaf must be an array (``TypeError``) with a leading axis (``ValueError``), all
    leading sizes must be equal (``ValueError``: ``"train_step: x has shape (4, 3) but y
    has shape (5,), expected the same leading (batch) size"``), and with ``parts`` ``N``
    must be divisible by it (``ValueError``, ``why`` says what ``parts`` counts, as for
    :func:`check_divisible`). Static shapes only, so it runs at trace time under ``jit``.
    Returns ``None`` when there are no leaves.
    """
    first = None
    for name, tree in named.items():
        leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda a: a is None)[0]
        for path, leaf in leaves:
            where = name + jax.tree_util.keystr(path)
            if not is_array(leaf):
                raise TypeError(f"{fn}: {where} must be an array, got {type(leaf).__name__}")
            shape = shape_of(leaf)
            if not shape:
                raise ValueError(f"{fn}: {where} has shape (), expected a leading (batch) axis")
            if first is None:
                first = where, shape
            elif shape[0] != first[1][0]:
                raise ValueError(f"{fn}: {first[0]} has shape {first[1]} but {where} has shape "
                                 f"{shape}, expected the same leading (batch) size")
    if first is None:
        return None
    if parts is not None and first[1][0] % parts:
        raise ValueError(f"{fn}: {first[0]} has shape {first[1]}; its leading size must be "
                         f"divisible by {parts} ({why})")
    return int(first[1][0])


def check_batch_size(fn: str, batch_size, n: int) -> int:
    """``batch_size`` must be a static Python int in ``[1, n]`` (``n`` examples); returns it.

    ``TypeError`` for a non-int (e.g. a traced value), ``ValueError`` outside ``[1, n]``:
    ``"fit: batch_size must be in [1, 64] (the number of examples), got 65"``.
    """
    batch_size = static_int(fn, "batch_size", batch_size)
    if not 1 <= batch_size <= n:
        raise ValueError(
            f"{fn}: batch_size must be in [1, {n}] (the number of examples), got {batch_size}")
    return batch_size
