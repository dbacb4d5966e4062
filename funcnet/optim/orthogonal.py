"""Muon: momentum orthogonalised by Newton-Schulz (optax's ``optax.contrib.muon``).

:func:`scale_by_muon` takes Nesterov momentum of the gradients of matrix parameters and
replaces each matrix by an approximately orthogonal one (its singular values pushed
towards 1) with a few quintic Newton-Schulz iterations; :func:`muon` runs it on the
rank-2 parameters (or those given dimension numbers) and AdamW on the others, as optax's
``partition``. Names, signatures, defaults and the state (:class:`MuonState`, in a
``PartitionState`` of ``MaskedState``-s) are optax 0.2.8's, so states move between the
libraries.

A parameter of rank > 2 is a batch of matrices when :class:`MuonDimensionNumbers` name
its reduction (input) and output axes: the other axes are batch axes, each matrix is
orthogonalised on its own (``vmap``).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.adaptive import debiased_mean, keep_dtypes
from funcnet.optim.aliases import _lr, adamw
from funcnet.optim.base import (
    Optimizer, Updates, cast_like, check_decay, check_nonnegative, check_optional_dtype,
    check_state, current_learning_rate, moment, optimizer, safe_increment, zero_count,
    zeros_like)
from funcnet.optim.combine import MaskedNode, chain, partition
from funcnet.optim.regularization import add_decayed_weights
from funcnet.optim.transforms import _stateless
from funcnet._describe import described

_map = jax.tree_util.tree_map

_DEFAULT_NS_COEFFS = (3.4445, -4.7750, 2.0315)
_NS_PRESETS = {
    "standard": _DEFAULT_NS_COEFFS,
    "dion": ((4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377),
             (3.7418, -5.5913, 2.3037), (2.8769, -3.1427, 1.2046),
             (2.8366, -3.0525, 1.2012)),
}
_PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")


class MuonDimensionNumbers(NamedTuple):
    """Which axes of a parameter form the matrix Muon orthogonalises (optax's class):
    ``x @ W = y`` reduces over ``reduction_axis`` and produces ``output_axis`` (ints or
    sequences of ints, negative counted from the end; several axes are flattened into
    one). Every other axis is a batch axis."""

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


class MuonState(NamedTuple):
    """Step count, momentum and the Newton-Schulz coefficients (optax's ``MuonState``)."""

    count: jax.Array  # int32 scalar
    mu: Updates
    ns_coeffs: jax.Array  # (3,) or (n, 3)


def _is_dim_nums(x) -> bool:
    return isinstance(x, MuonDimensionNumbers)


def _axes(fn, x, dim_nums):
    """(batch, reduction, output) axes of ``x`` as tuples of non-negative ints."""
    def norm(axes, what):
        axes = (axes,) if isinstance(axes, int) else tuple(axes)
        for a in axes:
            _checks.check_axis(fn, a, x.ndim, f"dimension_numbers.{what}")
        return tuple(a % x.ndim for a in axes)

    if x.ndim < 2:
        raise ValueError(f"{fn}: Muon's parameters must have rank >= 2, got shape {x.shape} "
                         f"(give it None dimension numbers to optimize it with Adam)")
    red, out = norm(dim_nums.reduction_axis, "reduction_axis"), norm(dim_nums.output_axis,
                                                                     "output_axis")
    if set(red) & set(out) or not red or not out:
        raise ValueError(f"{fn}: reduction axes {red} and output axes {out} of shape "
                         f"{x.shape} must be disjoint and not empty")
    batch = tuple(sorted(set(range(x.ndim)) - set(red) - set(out)))
    return batch, red, out


def _as_matrices(fn, x, dim_nums):
    """``x`` as a (batch, reduction, output) stack and the function undoing it."""
    batch, red, out = _axes(fn, x, dim_nums)
    order = batch + red + out
    dims = [tuple(x.shape[a] for a in axes) for axes in (batch, red, out)]
    flat = x.transpose(order).reshape([math.prod(d) for d in dims])
    inverse = tuple(sorted(range(x.ndim), key=lambda i: order[i]))
    return flat, lambda y: y.reshape(dims[0] + dims[1] + dims[2]).transpose(inverse)


def _ns_step(x, c, first: bool, preconditioning: str, eps):
    """One quintic step ``c0 X + (c1 A + c2 A^2) X``, ``A = X X^H``; the first step of
    the ``aol`` / ``schatten`` preconditionings rescales ``X`` (and ``A``) first."""
    if first and preconditioning == "aol":
        a = x @ x.T.conj()
        s = jnp.expand_dims(jax.lax.rsqrt(jnp.clip(jnp.abs(a).sum(axis=-1),
                                                   min=cast_like(eps, a.real))), -1)
        s = s.astype(x.dtype)
        x, a = x * s, a * s * s.transpose(-1, -2)
    elif first and preconditioning == "schatten":
        a = x @ x.T                                     # optax's (no conjugate)
        norm = jnp.linalg.norm(a, ord="fro", axis=(-2, -1))
        s = jnp.expand_dims(jax.lax.rsqrt(jnp.clip(norm, min=cast_like(eps, norm))), (0, -1))
        s = s.astype(x.dtype)
        x, a = x * s, a * s ** 2
    else:
        a = x @ x.T.conj()
    b = c[1] * a + c[2] * a @ a
    return c[0] * x + b @ x


def _orthogonalize(x, coeffs, ns_steps, preconditioning, eps):
    """Newton-Schulz on one matrix (the wide orientation: ``X X^H`` is the smaller)."""
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    if preconditioning in ("frobenius", "spectral"):
        norm = jnp.linalg.norm(x, ord="fro" if preconditioning == "frobenius" else 2)
        x = x / (norm + cast_like(eps, norm)).astype(x.dtype)
    coeffs = coeffs.astype(x.dtype)
    if coeffs.ndim == 1 and _checks.traced_int(ns_steps):
        # a traced count (inject_hyperparams under jit): the same steps in a loop
        x = jnp.where(ns_steps > 0, _ns_step(x, coeffs, True, preconditioning, eps), x)
        x = jax.lax.fori_loop(1, jnp.maximum(ns_steps, 1).astype(jnp.int32), lambda _, y:
                              _ns_step(y, coeffs, False, preconditioning, eps), x)
        return x.T if tall else x
    rows = [coeffs] * ns_steps if coeffs.ndim == 1 else list(coeffs)
    for i, c in enumerate(rows):
        x = _ns_step(x, c, i == 0, preconditioning, eps)
    return x.T if tall else x


def _newton_schulz(fn, x, coeffs, ns_steps, preconditioning, eps, dims):
    """Newton-Schulz on each matrix of ``x`` (its axes given by ``dims``)."""
    flat, back = _as_matrices(fn, x, dims)
    return back(jax.vmap(lambda m: _orthogonalize(m, coeffs, ns_steps, preconditioning,
                                                  eps))(flat))


def orthogonalize_via_newton_schulz(x, ns_coeffs, ns_steps=5, preconditioning="frobenius",
                                    eps=1e-8, dimension_numbers=None):
    """An approximately orthogonal (unitary) matrix near ``U V^H``, ``x = U S V^H``
    (optax's ``orthogonalize_via_newton_schulz``).

    ``x`` is scaled (``preconditioning``), then ``ns_steps`` quintic iterations
    ``X <- c0 X + (c1 A + c2 A^2) X``, ``A = X X^H`` run (on ``x^T`` when ``x`` is tall).
    The default coefficients ``(3.4445, -4.7750, 2.0315)`` maximise the slope at 0: the
    singular values end in roughly [0.7, 1.2], not at 1 (Jordan, 2024).

    Args:
      x: a matrix ``(m, n)``, or an array of rank >= 2 with ``dimension_numbers``.
      ns_coeffs: ``(3,)`` coefficients, or ``(k, 3)``: one row per iteration (then
        ``ns_steps`` is ignored).
      ns_steps: the number of iterations for ``(3,)`` coefficients: an int (the steps
        unrolled), or a traced integer scalar (the steps in a ``fori_loop``; what
        ``inject_hyperparams`` passes under ``jit``, as optax's).
      preconditioning: ``"frobenius"`` (divide by the Frobenius norm + eps),
        ``"spectral"`` (by the largest singular value + eps; an SVD), ``"aol"`` (first
        step scales rows by ``1/sqrt(sum_j |A_ij|)``) or ``"schatten"`` (first step
        divides by ``sqrt(||A||_F)``).
      eps: >= 0, guards the divisions.
      dimension_numbers: :class:`MuonDimensionNumbers` for an ``x`` of rank > 2.

    Returns:
      An array of ``x``'s shape and dtype.
    """
    fn = "orthogonalize_via_newton_schulz"
    ns_steps = _check_ns(fn, ns_coeffs, ns_steps, preconditioning, eps)
    if not _is_dim_nums(dimension_numbers):
        if jnp.ndim(x) != 2:
            raise ValueError(f"{fn}: x must have shape (m, n) or dimension_numbers must be "
                             f"MuonDimensionNumbers, got shape {jnp.shape(x)} and "
                             f"{dimension_numbers!r}")
        dimension_numbers = MuonDimensionNumbers()
    return _newton_schulz(fn, x, jnp.asarray(ns_coeffs), ns_steps, preconditioning, eps,
                          dimension_numbers)


def _resolve(dim_nums, updates):
    """The tree of dimension numbers for ``updates``: a function of them is called, None
    or one ``MuonDimensionNumbers`` applies to every leaf (MaskedNode-s stay)."""
    dim_nums = dim_nums(updates) if callable(dim_nums) else dim_nums
    if dim_nums is None or _is_dim_nums(dim_nums):
        one = dim_nums or MuonDimensionNumbers()
        return _map(lambda _: one, updates)
    return dim_nums


def _map_dims(fn, f, updates, dim_nums):
    """``f(update, dims)`` leaf by leaf, a structure mismatch as ``fn``'s ValueError."""
    try:
        return _map(f, updates, dim_nums, is_leaf=_is_dim_nums)
    except ValueError as err:
        if "structure" not in str(err) and "pytree" not in str(err):
            raise
        raise ValueError(
            f"{fn}: weight_dimension_numbers must have the structure of the updates with "
            f"a MuonDimensionNumbers per leaf:\n  dimension numbers: "
            f"{jax.tree_util.tree_structure(dim_nums, is_leaf=_is_dim_nums)}\n  updates: "
            f"{jax.tree_util.tree_structure(updates)}") from None


def _check_ns(fn, ns_coeffs, ns_steps, preconditioning, eps):
    """Checks of the Newton-Schulz settings; ``ns_steps`` as an int, or as the traced
    integer ``inject_hyperparams`` passes under ``jit`` (its value unchecked)."""
    _checks.static_choice(fn, "preconditioning", preconditioning, _PRECONDITIONINGS)
    check_nonnegative(fn, "eps", eps)
    coeffs = jnp.asarray(ns_coeffs)
    if coeffs.ndim not in (1, 2) or coeffs.shape[-1] != 3:
        raise ValueError(f"{fn}: ns_coeffs must have shape (3,) or (n, 3), got {coeffs.shape}")
    if _checks.traced_int(ns_steps):
        return ns_steps
    ns_steps = _checks.static_int(fn, "ns_steps", _checks.int_of_array(ns_steps), minimum=0)
    if coeffs.ndim == 2 and coeffs.shape[0] > ns_steps:
        raise ValueError(f"{fn}: ns_coeffs has {coeffs.shape[0]} rows, more than ns_steps="
                         f"{ns_steps} (optax's 'Not enough coeffs'); an (n, 3) table runs "
                         f"its n rows, pass ns_steps >= n")
    return ns_steps


@described
def scale_by_muon(ns_coeffs=_DEFAULT_NS_COEFFS, ns_steps=5, beta=0.95, eps=1e-8,
                  mu_dtype=None, *, nesterov=True, adaptive=False,
                  preconditioning="frobenius", weight_dimension_numbers=None):
    """Muon's direction (Jordan, 2024), optax's ``optax.contrib.scale_by_muon``::

        m_t = beta m_{t-1} + (1 - beta) g_t                      (m_0 = 0)
        nesterov: m_hat = beta m_t / (1 - beta^(t+1)) + (1 - beta) g_t / (1 - beta^t)
        else:     m_hat = m_t / (1 - beta^t)
        u_t = NS(m_hat)          (orthogonalize_via_newton_schulz, per matrix)
        adaptive: u_t <- <m_hat, u_t> u_t   (the dual norm; Bernstein & Newhouse, 2024)

    Every leaf must be a matrix, or a batch of them with dimension numbers.

    Args:
      ns_coeffs: ``(3,)`` Newton-Schulz coefficients or a ``(n, 3)`` table (one row per
        iteration, ``n <= ns_steps``; the table's rows are all run).
      ns_steps: iterations (an int, or a traced integer: see
        :func:`orthogonalize_via_newton_schulz`; ignored with a table).
      beta: momentum decay, in [0, 1).
      eps: >= 0, guards the preconditioning's division.
      mu_dtype: dtype of the momentum (default: the parameters').
      nesterov: Nesterov momentum (keyword-only, optax's True).
      adaptive: scale by the dual norm (keyword-only).
      preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or ``"schatten"``
        (keyword-only; see :func:`orthogonalize_via_newton_schulz`).
      weight_dimension_numbers: ``None`` (every leaf a 2-D matrix: ``(in, out)``), one
        :class:`MuonDimensionNumbers` for every leaf, a tree of them with the updates'
        structure, or a function ``updates -> such a tree`` (keyword-only).

    Returns:
      An ``Optimizer`` with state :class:`MuonState`.

    Raises:
      ValueError: at construction for bad values; at the first update for a leaf of
        rank < 2 or overlapping axes.

    References:
      Jordan, "modded-nanogpt: Speedrunning the NanoGPT baseline", 2024,
      https://github.com/KellerJordan/modded-nanogpt. Bernstein & Newhouse, "Old
      Optimizer, New Norm: An Anthology", 2024, https://arxiv.org/abs/2409.20325.
    """
    fn = "scale_by_muon"
    ns_steps = _check_ns(fn, ns_coeffs, ns_steps, preconditioning, eps)
    check_decay(fn, "beta", beta)
    mu_dtype = check_optional_dtype(fn, "mu_dtype", mu_dtype)
    nesterov = _checks.static_bool(fn, "nesterov", nesterov)
    adaptive = _checks.static_bool(fn, "adaptive", adaptive)

    def init(params):
        return MuonState(count=zero_count(), mu=zeros_like(params, mu_dtype),
                         ns_coeffs=jnp.asarray(ns_coeffs))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, MuonState, updates, "mu")
        dims = _resolve(weight_dimension_numbers, updates)
        count = safe_increment(state.count)
        mu = _map(lambda g, m: moment(beta, g, m), updates, state.mu)
        m_hat = _map(lambda m, g: debiased_mean(beta, m, count, nesterov, g.astype(m.dtype)),
                     mu, updates)
        out = _map_dims(fn, lambda m, d: _newton_schulz(
            fn, m, state.ns_coeffs, ns_steps, preconditioning, eps, d), m_hat, dims)
        if adaptive:
            out = _map(lambda m, o: jnp.sum(m.conj() * o) * o, m_hat, out)
        return out, state._replace(count=count, mu=keep_dtypes(mu, state.mu))

    return optimizer(init, update)


def _scale_by_shape(weight_dimension_numbers, consistent_rms):
    """optax's ``scale_by_shape`` (Muon's width scaling): ``sqrt(max(1, fan_out /
    fan_in))``, or ``sqrt(max(fan_in, fan_out)) * consistent_rms``; fans are the
    products of the reduction / output axes' lengths."""
    fn = "scale_by_shape"

    def scale(u, dims):
        _, red, out = _axes(fn, u, dims)
        fan_in = math.prod(u.shape[a] for a in red)
        fan_out = math.prod(u.shape[a] for a in out)
        if consistent_rms is None:
            return cast_like(math.sqrt(max(1, fan_out / fan_in)), u) * u
        s = jnp.asarray(math.sqrt(max(fan_in, fan_out))) * consistent_rms
        return s.astype(u.dtype) * u

    return _stateless(fn, lambda u, p: _map_dims(
        fn, scale, u, _resolve(weight_dimension_numbers, u)))


def _muon_labels(spec):
    """optax's ``param_labels`` of muon: ``"muon"`` where a leaf has dimension numbers
    (by default: where it is 2-D), else ``"adam"``."""
    if spec is None:
        return lambda params: _map(lambda x: "muon" if x.ndim == 2 else "adam", params)

    def labels(params):
        dims = spec(params) if callable(spec) else spec
        return _map(lambda d, x: _map(lambda _: "adam" if d is None else "muon", x),
                    dims, params, is_leaf=lambda x: x is None or _is_dim_nums(x))
    return labels


def _muon_dims(spec, labels):
    """Dimension numbers over the muon group's (masked) updates: the given ones (or the
    default) where the label is ``"muon"``, MaskedNode elsewhere."""
    dims_of = spec if spec is not None else MuonDimensionNumbers()

    def dims(updates):
        d = dims_of(updates) if callable(dims_of) else dims_of
        mask = _map(lambda label: label == "muon", labels(updates))
        return _map(lambda dn, sub: _map(lambda m: dn if m else MaskedNode(), sub), d, mask,
                    is_leaf=lambda x: x is None or _is_dim_nums(x) or isinstance(x, MaskedNode))
    return dims


@described
def muon(learning_rate, ns_coeffs=_DEFAULT_NS_COEFFS, ns_steps=5, beta=0.95, eps=1e-8,
         weight_decay=0.0, weight_decay_mask=None, mu_dtype=None, *, nesterov=True,
         adaptive=False, preconditioning="frobenius", adam_b1=0.9, adam_b2=0.999,
         adam_eps_root=0.0, adam_weight_decay=0.0, adam_learning_rate=None,
         muon_weight_dimension_numbers=None, consistent_rms=None) -> Optimizer:
    """Muon (MomentUm Orthogonalized by Newton-Schulz), optax's ``optax.contrib.muon``::

        matrices:  W_t = W_{t-1} - lr * (s * scale_by_muon(g)_t + wd * W_{t-1})
                   s = sqrt(max(1, fan_out / fan_in))
                       (or sqrt(max(fan_in, fan_out)) * consistent_rms)
        others:    AdamW(adam_learning_rate, adam_b1, adam_b2, eps, adam_eps_root,
                         adam_weight_decay, mu_dtype, nesterov)

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule.
      ns_coeffs: Newton-Schulz coefficients ``(3,)``, a ``(n, 3)`` table, or a preset
        name: ``"standard"`` (the default's) or ``"dion"`` (5 rows).
      ns_steps, beta, eps, mu_dtype, nesterov, adaptive, preconditioning: see
        :func:`scale_by_muon` (``eps`` is also Adam's).
      weight_decay: >= 0 or a schedule, on the matrices, multiplied by the learning rate.
      weight_decay_mask: which matrices to decay; see
        :func:`~funcnet.optim.add_decayed_weights`.
      adam_b1, adam_b2, adam_eps_root, adam_weight_decay: the AdamW of the other leaves.
      adam_learning_rate: its learning rate (default: ``learning_rate``).
      muon_weight_dimension_numbers: ``None`` (the 2-D leaves are Muon's, as ``(in,
        out)``), or a tree (a prefix of the parameters') of :class:`MuonDimensionNumbers`
        and ``None`` (``None``: that subtree goes to Adam), or a function ``params ->
        such a tree``.
      consistent_rms: ``None`` or a number: the shape scaling (0.2 matches AdamW's RMS,
        Liu et al., 2025).

    Returns:
      optax's ``partition({"muon": chain(scale_by_muon, scale_by_shape,
      add_decayed_weights, scale_by_learning_rate), "adam": adamw(...)}, labels)``;
      :func:`~funcnet.optim.current_learning_rate` reports the Muon group's rate.

    References:
      Jordan, "modded-nanogpt", 2024, https://github.com/KellerJordan/modded-nanogpt.
      Liu et al., "Muon is Scalable for LLM Training", 2025,
      https://arxiv.org/abs/2502.16982.
    """
    name = "muon"
    if isinstance(ns_coeffs, str):
        _checks.static_choice(name, "ns_coeffs", ns_coeffs, tuple(_NS_PRESETS))
        ns_coeffs = _NS_PRESETS[ns_coeffs]
    if consistent_rms is not None:
        check_nonnegative(name, "consistent_rms", consistent_rms)
    labels = _muon_labels(muon_weight_dimension_numbers)
    dims = _muon_dims(muon_weight_dimension_numbers, labels)
    with _checks.context(name):
        matrices = chain(
            scale_by_muon(ns_coeffs, ns_steps, beta, eps, mu_dtype, nesterov=nesterov,
                          adaptive=adaptive, preconditioning=preconditioning,
                          weight_dimension_numbers=dims),
            _scale_by_shape(dims, consistent_rms),
            add_decayed_weights(weight_decay, weight_decay_mask), _lr(learning_rate),
            name=name)
        others = adamw(learning_rate if adam_learning_rate is None else adam_learning_rate,
                       b1=adam_b1, b2=adam_b2, eps=eps, eps_root=adam_eps_root,
                       weight_decay=adam_weight_decay, mu_dtype=mu_dtype, nesterov=nesterov)
    opt = partition({"muon": matrices, "adam": others}, labels)
    return optimizer(opt.init, opt.update, lambda state: current_learning_rate(
        matrices, state.inner_states["muon"].inner_state))
