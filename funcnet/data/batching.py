"""Mini-batches: a Python iterator, a stacked epoch for ``lax.scan``, and a :class:`Loader`.

Shuffling is a permutation drawn from an explicit JAX PRNG key, so the same key gives the
same batches on every run and every backend. Epoch ``e`` of a run with key ``key`` draws
its permutation from ``epoch_keys(key, e)[0]``, in ``funcnet.train.fit`` (arrays) and in
:class:`Loader` alike: a ``Loader`` over the same arrays yields exactly ``fit``'s batches.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import _checks
from funcnet.data._common import take_rows


def epoch_keys(key, epoch) -> tuple[jax.Array, jax.Array]:
    """``(shuffle_key, model_key)`` of 0-based ``epoch``: ``split(fold_in(key, epoch))``.

    ``shuffle_key`` draws the epoch's permutation (:func:`epoch_batches`,
    :class:`Loader`); ``model_key`` is what ``funcnet.train.fit`` folds with the step
    index for the model's randomness (dropout). Works under ``jax.jit`` (traced epoch).
    """
    return _epoch_keys(_checks.check_key("epoch_keys", key, allow_seed=True), epoch)


@jax.jit
def _epoch_keys(key, epoch):
    # one compiled call: op by op, the fold_in and split cost ~0.15 ms per epoch on a CPU
    shuffle_key, model_key = jax.random.split(jax.random.fold_in(key, epoch))
    return shuffle_key, model_key


@functools.partial(jax.jit, static_argnums=2)
def _epoch_order(key, epoch, n: int):
    """``permutation(epoch_keys(key, epoch)[0], n)``, compiled (~5x faster than op by op)."""
    return jax.random.permutation(_epoch_keys(key, epoch)[0], n)


def batches(x, y, batch_size: int, *, key=None,
            drop_last: bool = True) -> Iterator[tuple]:
    """Iterates over ``(x_batch, y_batch)`` pairs, shuffled when a ``key`` is given.

    Arguments are checked when ``batches`` is called, not at the first ``next``.

    Args:
      x: examples, shape ``(N, ...)`` (NumPy or ``jnp``), or a pytree of such arrays (a
        dict or tuple of inputs with the same ``N``): every leaf is batched alike.
      y: targets, shape ``(N, ...)`` (or a pytree, as ``x``).
      batch_size: examples per batch, in ``[1, N]``.
      key: a JAX PRNG key or int seed to shuffle with ``jax.random.permutation(key, N)``;
        ``None`` keeps the order of ``x``.
      drop_last: drop the final ``N % batch_size`` examples so every batch is full (and a
        jitted step compiles once); otherwise the last batch is smaller.

    Returns:
      An iterator of ``(x[idx], y[idx])`` with batches of shape ``(batch_size, ...)``, of the
      same kind (NumPy or ``jnp``) as the inputs.

    Raises:
      ValueError: the first dimensions of ``x`` and ``y`` differ, or ``batch_size`` is not in
        ``[1, N]``.
      TypeError: ``x`` or ``y`` is not an array, ``batch_size`` is not an int, ``key`` is
        not a key or int, or ``drop_last`` is not a bool.
    """
    fn = "batches"
    n = _checks.check_same_leading(fn, {"x": x, "y": y})
    batch_size = _checks.check_batch_size(fn, batch_size, n)
    drop_last = _checks.static_bool(fn, "drop_last", drop_last)
    order = (np.arange(n) if key is None else np.asarray(
        jax.random.permutation(_checks.check_key(fn, key, allow_seed=True), n)))
    return _rows(x, y, order, batch_size, drop_last)


def _rows(x, y, order: np.ndarray, batch_size: int, drop_last: bool, transform=None,
          transform_key=None):
    """``(x[idx], y[idx])`` (through ``transform``) for each ``batch_size`` slice ``idx``
    of ``order``; with ``drop_last`` the last ``len(order) % batch_size`` rows are left out.
    With ``transform_key``, batch ``i`` is transformed with ``fold_in(transform_key, i)``."""
    n = len(order)
    for i, start in enumerate(range(0, n - n % batch_size if drop_last else n, batch_size)):
        idx = order[start:start + batch_size]
        xb, yb = take_rows(x, idx), take_rows(y, idx)
        if transform is None:
            yield xb, yb
        elif transform_key is None:
            yield transform(xb, yb)
        else:
            yield transform(xb, yb, _fold_in(transform_key, i))


_fold_in = jax.jit(jax.random.fold_in)


def _takes_key(transform) -> bool:
    """Whether ``transform`` needs a third positional argument (its key): ``f(xb, yb, key)``.

    That is a third positional parameter without a default, or ``*args`` in its place
    (``f(xb, yb, *args)``). A third parameter with a default (``f(xb, yb, factor=0.5)``)
    is an option of a plain transform, left to its default; a keyword-only parameter
    (``f(xb, yb, *, key=None)``) is never given the key. Without a signature: ``False``.
    """
    try:
        params = list(inspect.signature(transform).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 3:
        return positional[2].default is inspect.Parameter.empty
    return any(p.kind is p.VAR_POSITIONAL for p in params)


def epoch_batches(x, y, batch_size: int, key) -> tuple[jax.Array, jax.Array]:
    """One shuffled epoch stacked as ``(num_batches, batch_size, ...)`` for ``lax.scan``.

    ``num_batches = N // batch_size``; the ``N % batch_size`` examples that land last in the
    permutation are dropped (a different remainder each epoch). Works on ``jnp`` arrays
    inside ``jax.jit`` as long as ``batch_size`` is a static Python int::

        def epoch(params, key):
            xb, yb = epoch_batches(x, y, 32, key)
            return lax.scan(step, params, (xb, yb))

    Args:
      x: examples, shape ``(N, ...)``, or a pytree of arrays with the same ``N``.
      y: targets, shape ``(N, ...)`` (or a pytree).
      batch_size: static Python int in ``[1, N]``.
      key: a JAX PRNG key (or an int seed, outside of tracing).

    Returns:
      ``(xb, yb)``, ``jnp`` arrays of shapes ``(N // batch_size, batch_size) + x.shape[1:]``
      and ``(N // batch_size, batch_size) + y.shape[1:]``, with
      ``xb.reshape(-1, ...) == x[jax.random.permutation(key, N)[:num_batches * batch_size]]``.

    Raises:
      ValueError: the first dimensions of ``x`` and ``y`` differ, or ``batch_size`` is not in
        ``[1, N]``.
      TypeError: ``x`` or ``y`` is not an array, ``batch_size`` is not a Python int (e.g.
        traced), or ``key`` is not a key.
    """
    fn = "epoch_batches"
    n = _checks.check_same_leading(fn, {"x": x, "y": y})
    batch_size = _checks.check_batch_size(fn, batch_size, n)
    num_batches = n // batch_size
    key = _checks.check_key(fn, key, allow_seed=True)
    idx = jax.random.permutation(key, n)[:num_batches * batch_size]

    def stack(a):
        a = jnp.asarray(a)
        return jnp.take(a, idx, axis=0).reshape((num_batches, batch_size) + a.shape[1:])

    return jax.tree_util.tree_map(stack, x), jax.tree_util.tree_map(stack, y)


class Loader:
    """Shuffled mini-batches of ``(x, y)`` per epoch, for ``fit`` and for eager loops.

    ``loader(epoch)`` iterates over the batches of 0-based ``epoch``: rows
    ``x[perm[i * batch_size:(i + 1) * batch_size]]`` with ``perm =
    jax.random.permutation(epoch_keys(key, epoch)[0], N)`` (the permutation
    ``funcnet.train.fit`` uses for arrays), or in order without a key. Only the rows of
    each batch are read, so ``x`` and ``y`` may be memory-mapped (``np.load(path,
    mmap_mode="r")``, :func:`funcnet.data.load_mnist` with ``mmap=True``) and larger than
    memory. ``fit(model, ..., data=loader)`` calls ``loader(epoch)`` for each epoch, so a
    resumed run sees the same batches as an uninterrupted one. Iterating over the loader
    itself (``for xb, yb in loader``) runs epoch 0, then 1, ... on successive loops.

    Args:
      x: examples ``(N, ...)``: NumPy arrays, memory maps, or anything with ``shape``,
        ``dtype`` and row indexing ``x[idx]``; or a pytree of them with the same ``N``
        (e.g. ``{"tokens": ..., "lengths": ...}``), batched leaf by leaf.
      y: targets ``(N, ...)`` (or a pytree, as ``x``).
      batch_size: rows per batch, in ``[1, N]``.
      key: a PRNG key or int seed (the run's key, as given to ``fit``), or ``None`` for
        the stored order.
      drop_last: drop the last ``N % batch_size`` rows of each epoch (every batch full).
      transform: optional ``transform(xb, yb) -> (xb, yb)`` applied to each batch (e.g.
        scaling); it runs in ``fit``'s prefetch thread when there is one (on an
        accelerator by default), else in the training loop. A random augmentation takes a
        required third positional argument (no default; or ``*args``),
        ``transform(xb, yb, key)``: batch ``i`` of ``epoch`` gets
        ``fold_in(fold_in(epoch_keys(key, epoch)[0], 1), i)``, so a resumed run augments
        exactly as the uninterrupted one (draw from that key, never from global NumPy
        state); it needs the Loader's ``key``. A third parameter with a default
        (``transform(xb, yb, factor=0.5)``) or a keyword-only one is not given a key: the
        transform is called as ``transform(xb, yb)``.

    Raises:
      ValueError: lengths of ``x`` and ``y`` differ, ``batch_size`` not in ``[1, N]``, or
        ``transform`` takes a key and ``key`` is ``None``.
      TypeError: ``x`` or ``y`` without ``shape`` and ``dtype``, ``batch_size`` not an int,
        ``key`` not a key, ``drop_last`` not a bool, ``transform`` not callable.
    """

    def __init__(self, x, y, batch_size: int, *, key=None, drop_last: bool = True,
                 transform: Callable | None = None):
        fn = "Loader"
        self.num_examples = _checks.check_same_leading(fn, {"x": x, "y": y})
        self.batch_size = _checks.check_batch_size(fn, batch_size, self.num_examples)
        self.key = None if key is None else _checks.check_key(fn, key, allow_seed=True)
        self.drop_last = _checks.static_bool(fn, "drop_last", drop_last)
        self._keyed = False
        if transform is not None:
            _checks.check_callable(fn, "transform", transform,
                                   "transform(xb, yb[, key]) -> (xb, yb)")
            self._keyed = _takes_key(transform)
            if self._keyed and self.key is None:
                raise ValueError(f"{fn}: transform takes a key (transform(xb, yb, key)); "
                                 f"give the Loader a key= to draw it from")
        self.x, self.y, self.transform = x, y, transform
        self._epoch = 0

    def __len__(self) -> int:
        n, b = self.num_examples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def order(self, epoch: int) -> np.ndarray:
        """The row order of ``epoch`` (before the last partial batch is dropped)."""
        epoch = _checks.static_int("Loader", "epoch", epoch, minimum=0)
        if self.key is None:
            return np.arange(self.num_examples)
        return np.asarray(_epoch_order(self.key, epoch, self.num_examples))

    def __call__(self, epoch: int) -> Iterator[tuple]:
        transform_key = None
        if self._keyed:
            transform_key = _fold_in(_epoch_keys(self.key, epoch)[0], 1)
        return _rows(self.x, self.y, self.order(epoch), self.batch_size, self.drop_last,
                     self.transform, transform_key)

    def __iter__(self) -> Iterator[tuple]:
        epoch, self._epoch = self._epoch, self._epoch + 1
        return self(epoch)

    def __repr__(self) -> str:
        return (f"Loader({self.num_examples} examples, batch_size={self.batch_size}, "
                f"{'shuffled' if self.key is not None else 'in order'})")
