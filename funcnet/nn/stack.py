"""``Repeat``: ``n`` copies of a layer with their own params, run by one ``lax.scan``.

The "scan over layers" pattern of deep transformers and ResNets (Flax's ``nn.scan``
over a block, Equinox's ``filter_vmap(init)`` + ``lax.scan``): the ``n`` parameter sets
are stacked on a new leading axis and ``apply`` scans over them, so the program holds
the layer ONCE and its trace and compile time do not grow with ``n``::

    block = nn.serial(nn.Residual(attention), nn.Residual(mlp))
    model = nn.serial(nn.Embedding(V, D), nn.PositionEmbedding(T), nn.Repeat(block, 12),
                      nn.LayerNorm(), nn.Dense(V))

Invariant: ``Repeat(layer, n)`` computes exactly what ``serial(layer, ..., layer)`` (``n``
copies) computes when copy ``i`` holds slice ``i`` of the stacked params and state: the
same values, gradients and state updates, and the same dropout masks (the ``key`` is
split into ``n`` keys as ``serial`` splits it; layer ``i`` gets key ``i``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from funcnet import _checks
from funcnet.nn import base
from funcnet.nn.base import Layer, check_keeps_shape, check_train, fmt, init_child
from funcnet._describe import described

__all__ = ["Repeat"]


def _scale_rows(rows, start: int, n: int) -> None:
    """Multiply the parameter counts of the summary rows recorded from ``start`` on by
    ``n``: the child rows of a ``Repeat`` count all ``n`` copies, so the rows of one
    depth still add up to the total."""
    for i in range(start, len(rows)):
        r = rows[i]
        if r is not None:
            rows[i] = r._replace(n_params=r.n_params * n, n_state=r.n_state * n)


def _stacked(name: str, what: str, tree, n: int) -> None:
    """Every leaf of ``tree`` must be an array with a leading axis of size ``n``."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        _checks.check_array(name, f"{what}{_checks.path_str(path)}", leaf)
        shape = _checks.shape_of(leaf)
        if not shape or shape[0] != n:
            raise ValueError(
                f"{name}: {what}{_checks.path_str(path)} has shape {fmt(shape)}, expected "
                f"a leading axis of size {n} (one slice per layer, as Repeat's init stacks "
                f"them); made by another layer or model?")


