"""optax 0.2.8's ``microbatch`` (``optax.microbatching``): evaluate a function on a
batch one microbatch after another (a ``lax.fori_loop``) and combine the results, for
batches whose activations do not fit in memory at once.

``funcnet.optim.microbatching`` is this module (``AccumulationType``, ``Accumulator``,
``microbatch``, ``reshape_batch_axis``, ``micro_vmap``, ``micro_grad``), as
``optax.microbatching``; explicit-sharding meshes (optax's ``out_sharding`` reshapes) are
not handled.
"""
from __future__ import annotations

import collections
import dataclasses
import enum
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import _checks

__all__ = ["AccumulationType", "Accumulator", "microbatch", "reshape_batch_axis",
           "micro_vmap", "micro_grad", "IndividualOutputs"]

# optax's per-example outputs of ``micro_grad`` (its class name is "Aux", as optax's)
IndividualOutputs = collections.namedtuple("Aux", ["values", "metrics", "aux"])


@dataclasses.dataclass(frozen=True)
class Accumulator:
    """How microbatch results combine (optax's ``Accumulator``)::

        carry = init(shape_dtype_of_one_result)
        for i in range(n): carry = update(carry, result_i, i)
        return finalize(carry)

    ``aggregate(values)`` reduces a stacked axis 0 the same way (optax's ``micro_vmap``).
    """

    init: Callable
    update: Callable
    finalize: Callable
    aggregate: Callable


class AccumulationType(enum.Enum):
    """optax's ``AccumulationType``: ``MEAN`` (over the microbatches), ``SUM``,
    ``RUNNING_MEAN`` (over the microbatches run: with ``num_real_microbatches``),
    ``CONCAT`` (along axis 0, in the batch's order)."""

    MEAN = enum.auto()
    SUM = enum.auto()
    RUNNING_MEAN = enum.auto()
    CONCAT = enum.auto()


def _leafwise(acc: Accumulator) -> Accumulator:
    """An array accumulator applied leaf by leaf to a tree of results."""
    tm = jax.tree_util.tree_map
    return Accumulator(lambda v: tm(acc.init, v),
                       lambda c, v, i: tm(lambda a, b: acc.update(a, b, i), c, v),
                       lambda c: tm(acc.finalize, c), lambda v: tm(acc.aggregate, v))


def _floating(fn):
    def init(x):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"microbatch: MEAN and RUNNING_MEAN accumulate floating "
                             f"values, got {x.dtype}")
        return fn(x)
    return init


def _zeros(x):
    return jnp.zeros(x.shape, x.dtype)


def _accumulator(kind, n: int) -> Accumulator:
    if isinstance(kind, Accumulator):
        return kind
    if kind is AccumulationType.SUM:
        return _leafwise(Accumulator(_zeros, lambda c, v, i: c + v, lambda c: c,
                                     functools.partial(jnp.sum, axis=0)))
    if kind is AccumulationType.MEAN:
        return _leafwise(Accumulator(_floating(_zeros), lambda c, v, i: c + v,
                                     lambda c: c / jnp.asarray(n, c.dtype),
                                     functools.partial(jnp.mean, axis=0)))
    if kind is AccumulationType.RUNNING_MEAN:
        def running(c, v, i):
            p = (i / (i + 1)).astype(c.dtype)
            return c * p + v * (jnp.ones((), c.dtype) - p)
        return _leafwise(Accumulator(_floating(_zeros), running, lambda c: c,
                                     functools.partial(jnp.mean, axis=0)))
    if kind is AccumulationType.CONCAT:
        return _leafwise(Accumulator(
            lambda x: jnp.zeros((n,) + tuple(x.shape), x.dtype),
            lambda c, v, i: c.at[i].set(v),
            lambda c: jnp.reshape(jnp.moveaxis(c, 0, 1), (-1,) + c.shape[2:]),
            lambda v: v))
    raise ValueError(f"microbatch: unknown accumulator {kind!r} (an AccumulationType or "
                     f"an Accumulator)")


def _composed(tree, n: int) -> Accumulator:
    """A tree of accumulators (a prefix of the results' tree) as one accumulator."""
    accs = jax.tree_util.tree_map(lambda k: _accumulator(k, n), tree,
                                  is_leaf=lambda k: isinstance(k, Accumulator))
    leaf = lambda k: isinstance(k, Accumulator)  # noqa: E731
    tm = functools.partial(jax.tree_util.tree_map, is_leaf=leaf)
    return Accumulator(lambda v: tm(lambda a, x: a.init(x), accs, v),
                       lambda c, v, i: tm(lambda a, cc, x: a.update(cc, x, i), accs, c, v),
                       lambda c: tm(lambda a, cc: a.finalize(cc), accs, c),
                       lambda v: tm(lambda a, x: a.aggregate(x), accs, v))


