"""GaLore: gradient low-rank projection (``optax.contrib``'s ``galore`` and
``scale_by_galore``), with optax 0.2.8's names, signatures, defaults and states.

A matrix gradient ``G`` (``m x n``) is projected onto ``r`` singular vectors of a recent
gradient, the base optimizer runs on the ``r``-row (or ``r``-column) projection, and its
update is projected back, so the base optimizer's state is ``r/min(m, n)`` of its usual
size. The projector is recomputed (an SVD, in float32 as optax) every
``update_proj_gap`` steps.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from funcnet import _checks
from funcnet.optim.adaptive import scale_by_adam
from funcnet.optim.aliases_more import _named
from funcnet.optim.base import check_state, optimizer, safe_increment, zero_count
from funcnet.optim.orthogonal import _as_matrices, _axes
from funcnet._describe import described

_map = jax.tree_util.tree_map


class GaLoreDimensionNumbers(NamedTuple):
    """Which axes of a parameter form GaLore's matrix (optax's class): the
    ``reduction_axis`` (input) axes flattened into its rows, the ``output_axis`` axes into
    its columns (ints or sequences, negative counted from the end); every axis must be
    one or the other. E.g. attention weights ``(embed, heads, head_dim)``:
    ``GaLoreDimensionNumbers(0, (1, 2))``."""

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


class GaLoreState(NamedTuple):
    """optax's ``GaLoreState``: the step count, the base optimizer's state (over the
    projected gradients, and the full ones of unprojected leaves) and the projector of
    each leaf (``(0, 0)`` for an unprojected one)."""

    count: jax.Array          # int32 scalar
    base_optimizer_state: Any
    projector: Any


def _is_dims(x) -> bool:
    return isinstance(x, GaLoreDimensionNumbers)


def _is_dims_leaf(x) -> bool:
    return x is None or _is_dims(x)


def _matrix(fn, x, dims):
    """``x`` as its ``(rows, columns)`` matrix and the function undoing that."""
    if x.ndim < 2:
        raise ValueError(f"{fn}: GaLore projects parameters of rank >= 2, got shape "
                         f"{x.shape} (give it None dimension numbers)")
    batch, _, _ = _axes(fn, x, dims)
    if batch:
        raise ValueError(f"{fn}: every axis of shape {x.shape} must be a reduction or an "
                         f"output axis of {dims}; axes {batch} are neither")
    flat, inverse = _as_matrices(fn, x, dims)          # (1, rows, columns)
    return flat[0], lambda y: inverse(y[None])


def _geometry(m: int, n: int, rank: int):
    """``(left, r)``: project the rows (``P^T G``, ``P`` of ``m x r``) when ``m >= n``,
    else the columns (``G P``, ``P`` of ``n x r``); ``r = min(rank, m, n)``."""
    return m >= n, min(rank, m, n)


@described
def scale_by_galore(rank=128, update_proj_gap=200, scale=1.0, base_optimizer=None,
                    weight_dimension_numbers=None):
    """GaLore's direction (Zhao et al., 2024; optax's ``scale_by_galore``). For each
    projected leaf, as an ``m x n`` matrix ``G`` (``r = min(rank, m, n)``)::

        every update_proj_gap steps (the first included):
            P = U[:, :r]   (m >= n)    or   P = V[:, :r]   (m < n),   G = U S V^T (float32)
        R = P^T G   or   G P                       (the projected gradient)
        (N, s) = base_optimizer.update(R, s)       (in the projected space)
        u = scale * (P N   or   N P^T)             (back to m x n)

    Leaves that are not projected go through ``base_optimizer`` whole.

    Args:
      rank: int > 0, the projection's rank.
      update_proj_gap: int > 0, the steps between projector updates.
      scale: a number, the factor of the projected-back updates.
      base_optimizer: an optimizer that needs no ``params`` (``scale_by_adam`` by
        default; not ``adamw``: use :func:`galore`'s ``weight_decay``).
      weight_dimension_numbers: None (every 2-D leaf is projected, rows = axis 0), one
        :class:`GaLoreDimensionNumbers` (every leaf of rank >= 2), a tree of them with
        None for leaves not to project, or a function of the params giving that tree.

    Returns:
      An ``Optimizer`` with state :class:`GaLoreState`.

    Raises:
      TypeError: ``rank`` or ``update_proj_gap`` not an int; ``base_optimizer`` not an
        optimizer.
      ValueError: ``rank`` or ``update_proj_gap`` < 1; at init, dimension numbers that
        leave an axis out or overlap, or name a leaf of rank < 2.

    References:
      Zhao, Zhang, Chen, Wang, Anandkumar, Tian, "GaLore: Memory-Efficient LLM Training
      by Gradient Low-Rank Projection", ICML 2024, https://arxiv.org/abs/2403.03507.
    """
    fn = "scale_by_galore"
    rank = _checks.static_int(fn, "rank", rank, minimum=1)
    gap = _checks.static_int(fn, "update_proj_gap", update_proj_gap, minimum=1)
    base = scale_by_adam() if base_optimizer is None else base_optimizer
    _checks.check_optimizer(fn, "base_optimizer", base)

    def dims_of(tree):
        spec = weight_dimension_numbers
        if spec is None:
            return _map(lambda p: GaLoreDimensionNumbers() if p.ndim == 2 else None, tree)
        if _is_dims(spec):
            return _map(lambda p: spec if p.ndim >= 2 else None, tree)
        return spec(tree) if callable(spec) else spec

    def shapes(p, dims):
        """(projector, proxy): zeros of the projector's and projected gradient's shapes."""
        if dims is None:
            return jnp.zeros((0, 0), p.dtype), jnp.zeros_like(p)
        (m, n), dt = _matrix(fn, p, dims)[0].shape, p.dtype
        left, r = _geometry(m, n, rank)
        return (jnp.zeros((m, r) if left else (n, r), dt),
                jnp.zeros((r, n) if left else (m, r), dt))

    def pairs(tree, out):
        """A tree of pairs (over ``tree``'s structure) as a pair of trees."""
        return jax.tree_util.tree_transpose(jax.tree_util.tree_structure(tree),
                                            jax.tree_util.tree_structure((0, 0)), out)

    def init(params):
        if not jax.tree_util.tree_leaves(params):
            return GaLoreState(zero_count(), base.init(params), params)
        projectors, proxies = pairs(params, _map(shapes, params, dims_of(params),
                                                 is_leaf=_is_dims_leaf))
        with _checks.context(fn):
            return GaLoreState(zero_count(), base.init(proxies), projectors)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, GaLoreState)
        refresh = (state.count % gap) == 0
        dims = dims_of(updates)

        def project(g, p_old, d):
            if d is None:
                return g, p_old
            g2 = _matrix(fn, g, d)[0]
            left, r = _geometry(*g2.shape, rank)

            def fresh():
                u, _, vh = jnp.linalg.svd(g2.astype(jnp.float32), full_matrices=False)
                return (u[:, :r] if left else vh[:r, :].T).astype(g.dtype)

            p_new = lax.cond(refresh, fresh, lambda: p_old)
            return (p_new.T @ g2 if left else g2 @ p_new), p_new

        def back(n_low, p_new, g, d):
            if d is None:
                return n_low
            g2, inverse = _matrix(fn, g, d)
            left, _ = _geometry(*g2.shape, rank)
            full = p_new @ n_low if left else n_low @ p_new.T
            return (scale * inverse(full)).astype(g.dtype)

        low, projectors = pairs(updates, _map(project, updates, state.projector, dims,
                                              is_leaf=_is_dims_leaf))
        with _checks.context(fn):
            n_low, base_state = base.update(low, state.base_optimizer_state, None)
        out = _map(back, n_low, projectors, updates, dims, is_leaf=_is_dims_leaf)
        return out, GaLoreState(safe_increment(state.count), base_state, projectors)

    return optimizer(init, update)


@described
def galore(learning_rate, rank=128, update_proj_gap=200, scale=1.0, base_optimizer=None,
           weight_decay=0.0, mask=None, weight_dimension_numbers=None):
    """GaLore (optax's ``contrib.galore``): :func:`scale_by_galore`, then decoupled
    weight decay in the full parameter space, then the learning rate::

        chain(scale_by_galore(rank, update_proj_gap, scale, base_optimizer,
                              weight_dimension_numbers),
              add_decayed_weights(weight_decay, mask), scale_by_learning_rate(lr))

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule (1.0 if the base
        optimizer already scales by one).
      rank, update_proj_gap, scale, base_optimizer, weight_dimension_numbers: as in
        :func:`scale_by_galore`.
      weight_decay: AdamW's decoupled decay (>= 0), on the full parameters.
      mask: which leaves decay (a tree of bools or a function of the params).

    Returns:
      An ``Optimizer`` (state ``(GaLoreState, EmptyState, EmptyState)``, as optax).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from funcnet import optim
      >>> f = lambda p: jnp.sum(jnp.square(p["w"]))
      >>> opt = optim.galore(learning_rate=0.01, rank=16)
      >>> params = {"w": jnp.ones((100, 100)), "b": jnp.ones((100,))}
      >>> state = opt.init(params)
      >>> for _ in range(5):
      ...     updates, state = opt.update(jax.grad(f)(params), state, params)
      ...     params = optim.apply_updates(params, updates)
      >>> print(f"{f(params):.2E}")
      9.90E+03

    References:
      Zhao et al., "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
      Projection", ICML 2024, https://arxiv.org/abs/2403.03507.
    """
    return _named("galore", lambda: scale_by_galore(rank, update_proj_gap, scale,
                                                    base_optimizer, weight_dimension_numbers),
                  learning_rate=learning_rate, decay=(weight_decay, mask))
