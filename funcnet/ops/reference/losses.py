"""Plain-JAX twins of the optax-style losses (Huber, log-cosh, cosine, KL, sigmoid focal).

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

from funcnet.ops._labels import num_rows
from funcnet.ops.losses_divergence import check_kl_args, safe_log
from funcnet.ops.losses_elementwise import check_sigmoid_focal_loss_args
from funcnet.ops.losses_regression import (check_cosine_args, check_huber_args,
                                           check_log_cosh_args)


def huber_loss(predictions, targets, delta: float = 1.0):
    p, t, delta = check_huber_args("huber_loss", predictions, targets, delta)
    x = p - t
    inside = jnp.abs(x) <= delta
    x_in = jnp.where(inside, x, jnp.zeros((), x.dtype))   # no 0 * inf in the unused branch
    return jnp.mean(jnp.where(inside, 0.5 * x_in * x_in, delta * (jnp.abs(x) - 0.5 * delta)))


def log_cosh(predictions, targets):
    p, t = check_log_cosh_args("log_cosh", predictions, targets)
    x = p - t
    return jnp.mean(jnp.logaddexp(x, -x) - math.log(2.0))


def _cosine(fn, predictions, targets, epsilon):
    a, b, epsilon = check_cosine_args(fn, predictions, targets, epsilon)

    def unit(a):   # a / sqrt(max(|a|^2, eps)); the where: derivative 0 at or below eps
        a2 = jnp.sum(a * a, axis=-1, keepdims=True)
        return a / jnp.sqrt(jnp.where(a2 > epsilon, a2, jnp.asarray(epsilon, a2.dtype)))
    return jnp.sum(unit(a) * unit(b)) / num_rows(a)


def cosine_similarity(predictions, targets, epsilon: float = 0.0):
    return _cosine("cosine_similarity", predictions, targets, epsilon)


def cosine_distance(predictions, targets, epsilon: float = 0.0):
    return 1.0 - _cosine("cosine_distance", predictions, targets, epsilon)


def kl_divergence(log_predictions, targets):
    lp, t = check_kl_args("kl_divergence", log_predictions, targets)
    # the where inside the product: its unused branch (log 0 - lp) then gets no 0 * inf
    gap = jnp.where(t > 0, safe_log(t) - lp, jnp.zeros((), t.dtype))
    return jnp.sum(t * gap) / num_rows(t)


def kl_divergence_with_log_targets(log_predictions, log_targets):
    lp, lt = check_kl_args("kl_divergence_with_log_targets", log_predictions, log_targets,
                           "log_targets")
    gap = jnp.where(jnp.isneginf(lt), jnp.zeros((), lt.dtype), lt - lp)
    return jnp.sum(jnp.exp(lt) * gap) / num_rows(lt)


def sigmoid_focal_loss(logits, labels, alpha: float | None = None, gamma: float = 2.0):
    x, t, alpha, gamma = check_sigmoid_focal_loss_args("sigmoid_focal_loss", logits, labels,
                                                       alpha, gamma)
    log_p, log_q = jax.nn.log_sigmoid(x), jax.nn.log_sigmoid(-x)
    ce = -(t * log_p + (1 - t) * log_q)
    log_u = logsumexp(jnp.stack([log_p, log_q], axis=-1), axis=-1,
                      b=jnp.stack([1 - t, t], axis=-1))
    loss = ce if gamma == 0 else ce * jnp.exp(gamma * log_u)
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return jnp.mean(loss)