def reshape_batch_axis(tree: Any, microbatch_size: int, axis: int = 0) -> Any:
    """Split the batch axis of every leaf into ``(num_microbatches, microbatch_size)``
    in column-major order (optax's ``reshape_batch_axis``): microbatch ``j`` holds the
    examples ``j, j + n, j + 2n, ...`` (``n`` microbatches), so a batch sharded along
    its axis stays sharded along ``microbatch_size``."""
    def leaf(x):
        shape = x.shape[:axis] + (-1, microbatch_size) + x.shape[axis + 1:]
        return jnp.reshape(x, shape, order="F")
    return jax.tree_util.tree_map(leaf, tree)


def _as_tuple(value, kind):
    return (value,) if isinstance(value, kind) else tuple(value)


def microbatch(fun, argnums, microbatch_size, accumulator=AccumulationType.SUM, *,
               argnames=(), in_axes=0, num_real_microbatches=None):
    """``fun`` evaluated on microbatches of its batch arguments one after another, the
    results combined by ``accumulator`` (optax's ``microbatch``)::

        acc = init(...)
        for j in range(batch // microbatch_size): acc = update(acc, fun(microbatch_j), j)
        return finalize(acc)

    Microbatch ``j`` holds the examples ``j, j + n, ...`` (``n`` microbatches:
    :func:`reshape_batch_axis`); ``CONCAT`` puts the results back in the batch's order.

    Args:
      fun: any function.
      argnums: an int or ints, the positional arguments with a batch axis.
      microbatch_size: examples per microbatch, dividing the batch; None returns
        ``fun`` itself.
      accumulator: an ``AccumulationType``, an :class:`Accumulator`, or a tree of them
        (a prefix of ``fun``'s result tree).
      argnames: a str or strs, the keyword arguments with a batch axis.
      in_axes: the batch axis of each of ``argnums + argnames`` (an int: all).
      num_real_microbatches: stop after this many microbatches (an int or a traced
        int: variable batch sizes without recompiling; with ``RUNNING_MEAN``).

    Returns:
      The microbatched function (same arguments as ``fun``).

    Raises:
      TypeError: ``fun`` not callable, ``microbatch_size`` not an int.
      ValueError (at the call): batch axes of different sizes, or one that
        ``microbatch_size`` does not divide.
    """
    fn = "microbatch"
    _checks.check_callable(fn, "fun", fun)
    if microbatch_size is None:
        return fun
    size = _checks.static_int(fn, "microbatch_size", microbatch_size, minimum=1)
    argnums = _as_tuple(argnums, int)
    argnames = _as_tuple(argnames, str)
    axes = ((in_axes,) * (len(argnums) + len(argnames)) if isinstance(in_axes, int)
            else tuple(in_axes))
    if len(axes) != len(argnums) + len(argnames):
        raise ValueError(f"{fn}: in_axes has {len(axes)} entries, expected one per "
                         f"argnums + argnames ({len(argnums) + len(argnames)})")

    def microbatched(*args, **kwargs):
        args, kwargs = list(args), dict(kwargs)
        slots = [(args, i) for i in argnums] + [(kwargs, k) for k in argnames]
        sizes = {np.shape(x)[ax] for (where, key), ax in zip(slots, axes)
                 for x in jax.tree_util.tree_leaves(where[key])}
        if len(sizes) > 1:
            raise ValueError(f"{fn}: the batch arguments have batch axes of sizes "
                             f"{sorted(sizes)}, expected one size")
        batch = sizes.pop() if sizes else 0
        if batch % size:
            raise ValueError(f"{fn}: microbatch_size {size} does not divide the batch "
                             f"size {batch}")
        n = batch // size
        for (where, key), ax in zip(slots, axes):
            where[key] = reshape_batch_axis(where[key], size, ax)
        acc = _composed(accumulator, n)

        def run(j):
            a, k = list(args), dict(kwargs)
            for (where, key), ax in zip([(a, i) for i in argnums] + [(k, s) for s in argnames],
                                        axes):
                where[key] = jax.tree_util.tree_map(
                    lambda x, ax=ax: jnp.take(x, j, axis=ax), where[key])
            return fun(*a, **k)

        stop = n if num_real_microbatches is None else num_real_microbatches
        carry = acc.init(jax.eval_shape(run, 0))
        carry = jax.lax.fori_loop(0, stop, lambda j, c: acc.update(c, run(j), j), carry)
        return acc.finalize(carry)

    return microbatched


