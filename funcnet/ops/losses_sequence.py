"""Connectionist temporal classification (CTC) loss (Graves et al., 2006), optax's
``ctc_loss`` arguments, as a batch mean.

The labels ``y`` (length ``U``) are extended with blanks, ``l' = (_, y1, _, y2, ..., yU,
_)`` (``S = 2U + 1`` states). With ``e_t(s) = log softmax(logits_t)[l'(s)]``:

* forward: ``a_t(s) = e_t(s) + logsumexp(a_{t-1}(s), a_{t-1}(s-1), [a_{t-1}(s-2)])``,
  the skip ``s-2 -> s`` allowed into a label that differs from the previous label;
  ``a_{-1} = (0, log 0, ...)``; ``log p = logsumexp(a_{T-1}(S-1), a_{T-1}(S-2))``;
* backward: ``b_{T-1}(s) = 0`` on the two final states, ``b_{t-1}(s) = logsumexp(b_t(s)
  + e_t(s), b_t(s+1) + e_t(s+1), [b_t(s+2) + e_t(s+2)])``; the state posterior ``g_t(s) =
  exp(a_t(s) + b_t(s) - log p)`` and, per class, ``w_t(k) = sum_{s: l'(s) = k} g_t(s)``;
* ``dL/dlogits_t = softmax(logits_t) sum_k w_t(k) - w_t`` (``= softmax - w_t`` on a
  valid frame, 0 on a padded one).

A padded frame (``logit_paddings = 1``) leaves ``a`` and ``b`` unchanged; padded labels
(``label_paddings = 1``, on the right) shorten ``U``. ``log 0`` is ``log_epsilon``
(-1e5, as optax), so an impossible labelling (more frames needed than given) has a large
finite loss, and its gradient is not meaningful.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from funcnet import _checks
from funcnet.ops._mesh import defvjp
from funcnet.ops._mode import has_twin


def check_ctc_args(fn, logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon):
    """The checks of :func:`ctc_loss` (and its twin); returns ``(logits, pad (B, T) bool,
    labels int32, label lengths (B,), blank_id, log_epsilon)``."""
    _checks.check_float(fn, "logits", logits)
    _checks.check_rank(fn, "logits", logits, 3, "(B, T, K)")
    _checks.check_integer(fn, "labels", labels)
    _checks.check_rank(fn, "labels", labels, 2, "(B, N)")
    b, t, k = logits.shape
    if labels.shape[0] != b:
        raise ValueError(f"{fn}: labels has batch size {labels.shape[0]}, logits {b} "
                         f"(labels {labels.shape}, logits {logits.shape})")
    _checks.check_shape(fn, "logit_paddings", logit_paddings, (b, t), "(B, T) of logits")
    _checks.check_shape(fn, "label_paddings", label_paddings, labels.shape, "labels' shape")
    blank_id = _checks.static_int(fn, "blank_id", blank_id, minimum=0, maximum=k - 1)
    log_epsilon = _checks.static_float(fn, "log_epsilon", log_epsilon, None, 0.0,
                                       high_inclusive=False)
    pad = jnp.asarray(logit_paddings) > 0
    lengths = labels.shape[1] - jnp.sum(jnp.asarray(label_paddings) > 0, axis=1)
    return logits, pad, jnp.asarray(labels, jnp.int32), lengths, blank_id, log_epsilon


def extended_labels(labels, blank_id: int):
    """``(l', skip)``: the blank-extended labels ``(B, 2N + 1)`` and where the skip
    ``s - 2 -> s`` is allowed (a label state after a different label)."""
    b, n = labels.shape
    ext = jnp.full((b, 2 * n + 1), blank_id, jnp.int32).at[:, 1::2].set(labels)
    skip = jnp.zeros((b, 2 * n + 1), bool).at[:, 3::2].set(labels[:, 1:] != labels[:, :-1])
    return ext, skip


def _right(x, k, fill):
    """``x`` (B, S) moved ``k`` states right (``y[:, s] = x[:, s - k]``), ``fill`` first."""
    return jnp.concatenate([jnp.full(x.shape[:1] + (k,), fill, x.dtype), x[:, :-k]], axis=1)


def _left(x, k, fill):
    """``y[:, s] = x[:, s + k]``, ``fill`` last."""
    return jnp.concatenate([x[:, k:], jnp.full(x.shape[:1] + (k,), fill, x.dtype)], axis=1)


def _emissions(logits, ext):
    """``(log softmax (B, T, K), e (T, B, S))``: each state's log-probability per frame."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    e = jnp.take_along_axis(logp, jnp.broadcast_to(ext[:, None, :], logp.shape[:2]
                                                   + ext.shape[1:]), axis=2)
    return logp, jnp.moveaxis(e, 1, 0)


