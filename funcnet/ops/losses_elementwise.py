"""Elementwise losses averaged over every element: MSE and binary cross-entropies (note 004).

``pred``/``probs``/``logits`` and ``targets`` must have the same shape (no broadcasting)
and floating dtypes, which are promoted to their common dtype (JAX's standard promotion,
as optax: a float64 model with float32 targets gives a float64 loss); the loss is the
mean over all ``M >= 1`` elements (an empty input is refused: its mean is undefined).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

import numpy as np

from funcnet import _checks
from funcnet.ops._arrays import as_array, compute_dtype, promote_pair
from funcnet.ops._mode import has_twin
from funcnet.ops._mesh import defvjp


def check_elementwise_args(fn: str, a_name: str, a, b_name: str, b):
    """The checks of the elementwise losses (and their twins); returns ``(a, b)`` promoted
    to their common floating dtype."""
    _checks.check_float(fn, a_name, a)
    _checks.check_float(fn, b_name, b)
    _checks.check_same_shape(fn, a_name, a, b_name, b)
    _checks.check_nonempty(fn, a_name, a, "at least one element (the loss is a mean)")
    return promote_pair(as_array(a), as_array(b))


def check_row_args(fn: str, a_name: str, a, b_name: str, b, axis=-1, where=None,
                   fills=(0.0, 0.0)):
    """:func:`check_elementwise_args` for losses over rows (KL, cosine): also rank >= 1.

    optax's ``axis`` (an int or a tuple: the axes a row runs along) and ``where`` (a bool
    array of the inputs' shape; False elements leave the row's reduction) are applied
    here: ``a`` and ``b`` (and ``where``) come back as ``(a, b, where)`` with the row axes
    moved last and flattened into one, ``(..., C)``, and the masked-out elements replaced
    by ``fills`` (values whose terms are 0: no value and no gradient reach them)."""
    a, b = check_elementwise_args(fn, a_name, a, b_name, b)
    _checks.check_min_rank(fn, a_name, a, 1)
    if where is not None:
        where = _checks.check_bool(fn, "where", where)
        _checks.check_same_shape(fn, "where", where, a_name, a)
        a, b = (jnp.where(where, x, jnp.asarray(f, x.dtype)) for x, f in zip((a, b), fills))
    rest, axes = _checks.row_axes(fn, axis, a.ndim)
    if axes == (a.ndim - 1,):
        return a, b, where
    shape = tuple(a.shape[i] for i in rest) + (-1,)
    return tuple(None if x is None else x.transpose(rest + axes).reshape(shape)
                 for x in (a, b, where))


# ------------------------------------------------------------------------ mean squared error
@jax.custom_vjp
def mean_square_kernel(pred, target):
    return jnp.mean(jnp.square(pred - target))


def _mse_fwd(pred, target):
    diff = pred - target
    return jnp.mean(jnp.square(diff)), diff


def _mse_bwd(diff, g):
    dpred = diff * (2 * g / diff.size)
    return dpred, -dpred


defvjp(mean_square_kernel, _mse_fwd, _mse_bwd)


@has_twin
def mean_squared_error(pred, target):
    """``L = (1/M) sum_i (pred_i - target_i)^2`` over all ``M`` elements (note 004).

    Backward: ``dL/dpred = 2 (pred - target) / M`` and ``dL/dtarget = -dL/dpred``.
    (Note 004 writes ``2/n (Y* - Y)`` labelled ``dL/dY`` with ``Y*`` the prediction: the
    value is the derivative with respect to the prediction.) Residual: ``pred - target``.

    Args:
      pred: floating array of any shape, at least one element.
      target: same shape, floating (promoted with ``pred``).

    Returns:
      Scalar loss, of the promoted dtype.
    """
    return mean_square_kernel(*check_elementwise_args("mean_squared_error", "pred", pred,
                                                      "target", target))


# ------------------------------------------------------------------- binary cross-entropy
def clip_bounds(eps: float, dtype):
    """Static clip range ``(lo, hi)`` of ``p`` in ``dtype``, both logs finite.

    ``lo = max(eps, tiny)`` and ``hi = min(1 - eps, 1 - epsneg)`` rounded in ``dtype``:
    ``1 - eps`` can round to 1 (``1 - 1e-7`` in float16 or bfloat16; ``eps = 0``), and
    ``log1p(-1) = -inf`` then turns ``0 * log(1 - p)`` into NaN.
    """
    info = np.finfo(dtype)
    lo = max(np.asarray(eps, dtype), info.tiny)
    hi = min(np.asarray(1 - eps, dtype), np.asarray(1, dtype) - info.epsneg)
    return lo, hi


def _bce_terms(probs, targets, eps):
    """``(elementwise loss, clipped p, in-range mask, t)`` in the compute dtype."""
    ct = compute_dtype(probs.dtype)
    p, t = probs.astype(ct), targets.astype(ct)
    lo, hi = clip_bounds(eps, ct)
    pc = jnp.clip(p, lo, hi)
    return -(t * jnp.log(pc) + (1 - t) * jnp.log1p(-pc)), pc, (p > lo) & (p < hi), t


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _bce_op(probs, targets, eps):
    return jnp.mean(_bce_terms(probs, targets, eps)[0]).astype(probs.dtype)


def _bce_fwd(probs, targets, eps):
    terms, pc, inside, t = _bce_terms(probs, targets, eps)
    return jnp.mean(terms).astype(probs.dtype), (pc, inside, t)


def _bce_bwd(eps, res, g):
    pc, inside, t = res
    dtype = g.dtype  # the loss (hence its cotangent) has the inputs' dtype
    scale = g.astype(pc.dtype) / pc.size
    dp = jnp.where(inside, ((1 - t) / (1 - pc) - t / pc) * scale, jnp.zeros((), pc.dtype))
    dt = (jnp.log1p(-pc) - jnp.log(pc)) * scale
    return dp.astype(dtype), dt.astype(dtype)


defvjp(_bce_op, _bce_fwd, _bce_bwd)


def check_binary_cross_entropy_args(fn: str, probs, targets, eps):
    """The checks of :func:`binary_cross_entropy`; ``(probs, targets, eps)``."""
    eps = _checks.static_float(fn, "eps", eps, 0.0, 0.5, high_inclusive=False)
    return (*check_elementwise_args(fn, "probs", probs, "targets", targets), eps)


@has_twin
def binary_cross_entropy(probs, targets, eps: float = 1e-7):
    """Binary cross-entropy on probabilities, mean over all ``M`` elements (note 004).

    Forward: ``L = -(1/M) sum_i [t_i log p_i + (1 - t_i) log(1 - p_i)]`` with ``p``
    clipped to ``[lo, hi]`` against ``log(0)``: ``lo = max(eps, tiny)``, ``hi = min(1 -
    eps, 1 - epsneg)`` in the compute dtype, so both logs are finite for every ``p`` in
    every float dtype (:func:`clip_bounds`). float16/bfloat16 inputs are computed in
    float32 (``1 - 1e-7`` is 1 in half precision) and the loss is cast back.
    Backward: ``dL/dp = (1/M) [(1 - t)/(1 - p) - t/p]`` inside the clip range and 0
    outside it (the clip is flat there); note 004 omits the ``1/M``. ``dL/dt =
    (1/M) [log(1 - p) - log p]``. Residuals: the clipped ``p``, the in-range mask, ``t``
    (compute dtype). Prefer :func:`sigmoid_binary_cross_entropy` on logits.

    Args:
      probs: floating array of any shape, values in ``[0, 1]``, at least one element.
      targets: same shape, floating (promoted with ``probs``), values in ``[0, 1]``.
      eps: static Python float in ``[0, 0.5)``, finite.

    Returns:
      Scalar loss, of the promoted dtype.

    Raises:
      ValueError: shapes differ, an empty input, ``eps`` NaN or outside ``[0, 0.5)``.
      TypeError: non-floating inputs.
    """
    return _bce_op(*check_binary_cross_entropy_args("binary_cross_entropy", probs, targets, eps))


def sbce_terms(x, t):
    """Elementwise ``max(x, 0) - x t + log(1 + exp(-|x|))`` (shared with the focal loss)."""
    # max(x, 0) - x t written per sign, x (1 - t) or -x t: at x = +inf and t < 1 that is
    # +inf (optax's value), where inf - inf * t would be NaN.
    zero = jnp.zeros((), x.dtype)
    linear = jnp.where(x > zero, x * (1 - t), -x * t)
    return linear + jnp.log1p(jnp.exp(-jnp.abs(x)))


def _sbce(x, t):
    return jnp.mean(sbce_terms(x, t))


@jax.custom_vjp
def _sbce_op(logits, targets):
    return _sbce(logits, targets)


def _sbce_fwd(logits, targets):
    return _sbce(logits, targets), (logits, targets)


def _sbce_bwd(res, g):
    x, t = res
    scale = g / x.size
    return (jax.lax.logistic(x) - t) * scale, -x * scale


defvjp(_sbce_op, _sbce_fwd, _sbce_bwd)


@has_twin
def sigmoid_binary_cross_entropy(logits, targets):
    """Sigmoid followed by binary cross-entropy, in the stable form, mean over elements.

    Forward: ``L = (1/M) sum_i [max(x_i, 0) - x_i t_i + log(1 + exp(-|x_i|))]``, which
    equals ``BCE(sigmoid(x), t)`` without overflow or ``log(0)`` at any ``x``. The first
    two terms are computed as ``x (1 - t)`` for ``x > 0`` and ``-x t`` otherwise, so an
    infinite logit gives optax's value: ``+inf`` for ``x = +inf, t < 1`` and ``x = -inf,
    t > 0``, NaN for ``x = +inf, t = 1`` and ``x = -inf, t = 0`` (``inf * 0``).
    Backward: ``dL/dx = (sigmoid(x) - t) / M`` and ``dL/dt = -x / M``.
    Residuals: ``logits`` and ``targets`` (both inputs).

    Args:
      logits: floating array of any shape, at least one element.
      targets: same shape, floating (promoted with ``logits``), values in ``[0, 1]``.

    Returns:
      Scalar loss, of the promoted dtype.
    """
    return _sbce_op(*check_elementwise_args("sigmoid_binary_cross_entropy", "logits", logits,
                                            "targets", targets))


# -------------------------------------------------------------------------- focal loss
def focal_parts(x, t, gamma):
    """``(ce, log_u, w, some)``: the sigmoid cross-entropy, ``log(1 - p_t)`` with ``1 - p_t
    = (1 - t) sigmoid(x) + t sigmoid(-x)`` (in log space, as optax), ``w = (1 - p_t)^gamma``
    (``0^0 = 1``) and ``some = 1 - p_t > 0`` (false only at an infinite logit). ``gamma``
    is a scalar array (a traced one too): the edge cases are ``jnp.where``, not a Python
    ``if``."""
    log_p, log_q = jax.nn.log_sigmoid(x), jax.nn.log_sigmoid(-x)
    log_u = logsumexp(jnp.stack([log_p, log_q], axis=-1), axis=-1,
                      b=jnp.stack([1 - t, t], axis=-1))
    # where u = 0 (an infinite logit), 0^gamma: 1 for gamma = 0, else 0; the exponent
    # there is 0 * 0, not 0 * -inf (a NaN in d/dgamma of a twice-differentiated rule)
    some = log_u > -jnp.inf
    zero, one = jnp.zeros((), x.dtype), jnp.ones((), x.dtype)
    w = jnp.where(some, jnp.exp(gamma * jnp.where(some, log_u, zero)),
                  jnp.where(gamma == 0, one, zero))
    return sbce_terms(x, t), log_u, w, some


def _alpha_t(t, alpha):
    """``a_t = alpha t + (1 - alpha)(1 - t)``; 1 for ``alpha=None`` (no weighting)."""
    return jnp.ones((), t.dtype) if alpha is None else alpha * t + (1 - alpha) * (1 - t)


def _focal_terms(x, t, alpha, gamma):
    ce, _, w, _ = focal_parts(x, t, gamma)
    terms = ce * w
    return terms if alpha is None else _alpha_t(t, alpha) * terms


@jax.custom_vjp
def _focal(logits, labels, alpha, gamma):
    return jnp.mean(_focal_terms(logits, labels, alpha, gamma))


def _focal_fwd(logits, labels, alpha, gamma):
    return jnp.mean(_focal_terms(logits, labels, alpha, gamma)), (logits, labels, alpha, gamma)


def _focal_bwd(res, g):
    x, t, alpha, gamma = res
    ce, log_u, w, some = focal_parts(x, t, gamma)
    s = jax.lax.logistic(x)
    zero = jnp.zeros((), x.dtype)
    focal = gamma != 0                   # the focal terms below are absent for gamma = 0
    # s (1 - s) / (1 - p_t) <= 1 and (1 - p_t)^(gamma - 1), both from logs
    r = jnp.where(some, jnp.exp(jax.nn.log_sigmoid(x) + jax.nn.log_sigmoid(-x) - log_u), zero)
    # 0^(gamma - 1) at u = 0: 0 for gamma > 1, 1 for gamma = 1, inf for gamma < 1
    pow0 = jnp.where(gamma > 1, zero, jnp.where(gamma == 1, jnp.ones((), x.dtype),
                                                jnp.asarray(jnp.inf, x.dtype)))
    v = jnp.where(some, jnp.exp((gamma - 1) * log_u), pow0)
    dx = (s - t) * w + jnp.where(focal, ce * gamma * w * (1 - 2 * t) * r, zero)
    dt = -x * w + jnp.where(focal, ce * gamma * v * (1 - 2 * s), zero)
    a_t = _alpha_t(t, alpha)
    # dl/dgamma = a_t ce w log u, with w log u = 0 where w = 0 (not 0 * -inf)
    w_log_u = jnp.where(w == 0, zero, w * log_u)
    scale = g / x.size
    dgamma = jnp.sum(a_t * ce * w_log_u) * scale
    if alpha is None:
        return dx * scale, dt * scale, None, dgamma
    dalpha = jnp.sum((2 * t - 1) * ce * w) * scale
    dx, dt = a_t * dx, a_t * dt + (2 * alpha - 1) * ce * w
    return dx * scale, dt * scale, dalpha, dgamma


defvjp(_focal, _focal_fwd, _focal_bwd)


def check_sigmoid_focal_loss_args(fn: str, logits, labels, alpha, gamma):
    """The checks of :func:`sigmoid_focal_loss`; ``(logits, labels, alpha, gamma)`` with
    ``alpha`` ``None`` or, as ``gamma``, a scalar array of the promoted dtype (a Python
    float or a traced scalar; the interval checked when concrete)."""
    if alpha is not None:
        _checks.check_hyperparameter(fn, "alpha", alpha, 0.0, 1.0)
    _checks.check_hyperparameter(fn, "gamma", gamma, 0.0, None)
    logits, labels = check_elementwise_args(fn, "logits", logits, "labels", labels)
    if alpha is not None:
        alpha = jnp.asarray(alpha, logits.dtype)
    return logits, labels, alpha, jnp.asarray(gamma, logits.dtype)


@has_twin
def sigmoid_focal_loss(logits, labels, alpha: float | None = None, gamma: float = 2.0):
    """Sigmoid focal loss (Lin et al. 2017, RetinaNet), mean over all ``M`` elements.

    Forward, per element with ``s = sigmoid(x)``: ``ce = max(x, 0) - x t + log(1 +
    exp(-|x|))`` (:func:`sigmoid_binary_cross_entropy`'s terms), ``u = 1 - p_t = (1 - t) s
    + t (1 - s)`` computed as ``log u = logsumexp([log s, log(1 - s)], b=[1 - t, t])``,
    ``w = u^gamma`` and ``l = a_t ce w`` with ``a_t = alpha t + (1 - alpha)(1 - t)`` (``a_t
    = 1`` for ``alpha=None``); ``L = mean(l)``: ``optax.sigmoid_focal_loss(x, t,
    alpha=alpha, gamma=gamma).mean()``. ``gamma = 0`` is the (alpha-weighted) sigmoid
    cross-entropy.
    Backward: ``dl/dx = a_t [(s - t) w + ce gamma w (1 - 2t) r]`` with ``r = s(1 - s)/u``
    (``<= 1``, from logs, so no overflow at large ``|x|``), ``dl/dt = a_t [-x w + ce gamma
    u^(gamma-1) (1 - 2s)] + (2 alpha - 1) ce w`` (last term only with ``alpha``),
    ``dl/dalpha = (2t - 1) ce w`` and ``dl/dgamma = a_t ce w log u`` (``w log u = 0``
    where ``w = 0``, not ``0 * -inf``); each divided by ``M`` (``dL/dalpha`` and
    ``dL/dgamma`` summed over the elements). For ``gamma = 0`` the focal terms (those with
    the factor ``gamma``) are 0, not ``0 * inf`` at an infinite logit. At an infinite
    logit where ``u = 0`` the focal term of ``dl/dx`` is 0 and ``u^(gamma-1)`` is
    ``0^(gamma-1)`` (``inf`` for ``gamma < 1``). These edge cases are ``jnp.where`` on the
    ``gamma`` operand, so a traced ``gamma`` gives the values and gradients of the Python
    float. For ``gamma < 1`` ``u^(gamma-1)`` overflows where ``u < exp(-log(max)/(1 -
    gamma))`` (float32: ``|x|`` above about ``88/(1 - gamma)``), making the labels'
    gradient inf or NaN there.
    Residuals: ``logits``, ``labels`` and the scalars ``alpha``, ``gamma`` (the rest is
    recomputed).

    Args:
      logits: floating array of any shape, at least one element.
      labels: same shape, floating (promoted with ``logits``), values in ``[0, 1]``
        (soft labels allowed; optax also casts integer labels, funcnet refuses them).
      alpha: ``None`` (a static choice: no weighting, ``a_t = 1``), or the weight of the
        positives: a Python float or a traced scalar (a ``jit`` argument, a ``jax.vmap``
        sweep) in ``[0, 1]`` (checked when concrete); differentiable.
      gamma: the focusing parameter, a Python float or a traced scalar (a ``jit``
        argument, a ``jax.vmap`` sweep) ``>= 0`` (checked when concrete);
        differentiable.

    Returns:
      Scalar loss, of the promoted dtype.

    Raises:
      ValueError: shapes differ, an empty input, ``alpha`` outside ``[0, 1]``, ``gamma <
        0``, either NaN or infinite (when concrete), ``alpha``/``gamma`` an array of
        shape other than ``()``.
      TypeError: non-floating inputs, ``alpha``/``gamma`` not a number or a real
        numeric scalar array (``gamma=None``, a bool array).

    References:
      Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection", ICCV 2017.
    """
    return _focal(*check_sigmoid_focal_loss_args("sigmoid_focal_loss", logits, labels, alpha,
                                                 gamma))
