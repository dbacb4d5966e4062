"""ACProp: AdaBelief's centred second moment, used one step late (``optax.contrib``'s
``acprop`` and ``scale_by_acprop``).

Names, signatures and defaults are optax 0.2.8's; the state is AdaBelief's
``ScaleByBeliefState`` (count, mu, nu), as in optax, and keeps its dtypes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet.optim.adaptive import keep_dtypes
from funcnet.optim.adaptive_more import ScaleByBeliefState, _check_betas
from funcnet.optim.aliases_more import _named
from funcnet.optim.base import (
    bias_correction, cast_like, check_nonnegative, check_state, moment, optimizer,
    promote_dtypes, safe_increment, split, zero_count, zeros_like)
from funcnet._describe import described

_map = jax.tree_util.tree_map


@described
def scale_by_acprop(b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16):
    """ACProp's direction (Zhuang et al., 2021), optax's
    ``optax.contrib.scale_by_acprop``: the gradient over the root of the *previous*
    steps' centred second moment::

        m_t = b1 m_{t-1} + (1 - b1) g_t
        s_t = b2 s_{t-1} + (1 - b2) |g_t - m_{t-1}|^2 + eps_root
        u_t = g_t / (sqrt(s_{t-1} / (1 - b2^(t-1))) + eps)     (u_1 = g_1 / (1 + eps))

    (optax's code: the prediction error uses the previous momentum ``m_{t-1}``).

    Args:
      b1, b2: decays in [0, 1).
      eps: >= 0, outside the square root.
      eps_root: >= 0, added to ``s`` at every step (non-zero to differentiate through).

    Returns:
      An ``Optimizer`` with state :class:`~funcnet.optim.ScaleByBeliefState`.

    References:
      Zhuang, Ding, Tang, Dvornek, Tatikonda, Duncan, "Momentum Centering and
      Asynchronous Update for Adaptive Gradient Methods", NeurIPS 2021,
      https://arxiv.org/abs/2110.05454.
    """
    fn = "scale_by_acprop"
    _check_betas(fn, b1, b2)
    check_nonnegative(fn, "eps", eps)
    check_nonnegative(fn, "eps_root", eps_root)

    def init(params):
        return ScaleByBeliefState(count=zero_count(), mu=zeros_like(params),
                                  nu=zeros_like(params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, ScaleByBeliefState, updates, "mu")
        count = safe_increment(state.count)
        initial = state.count == 0
        t = jnp.where(initial, count, state.count)

        def leaf(g, m, s):
            dt = promote_dtypes(g.dtype, m.dtype, s.dtype)
            err = g.astype(dt) - m.astype(dt)
            s_new = moment(b2, err, s, squared=True) + cast_like(eps_root, s)
            s_hat = jnp.where(initial, jnp.ones((), dt),
                              s.astype(dt) / bias_correction(b2, t, s).astype(dt))
            u = g.astype(dt) / (jnp.sqrt(s_hat) + cast_like(eps, s_hat))
            return u, moment(b1, g, m), s_new

        u, mu, nu = split(updates, _map(leaf, updates, state.mu, state.nu), 3)
        return u, state._replace(count=count, mu=keep_dtypes(mu, state.mu),
                                 nu=keep_dtypes(nu, state.nu))

    return optimizer(init, update)


@described
def acprop(learning_rate, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16, weight_decay=0.0,
           mask=None):
    """ACProp, optax's ``optax.contrib.acprop``: ``chain(scale_by_acprop(b1, b2, eps,
    eps_root), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``; see :func:`scale_by_acprop`.

    References:
      Zhuang et al., NeurIPS 2021, https://arxiv.org/abs/2110.05454.
    """
    return _named("acprop", lambda: scale_by_acprop(b1, b2, eps, eps_root),
                  learning_rate=learning_rate, decay=(weight_decay, mask))