def _alphas(e, pad, skip, neg):
    """``a_t`` for every frame, (T, B, S) (``pad`` (B, T)); a padded frame keeps ``a_{t-1}``."""
    init = jnp.full(e.shape[1:], neg, e.dtype).at[:, 0].set(0)

    def step(prev, x):
        et, padded = x
        a = jnp.logaddexp(prev, _right(prev, 1, neg))
        a = jnp.where(skip, jnp.logaddexp(a, _right(prev, 2, neg)), a) + et
        a = jnp.where(padded[:, None], prev, a)
        return a, a

    return lax.scan(step, init, (e, pad.T))[1]


def _ends(lengths, size):
    """(B, S) bool: the two final states ``2U`` and ``2U - 1`` (one for ``U = 0``)."""
    s = jnp.arange(size)[None, :]
    return (s == 2 * lengths[:, None]) | (s == 2 * lengths[:, None] - 1)


def _log_likelihood(alpha_last, lengths, neg):
    ends = _ends(lengths, alpha_last.shape[1])
    return jax.nn.logsumexp(jnp.where(ends, alpha_last, neg), axis=1)


def _betas(e, pad, skip, lengths, neg):
    """``b_t`` for every frame, (T, B, S) (``b_{T-1}`` = 0 on the final states)."""
    init = jnp.where(_ends(lengths, e.shape[2]), jnp.zeros((), e.dtype), neg)
    skip_from = _left(skip, 2, False)          # s -> s + 2 allowed

    def step(nxt, x):
        et, padded = x
        v = nxt + et
        b = jnp.logaddexp(v, _left(v, 1, neg))
        b = jnp.where(skip_from, jnp.logaddexp(b, _left(v, 2, neg)), b)
        return jnp.where(padded[:, None], nxt, b), nxt

    return lax.scan(step, init, (e, pad.T), reverse=True)[1]


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _ctc_loss(logits, pad, labels, lengths, blank_id, neg):
    # the forward rule's value (its residuals are dead code when not differentiated)
    return _ctc_loss_fwd(logits, pad, labels, lengths, blank_id, neg)[0]


def _ctc_loss_fwd(logits, pad, labels, lengths, blank_id, neg):
    ext, skip = extended_labels(labels, blank_id)
    logp, e = _emissions(logits, ext)
    alphas = _alphas(e, pad, skip, neg)
    loglik = _log_likelihood(alphas[-1], lengths, neg)
    return -jnp.mean(loglik), (logp, e, alphas, loglik, pad, labels, lengths)


def _ctc_loss_bwd(blank_id, neg, res, g):
    logp, e, alphas, loglik, pad, labels, lengths = res
    ext, skip = extended_labels(labels, blank_id)
    betas = _betas(e, pad, skip, lengths, neg)
    post = jnp.exp(alphas + betas - loglik[None, :, None])         # (T, B, S)
    post = jnp.where(pad.T[:, :, None], jnp.zeros((), post.dtype), post)
    onehot = jax.nn.one_hot(ext, logp.shape[-1], dtype=post.dtype)  # (B, S, K)
    w = jnp.einsum("tbs,bsk->btk", post, onehot)
    scale = g / logp.shape[0]
    dlogits = (jnp.exp(logp) * jnp.sum(w, axis=-1, keepdims=True) - w) * scale
    return dlogits, None, None, None


defvjp(_ctc_loss, _ctc_loss_fwd, _ctc_loss_bwd)


@has_twin
def ctc_loss(logits, logit_paddings, labels, label_paddings, *, blank_id: int = 0,
             log_epsilon: float = -1e5):
    """CTC loss (Graves et al., 2006), the mean over the ``B`` sequences of
    ``-log p(labels | logits)`` summed over every alignment (optax's ``ctc_loss``
    arguments; optax returns one value per sequence: compare with ``.mean()``).

    Formulas, forward and backward: the module docstring (``dL/dlogits = softmax - w``,
    ``w`` the posterior of each class per frame from the forward and backward
    variables); the backward pass runs the backward recursion once.

    Args:
      logits: ``(B, T, K)`` floating, ``K`` classes including the blank.
      logit_paddings: ``(B, T)``, 1 (or True) on padded frames, 0 elsewhere.
      labels: ``(B, N)`` integer labels in ``[0, K)``, none equal to ``blank_id``.
      label_paddings: ``(B, N)``, 1 on padded labels, which must be on the right.
      blank_id: the blank's class (static).
      log_epsilon: ``log 0`` (static, < 0; optax's -1e5).

    Returns:
      The scalar batch mean, in ``logits``' dtype.

    Raises:
      ValueError: wrong ranks, mismatched shapes or batch sizes, ``blank_id`` outside
        ``[0, K)``, ``log_epsilon >= 0``.
      TypeError: non-floating ``logits``, non-integer ``labels``.

    References:
      Graves, Fernandez, Gomez, Schmidhuber, "Connectionist Temporal Classification:
      Labelling Unsegmented Sequence Data with Recurrent Neural Networks", ICML 2006.
      See ``docs/formulas.md``.
    """
    logits, pad, labels, lengths, blank_id, neg = check_ctc_args(
        "ctc_loss", logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon)
    return _ctc_loss(logits, pad, labels, lengths, blank_id, np.asarray(neg, logits.dtype).item())