def micro_vmap(fun, in_axes=0, out_axes=0, *, microbatch_size=None, vmap_fn=jax.vmap,
               accumulator=AccumulationType.CONCAT, num_real_microbatches=None):
    """``jax.vmap`` of ``fun`` run one microbatch at a time (optax's ``micro_vmap``):
    ``vmap_fn(fun, in_axes)`` on each microbatch, its results reduced over the
    microbatch by ``accumulator``'s ``aggregate`` and then combined across microbatches
    by the accumulator (``CONCAT``, the default, gives ``jax.vmap``'s result; ``SUM`` /
    ``MEAN`` never hold the whole batch's outputs).

    Args:
      fun: the function to map.
      in_axes: an int or one entry per positional argument: 0 (mapped) or None.
        Keyword arguments are mapped along axis 0 (``jax.vmap``'s rule).
      out_axes: 0 only (as optax).
      microbatch_size: examples per microbatch (dividing the batch); None: one.
      vmap_fn: ``jax.vmap`` or a function of its signature.
      accumulator, num_real_microbatches: as in :func:`microbatch`.

    Returns:
      The mapped function (same arguments as ``fun``).

    Raises:
      NotImplementedError: ``out_axes`` other than 0.
      TypeError: ``fun`` not callable.
    """
    fn = "micro_vmap"
    _checks.check_callable(fn, "fun", fun)
    if out_axes != 0:
        raise NotImplementedError(f"{fn}: out_axes must be 0, got {out_axes!r}")
    in_axes = (in_axes,) if isinstance(in_axes, int) else tuple(in_axes)

    def vmap_reduce(*args, kwargs):
        out = vmap_fn(fun, in_axes, out_axes)(*args, **kwargs)
        size = jax.tree_util.tree_leaves(out)[0].shape[0]
        return _composed(accumulator, size).aggregate(out)   # only aggregate: n unused

    mapped = microbatch(vmap_reduce, tuple(i for i, a in enumerate(in_axes) if a is not None),
                        microbatch_size, accumulator, argnames="kwargs",
                        in_axes=tuple(a for a in in_axes if a is not None) + (0,),
                        num_real_microbatches=num_real_microbatches)
    return lambda *args, **kwargs: mapped(*args, kwargs=kwargs)


def micro_grad(fun, has_aux=False, argnums=0, *, batch_argnums=1, keep_batch_dim=True,
               microbatch_size=None, accumulator=AccumulationType.SUM,
               transform_fn=lambda x: x, metrics_fn=lambda x: None,
               num_real_microbatches=None):
    """Per-example gradients, transformed and combined, one microbatch at a time
    (optax's ``micro_grad``)::

        g_i = grad fun(params, example_i)            (each example a batch of one)
        result = accumulate_i transform_fn(g_i)      (SUM by default)
        aux = IndividualOutputs(values=fun_i, metrics=metrics_fn(g_i), aux=aux_i)

    E.g. ``transform_fn`` clipping each ``g_i`` (DP-SGD), or ``(g, g**2)`` for the
    gradient's per-example variance; ``aux`` holds per-example values.

    Args:
      fun: the loss, ``fun(params, batch, ...)`` by default.
      has_aux: ``fun`` returns ``(value, aux)``.
      argnums: the argument(s) to differentiate.
      batch_argnums: the argument(s) with the examples on axis 0.
      keep_batch_dim: ``fun`` expects a batch axis (each example is given as a batch
        of one); False: single examples.
      microbatch_size, accumulator, num_real_microbatches: as in :func:`microbatch`
        (``accumulator`` applies to ``transform_fn``'s result).
      transform_fn: applied to each example's gradient before accumulating.
      metrics_fn: applied to each example's gradient, returned per example.

    Returns:
      A function of ``fun``'s arguments returning ``(accumulated, IndividualOutputs)``.
    """
    fn = "micro_grad"
    _checks.check_callable(fn, "fun", fun)
    batch_argnums = _as_tuple(batch_argnums, int)
    with_aux = fun if has_aux else (lambda *a, **k: (fun(*a, **k), None))
    value_and_grad = jax.value_and_grad(with_aux, argnums, has_aux=True)

    def one(*args, **kwargs):
        (value, aux), grad = value_and_grad(*args, **kwargs)
        return transform_fn(grad), IndividualOutputs(values=value, metrics=metrics_fn(grad),
                                                     aux=aux)

    in_axes = [0 if i in batch_argnums else None for i in range(max(batch_argnums) + 1)]
    mapped = micro_vmap(one, in_axes=in_axes, microbatch_size=microbatch_size,
                        accumulator=(accumulator, AccumulationType.CONCAT),
                        num_real_microbatches=num_real_microbatches)
    if not keep_batch_dim:
        return mapped

    def with_batch_of_one(*args, **kwargs):
        args = list(args)
        for i in batch_argnums:    # each example a batch of one inside the vmap
            args[i] = jax.tree_util.tree_map(lambda x: jnp.expand_dims(x, 1), args[i])
        return mapped(*args, **kwargs)

    return with_batch_of_one
