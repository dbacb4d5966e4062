"""Plain-JAX twins of the optax-style losses (Huber, log-cosh, cosine, KL, sigmoid focal,
CTC, PolyLoss, NT-Xent, hinge, perceptron, triplet margin, generalized KL, the
multiclass margins).

No ``custom_vjp``: each twin calls its op's check function and writes the forward formula
for ``jax.grad`` to differentiate, independently of the op's helpers where the op's
backward is derived from them (Huber by pieces, KL by a safe log, log-cosh, cosine and
focal as optax writes them).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from funcnet.ops._labels import mask_log, num_rows
from funcnet.ops.losses_contrastive import check_ntxent_args, pairs
from funcnet.ops.losses_divergence import LOG_TARGETS, check_kl_args, safe_log
from funcnet.ops.losses_elementwise import (check_elementwise_args,
                                            check_sigmoid_focal_loss_args)
from funcnet.ops.losses_margin import check_crammer_singer_args, check_triplet_args
from funcnet.ops.losses_poly import check_poly_args
from funcnet.ops.losses_sequence import check_ctc_args
from funcnet.ops.losses_regression import (check_cosine_args, check_error_args,
                                           check_huber_args)


def squared_error(predictions, targets=None):
    p, t = check_error_args("squared_error", predictions, targets)
    return jnp.mean((p - t) ** 2)


def l2_loss(predictions, targets=None):
    p, t = check_error_args("l2_loss", predictions, targets)
    return jnp.mean(0.5 * (p - t) ** 2)


def huber_loss(predictions, targets=None, delta: float = 1.0):
    p, t, delta = check_huber_args("huber_loss", predictions, targets, delta)
    x = p - t
    inside = jnp.abs(x) <= delta
    x_in = jnp.where(inside, x, jnp.zeros((), x.dtype))   # no 0 * inf in the unused branch
    d_out = jnp.where(inside, jnp.zeros((), x.dtype), delta)  # nor inf - inf (delta = inf)
    return jnp.mean(jnp.where(inside, 0.5 * x_in * x_in, d_out * (jnp.abs(x) - 0.5 * d_out)))


def log_cosh(predictions, targets=None):
    p, t = check_error_args("log_cosh", predictions, targets)
    x = p - t
    return jnp.mean(jnp.logaddexp(x, -x) - math.log(2.0))


def _cosine(fn, predictions, targets, epsilon, axis, where):
    a, b, epsilon, empty = check_cosine_args(fn, predictions, targets, epsilon, axis, where)

    def unit(a):   # a / sqrt(max(|a|^2, eps)); the where: derivative 0 at or below eps
        a2 = jnp.sum(a * a, axis=-1, keepdims=True)
        return a / jnp.sqrt(jnp.where(a2 > epsilon, a2, jnp.asarray(epsilon, a2.dtype)))
    return jnp.sum(unit(a) * unit(b)) / num_rows(a) - empty   # empty: rows masked out


def cosine_similarity(predictions, targets, epsilon: float = 0.0, axis=-1, where=None):
    return _cosine("cosine_similarity", predictions, targets, epsilon, axis, where)


def cosine_distance(predictions, targets, epsilon: float = 0.0, axis=-1, where=None):
    return 1.0 - _cosine("cosine_distance", predictions, targets, epsilon, axis, where)


def kl_divergence(log_predictions, targets, axis=-1, where=None):
    lp, t = check_kl_args("kl_divergence", log_predictions, targets, axis=axis, where=where)
    # the where inside the product: its unused branch (log 0 - lp) then gets no 0 * inf
    gap = jnp.where(t > 0, safe_log(t) - lp, jnp.zeros((), t.dtype))
    return jnp.sum(t * gap) / num_rows(t)


def generalized_kl_divergence(log_predictions, targets, axis=-1, where=None):
    lp, t = check_kl_args("generalized_kl_divergence", log_predictions, targets, axis=axis,
                          where=where, log_prediction_fill=-jnp.inf)
    gap = jnp.where(t > 0, safe_log(t) - lp, jnp.zeros((), t.dtype))
    return (jnp.sum(t * gap) + jnp.sum(jnp.exp(lp) - t)) / num_rows(t)


def kl_divergence_with_log_targets(log_predictions, log_targets, axis=-1, where=None):
    lp, lt = check_kl_args("kl_divergence_with_log_targets", log_predictions, log_targets,
                           axis=axis, where=where, **LOG_TARGETS)
    gap = jnp.where(jnp.isneginf(lt), jnp.zeros((), lt.dtype), lt - lp)
    return jnp.sum(jnp.exp(lt) * gap) / num_rows(lt)


def sigmoid_focal_loss(logits, labels, alpha: float | None = None, gamma: float = 2.0):
    x, t, alpha, gamma = check_sigmoid_focal_loss_args("sigmoid_focal_loss", logits, labels,
                                                       alpha, gamma)
    log_p, log_q = jax.nn.log_sigmoid(x), jax.nn.log_sigmoid(-x)
    ce = -(t * log_p + (1 - t) * log_q)
    # log u = log((1 - t) s + t (1 - s)), shifted by the larger log of a term with a
    # nonzero weight (as logsumexp(..., b=)), but keeping the zero-weight term's
    # derivative in t (logsumexp drops it: a wrong dL/dt at hard labels); its exponent is
    # capped at log(max) - 1, where it only stands for an astronomically large derivative
    a, b = jnp.stack([log_p, log_q], axis=-1), jnp.stack([1 - t, t], axis=-1)
    m = jax.lax.stop_gradient(jnp.max(jnp.where(b != 0, a, -jnp.inf), axis=-1, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, jnp.zeros((), m.dtype))
    cap = math.log(jnp.finfo(x.dtype).max) - 1.0
    log_u = m[..., 0] + jnp.log(jnp.sum(b * jnp.exp(jnp.minimum(a - m, cap)), axis=-1))
    # u^gamma, branch-free for a traced gamma: at u = 0, 0^gamma (1 for gamma = 0, else 0)
    # with no exp(0 * -inf), and d/dgamma = w log u (also at gamma = 0) where u > 0
    zero, one = jnp.zeros((), x.dtype), jnp.ones((), x.dtype)
    some = log_u > -jnp.inf
    w = jnp.where(some, jnp.exp(gamma * jnp.where(some, log_u, zero)),
                  jnp.where(gamma == 0, one, zero))
    loss = ce * w
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return jnp.mean(loss)


def ctc_loss(logits, logit_paddings, labels, label_paddings, *, blank_id: int = 0,
             log_epsilon: float = -1e5):
    """Twin of :func:`funcnet.ops.ctc_loss`: the forward recursion only (one
    ``logsumexp`` over the three predecessor states per step), for ``jax.grad``."""
    logits, pad, labels, lengths, blank_id, neg = check_ctc_args(
        "ctc_loss", logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon)
    b, n = labels.shape
    s_len = 2 * n + 1
    s = jnp.arange(s_len)[None, :]
    ext = jnp.where(s % 2 == 1, jnp.pad(labels, ((0, 0), (0, n + 1)))[:, (s[0] - 1) // 2],
                    blank_id)
    prev2 = jnp.pad(ext, ((0, 0), (2, 0)), constant_values=-1)[:, :s_len]
    can_skip = (s % 2 == 1) & (ext != prev2) & (s >= 2)
    logp = jax.nn.log_softmax(logits, axis=-1)
    floor = jnp.full((b, 2), neg, logits.dtype)

    def step(a, x):
        lp, padded = x                                   # (B, K), (B,)
        shifted = jnp.concatenate([floor, a], axis=1)    # a(s-2), a(s-1) by offset
        options = jnp.stack([a, shifted[:, 1:s_len + 1],
                             jnp.where(can_skip, shifted[:, :s_len], neg)])
        new = logsumexp(options, axis=0) + jnp.take_along_axis(lp, ext, axis=1)
        return jnp.where(padded[:, None], a, new), None

    start = jnp.full((b, s_len), neg, logits.dtype).at[:, 0].set(0)
    last, _ = jax.lax.scan(step, start, (jnp.moveaxis(logp, 1, 0), pad.T))
    final = (s == 2 * lengths[:, None]) | (s == 2 * lengths[:, None] - 1)
    return -jnp.mean(logsumexp(jnp.where(final, last, neg), axis=1))


def poly_loss_cross_entropy(logits, labels, *, epsilon: float = 2.0, axis=-1, where=None):
    x, t, eps = check_poly_args("poly_loss_cross_entropy", logits, labels, epsilon, axis,
                                where)
    logp = x - logsumexp(x, axis=-1, keepdims=True)
    one_minus_pt = jnp.sum(t * (1 - jnp.exp(logp)))
    return (-jnp.sum(t * mask_log(t, logp)) + eps * one_minus_pt) / num_rows(t)


def ntxent(embeddings, labels, temperature: float = 0.07):
    e, labels, tau, eps = check_ntxent_args("ntxent", embeddings, labels, temperature)
    a2 = jnp.sum(e * e, axis=-1, keepdims=True)
    u = e / jnp.sqrt(jnp.where(a2 > eps, a2, jnp.asarray(eps, a2.dtype)))
    s = u @ u.T / tau
    pos, neg = pairs(labels)
    has_neg = jnp.any(neg, axis=1, keepdims=True)   # else 0, with no NaN gradient
    lse = logsumexp(jnp.where(neg, s, jnp.where(has_neg, -jnp.inf, 0.0)), axis=1,
                    keepdims=True)
    terms = jnp.logaddexp(s, lse) - s                # -log(e^s / (e^s + sum_neg e^s))
    keep = pos & has_neg
    return jnp.sum(jnp.where(keep, terms, 0.0)) / jnp.sum(pos).astype(s.dtype)


def _margin(fn, scores, targets, margin):
    s, y = check_elementwise_args(fn, "predictor_outputs", scores, "targets", targets)
    z = margin - y * s
    # where, not maximum: 0 at the kink; ~(z <= 0), not z > 0: NaN stays NaN (optax's)
    return jnp.mean(jnp.where(~(z <= 0), z, 0.0))


def hinge_loss(predictor_outputs, targets):
    return _margin("hinge_loss", predictor_outputs, targets, 1.0)


def perceptron_loss(predictor_outputs, targets):
    return _margin("perceptron_loss", predictor_outputs, targets, 0.0)


def _crammer_singer(fn, scores, labels, margin):
    s, y = check_crammer_singer_args(fn, scores, labels)
    onehot = jax.nn.one_hot(y, s.shape[-1], dtype=s.dtype)
    return jnp.mean(jnp.max(s + margin * (1 - onehot), axis=-1) - jnp.sum(s * onehot, -1))


def multiclass_hinge_loss(scores, labels):
    return _crammer_singer("multiclass_hinge_loss", scores, labels, 1.0)


def multiclass_perceptron_loss(scores, labels):
    return _crammer_singer("multiclass_perceptron_loss", scores, labels, 0.0)


def triplet_margin_loss(anchors, positives, negatives, axis=-1, norm_degree: float = 2.0,
                        margin: float = 1.0, eps: float = 1e-6):
    a, pos, neg, p, margin, eps = check_triplet_args(
        "triplet_margin_loss", anchors, positives, negatives, axis, norm_degree, margin, eps)

    def dist(x, y):
        return jnp.power(jnp.sum(jnp.power(jnp.abs(x - y), p), axis=-1) + eps, 1.0 / p)
    z = dist(a, pos) - dist(a, neg) + margin
    return jnp.mean(jnp.where(~(z <= 0), z, 0.0))      # NaN stays NaN, as optax's