@described
def Repeat(layer: Layer, n: int, *, remat: bool = False, policy=None,
           unroll: int = 1) -> Layer:
    """``n`` copies of ``layer``, each with its own params and state, applied in sequence
    by one ``lax.scan`` over parameters stacked on a leading axis.

    ``init`` splits ``key`` into ``n`` keys and draws copy ``i`` as ``layer.init(keys[i],
    input_shape)`` would (the draws are one ``jax.vmap`` of ``layer.init``), stacking every
    leaf of params AND state on a new leading axis of size ``n``. ``apply`` runs
    ``lax.scan`` over ``(params[i], state[i], keys[i])`` with ``x`` as the carry; the
    updated states are stacked again. With ``key``, it is split into ``n`` keys exactly as
    :func:`~funcnet.nn.serial` splits it, so ``Repeat(layer, n)`` gives the same values,
    gradients, state updates and dropout masks as ``serial`` of ``n`` copies holding the
    slices (``None`` stays ``None`` for every layer).

    Shapes:
      input: whatever ``layer`` takes; ``layer`` must map it to the SAME shape (the carry
        of the scan), e.g. a transformer block on ``(N, T, D)`` or a residual block on
        ``(N, H, W, C)``. An input whose dtype ``layer`` promotes (float32 into float64
        params) is cast to that dtype first, as the first copy of ``serial`` would.
      output: the input's shape.
      params, state: ``layer``'s trees with every leaf stacked, ``(n, *leaf.shape)``; so
        ``count_params`` is ``n`` times the layer's.

    Args:
      layer: the :class:`Layer` to repeat (a block: usually a ``serial``).
      n: the number of copies, an int >= 1.
      remat: wrap the scanned body in ``jax.checkpoint`` (as :func:`~funcnet.nn.Remat`):
        the backward pass recomputes each copy's forward pass instead of storing its
        activations, so only the ``n`` carries are saved.
      policy: with ``remat=True``, a ``jax.checkpoint_policies`` policy of what may still
        be saved (e.g. ``jax.checkpoint_policies.dots_with_no_batch_dims_saveable``);
        ``None`` saves nothing inside a copy.
      unroll: passed to ``lax.scan``: copies per loop iteration, an int >= 1 (trades
        compile time for speed; ``unroll=n`` is the unrolled program).

    Returns:
      A :class:`Layer` named ``"Repeat(<layer name>, n)"``. In :func:`~funcnet.nn.summary`
      the repeated layer's rows count all ``n`` copies.

    Raises:
      TypeError: at construction, ``layer`` not a Layer, ``n`` or ``unroll`` not an int
        (a float, a bool), ``remat`` not a bool, ``policy`` not callable.
      ValueError: at construction ``n < 1``, ``unroll < 1``, a ``policy`` without
        ``remat=True``; in ``init`` (and ``apply``) a ``layer`` whose output shape is not
        its input shape; in ``apply`` params or state leaves without the leading axis
        ``n``. The layer's own errors carry ``"Repeat(<name>, n): "``.

    Example::

        model = nn.Repeat(nn.serial(nn.Dense(64), nn.GELU()), 8, remat=True)
        _, params, state = model.init(key, (-1, 64))     # params[0]["w"]: (8, 64, 64)
        y, state = model.apply(params, state, x)

    References:
      Flax ``nn.scan`` / ``nn.remat_scan``; Chen et al. (2016), "Training Deep Nets with
      Sublinear Memory Cost", https://arxiv.org/abs/1604.06174.
    """
    base.check_layer("Repeat", "layer", layer)
    n = _checks.static_int("Repeat", "n", n, minimum=1)
    name = f"Repeat({layer.name}, {n})"
    remat = _checks.static_bool(name, "remat", remat)
    unroll = _checks.static_int(name, "unroll", unroll, minimum=1)
    if policy is not None:
        _checks.check_callable(name, "policy", policy, "(primitive, *avals, **params)")
        if not remat:
            raise ValueError(f"{name}: policy={policy!r} is a checkpoint policy, which needs "
                             f"remat=True")
    why = "Repeat feeds each copy's output to the next (use serial for a layer that changes it)"

    def init(key, input_shape):
        key = _checks.check_key(f"{name}.init", key)
        keys = jax.random.split(key, n)
        # one recorded (abstract) init: the summary rows and the output shape; the n draws
        # are not recorded again
        recorder = base._RECORDER.get()
        start = len(recorder[0]) if recorder is not None else 0
        out = {}

        def one(k):
            out["shape"], p, s = init_child(None, 0, layer, k, input_shape)
            return p, s

        with _checks.context(name):
            jax.eval_shape(one, keys[0])
        if recorder is not None:
            _scale_rows(recorder[0], start, n)
        check_keeps_shape(name, input_shape, out["shape"], why)
        token = base._RECORDER.set(None)
        try:
            with _checks.context(name):
                params, state = jax.vmap(lambda k: layer.init(k, input_shape)[1:])(keys)
        finally:
            base._RECORDER.reset(token)
        return out["shape"], params, state

    def step(x, xs, train):
        p, s, k = xs
        y, s = layer.apply(p, s, x, key=k, train=train)
        return y, s

    def apply(params, state, x, *, key=None, train=False):
        train = check_train(name, train)
        _stacked(name, "params", params, n)
        _stacked(name, "state", state, n)
        keys = None if key is None else jax.random.split(
            _checks.check_key(name, key), n)
        # one copy traced abstractly: its output must be the carry (shape, then dtype)
        slice0 = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), (params, state, keys))
        with _checks.context(name):
            y0 = jax.eval_shape(lambda xs, x: step(x, xs, train)[0], slice0, x)
            shapes = [jax.tree_util.tree_map(_checks.shape_of, t) for t in (x, y0)]
            check_keeps_shape(name, *shapes, why)
            # the carry takes the dtype the layer computes in (float32 x, float64 params)
            x = jax.tree_util.tree_map(lambda a, b: jnp.asarray(a).astype(b.dtype), x, y0)
            body = lambda c, xs: step(c, xs, train)          # noqa: E731
            if remat:
                body = jax.checkpoint(body, policy=policy, prevent_cse=False)
            y, new_state = lax.scan(body, x, (params, state, keys), length=n,
                                    unroll=unroll)
        return y, new_state

    return Layer(init, apply, name, (layer,))
