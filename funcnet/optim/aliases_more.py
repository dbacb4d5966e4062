"""More named optimizers: Lion, AdaMax(W), AMSGrad, AdaBelief, RAdam, LAMB, LARS,
Adafactor, Adan, Yogi, AdaDelta, NovoGrad, signSGD, Signum and noisy SGD.

Each takes optax's arguments in optax's order with optax's defaults and builds optax's
chain of blocks, so its trajectory and its state are optax's (see :mod:`.aliases` for
the conventions: ``learning_rate`` is required, a number >= 0, a scalar array or a
schedule; errors carry the optimizer's name).
"""
from __future__ import annotations

import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.adaptive import scale_by_adam
from funcnet.optim.adaptive_extra import (
    scale_by_adadelta, scale_by_adan, scale_by_novograd, scale_by_yogi)
from funcnet.optim.adaptive_more import (
    scale_by_adamax, scale_by_amsgrad, scale_by_belief, scale_by_lion, scale_by_radam)
from funcnet.optim.aliases import _lr
from funcnet.optim.combine import chain, masked
from funcnet.optim.factorized import scale_by_factored_rms
from funcnet.optim.regularization import (
    add_decayed_weights, clip_by_block_rms, scale_by_param_block_rms, scale_by_trust_ratio)
from funcnet.optim.transforms import _scale, ema, scale_by_learning_rate, trace
from funcnet.optim.transforms_more import add_noise, scale_by_sign
from funcnet._describe import described


def _named(name, *blocks, learning_rate, decay=None):
    """``chain(*blocks, [add_decayed_weights(*decay)], scale_by_learning_rate(lr))``,
    built (and validated) under the optimizer's name."""
    with _checks.context(name):
        blocks = [b() for b in blocks]
        if decay is not None:
            blocks.append(add_decayed_weights(*decay))
        return chain(*blocks, _lr(learning_rate), name=name)


@described
def lion(learning_rate, b1=0.9, b2=0.99, mu_dtype=None, weight_decay=1e-3, mask=None):
    """Lion (EvoLved Sign Momentum), optax's ``lion``::

        W_t = W_{t-1} - lr * (sign(b1 m_{t-1} + (1 - b1) g_t) + wd * W_{t-1})
        m_t = b2 m_{t-1} + (1 - b2) g_t

    Every step has the same size per coordinate (``lr``): the paper uses a learning rate
    3-10x smaller than AdamW's and a weight decay 3-10x larger.

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule.
      b1, b2: in [0, 1) (optax's 0.9, 0.99).
      mu_dtype: dtype of the momentum (default: the parameters').
      weight_decay: >= 0 or a schedule (optax's 1e-3), decoupled as in AdamW.
      mask: which leaves to decay; see :func:`~funcnet.optim.add_decayed_weights`.

    Returns:
      ``chain(scale_by_lion(b1, b2, mu_dtype), add_decayed_weights(weight_decay, mask),
      scale_by_learning_rate(learning_rate))``.

    References:
      Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
      https://arxiv.org/abs/2302.06675.
    """
    return _named("lion", lambda: scale_by_lion(b1, b2, mu_dtype),
                  learning_rate=learning_rate, decay=(weight_decay, mask))


@described
def adamax(learning_rate, b1=0.9, b2=0.999, eps=1e-8):
    """AdaMax, Adam with the infinity norm, optax's ``adamax``::

        W_t = W_{t-1} - lr * (m_t / (1 - b1^t)) / u_t,  u_t = max(|g_t| + eps, b2 u_{t-1})

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule.
      b1, b2: in [0, 1).
      eps: >= 0, inside the maximum.

    Returns:
      ``chain(scale_by_adamax(b1, b2, eps), scale_by_learning_rate(learning_rate))``.

    References:
      Kingma & Ba, ICLR 2015, https://arxiv.org/abs/1412.6980 (Section 7.1).
    """
    return _named("adamax", lambda: scale_by_adamax(b1, b2, eps), learning_rate=learning_rate)


@described
def adamaxw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4, mask=None):
    """AdaMax with decoupled weight decay, optax's ``adamaxw``:
    ``W_t = W_{t-1} - lr * (adamax step + wd * W_{t-1})``.

    Args:
      learning_rate, b1, b2, eps: as in :func:`adamax`.
      weight_decay: >= 0 or a schedule (optax's 1e-4).
      mask: which leaves to decay; see :func:`~funcnet.optim.add_decayed_weights`.

    Returns:
      ``chain(scale_by_adamax(b1, b2, eps), add_decayed_weights(weight_decay, mask),
      scale_by_learning_rate(learning_rate))``.

    References:
      Kingma & Ba, ICLR 2015; Loshchilov & Hutter, "Decoupled Weight Decay
      Regularization", ICLR 2019, https://arxiv.org/abs/1711.05101.
    """
    return _named("adamaxw", lambda: scale_by_adamax(b1, b2, eps),
                  learning_rate=learning_rate, decay=(weight_decay, mask))


@described
def amsgrad(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, mu_dtype=None,
            bias_correction_mu=True, bias_correction_nu=True):
    """AMSGrad, Adam with a non-decreasing second moment, optax's ``amsgrad``::

        v_max_t = max(v_max_{t-1}, v_hat_t),  W_t = W_{t-1} - lr m_hat / (sqrt(v_max_t +
        eps_root) + eps)

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule.
      b1, b2, eps, eps_root, mu_dtype, bias_correction_mu, bias_correction_nu: see
        :func:`~funcnet.optim.scale_by_amsgrad`.

    Returns:
      ``chain(scale_by_amsgrad(...), scale_by_learning_rate(learning_rate))``.

    References:
      Reddi, Kale, Kumar, "On the Convergence of Adam and Beyond", ICLR 2018.
    """
    return _named("amsgrad", lambda: scale_by_amsgrad(
        b1, b2, eps, eps_root, mu_dtype, bias_correction_mu, bias_correction_nu),
        learning_rate=learning_rate)


@described
def adabelief(learning_rate, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16, *,
              nesterov=False):
    """AdaBelief, optax's ``adabelief``: Adam with the variance of the gradient around
    its moving average, ``s_t = b2 s_{t-1} + (1 - b2) |g_t - m_t|^2 + eps_root``, in
    place of ``v_t``; ``W_t = W_{t-1} - lr m_hat / (sqrt(s_hat) + eps)``.

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule.
      b1, b2, eps, eps_root, nesterov: see :func:`~funcnet.optim.scale_by_belief`
        (optax's ``eps = eps_root = 1e-16``).

    Returns:
      ``chain(scale_by_belief(...), scale_by_learning_rate(learning_rate))``.

    References:
      Zhuang et al., NeurIPS 2020, https://arxiv.org/abs/2010.07468.
    """
    return _named("adabelief", lambda: scale_by_belief(b1, b2, eps, eps_root,
                                                       nesterov=nesterov),
                  learning_rate=learning_rate)


@described
def radam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, threshold=5.0, *,
          nesterov=False):
    """Rectified Adam, optax's ``radam``: SGD with (bias-corrected) momentum while the
    variance of the adaptive step is intractable (``rho_t < threshold``), then Adam's step
    times the rectification ``r_t``; see :func:`~funcnet.optim.scale_by_radam`.

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule.
      b1, b2, eps, eps_root, threshold, nesterov: see
        :func:`~funcnet.optim.scale_by_radam` (``threshold`` >= 4 here).

    Returns:
      ``chain(scale_by_radam(...), scale_by_learning_rate(learning_rate))``.

    References:
      Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020,
      https://arxiv.org/abs/1908.03265.
    """
    return _named("radam", lambda: scale_by_radam(b1, b2, eps, eps_root, threshold,
                                                  nesterov=nesterov),
                  learning_rate=learning_rate)


@described
def lamb(learning_rate, b1=0.9, b2=0.999, eps=1e-6, eps_root=0.0, weight_decay=0.0,
         mask=None):
    """LAMB, layer-wise adaptive moments, optax's ``lamb``::

        a = m_hat / (sqrt(v_hat + eps_root) + eps) + wd * W      (Adam's step, decayed)
        W_t = W_{t-1} - lr * (||W_{t-1}|| / ||a||) * a            (per leaf)

    (the ratio is 1 where either norm is 0).

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule.
      b1, b2: in [0, 1).
      eps: >= 0 (optax's 1e-6).
      eps_root: >= 0.
      weight_decay: >= 0 or a schedule (optax's 0).
      mask: which leaves to decay; see :func:`~funcnet.optim.add_decayed_weights`.

    Returns:
      ``chain(scale_by_adam(b1, b2, eps, eps_root), add_decayed_weights(weight_decay,
      mask), scale_by_trust_ratio(), scale_by_learning_rate(learning_rate))``.

    References:
      You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
      minutes", ICLR 2020, https://arxiv.org/abs/1904.00962 (Algorithm 2).
    """
    with _checks.context("lamb"):
        return chain(scale_by_adam(b1, b2, eps, eps_root),
                     add_decayed_weights(weight_decay, mask), scale_by_trust_ratio(),
                     _lr(learning_rate), name="lamb")


@described
def lars(learning_rate, weight_decay=0.0, weight_decay_mask=True, trust_coefficient=0.001,
         eps=0.0, trust_ratio_mask=True, momentum=0.9, nesterov=False):
    """LARS, layer-wise adaptive rate scaling with momentum, optax's ``lars``::

        a = g_t + wd * W_{t-1}                                  (on weight_decay_mask)
        a <- trust_coefficient * ||W_{t-1}|| / (||a|| + eps) * a  (per leaf, on
                                                                   trust_ratio_mask)
        t_t = momentum t_{t-1} - lr a,   W_t = W_{t-1} + t_t   (nesterov: momentum t_t - lr a)

    The momentum acts on ``-lr * a`` (after the learning rate), as optax's chain.

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule.
      weight_decay: >= 0 or a schedule (optax's 0).
      weight_decay_mask: ``True`` (every leaf, optax's default), a tree of bools (or a
        prefix) or a function ``params -> such a tree``.
      trust_coefficient: >= 0 (optax's 0.001).
      eps: >= 0.
      trust_ratio_mask: the leaves that get the trust ratio, as ``weight_decay_mask``
        (optax's ``True``; e.g. exclude biases and norms' scales).
      momentum: in [0, 1] (optax's 0.9).
      nesterov: Nesterov momentum.

    Returns:
      ``chain(add_decayed_weights(weight_decay, weight_decay_mask),
      masked(scale_by_trust_ratio(trust_coefficient=..., eps=...), trust_ratio_mask),
      scale_by_learning_rate(learning_rate), trace(momentum, nesterov))``.

    References:
      You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks", 2017,
      https://arxiv.org/abs/1708.03888 (Algorithm 1).
    """
    with _checks.context("lars"):
        return chain(add_decayed_weights(weight_decay, mask=weight_decay_mask),
                     masked(scale_by_trust_ratio(trust_coefficient=trust_coefficient,
                                                 eps=eps), trust_ratio_mask),
                     _lr(learning_rate), trace(momentum, nesterov), name="lars")


@described
def adafactor(learning_rate=None, min_dim_size_to_factor=128, decay_rate=0.8,
              decay_offset=0, multiply_by_parameter_scale=True, clipping_threshold=1.0,
              momentum=None, dtype_momentum=jnp.float32, weight_decay_rate=None,
              eps=1e-30, factored=True, weight_decay_mask=None):
    """Adafactor (Shazeer & Stern, 2018), optax's ``adafactor`` (T5's optimizer)::

        u = g / sqrt(V_hat)          V_hat: factored second moment (scale_by_factored_rms),
                                     decay 1 - (t+1)^(-decay_rate)
        u <- u / max(1, RMS(u) / clipping_threshold)      (per leaf; if not None)
        u <- lr * u                                       (if learning_rate is not None)
        u <- u * max(RMS(W), 1e-3)                        (if multiply_by_parameter_scale)
        u <- momentum-EMA of u, not debiased              (if momentum is not None)
        u <- u + weight_decay_rate * W                    (if not None; on the mask)
        W_t = W_{t-1} - u

    Without ``learning_rate`` (optax's default) the step is relative to the parameters'
    RMS only (the paper's relative step size with a constant ``rho``).

    Args:
      learning_rate: ``None`` (no scaling) or a number >= 0, a scalar array or a schedule.
      min_dim_size_to_factor: factor a leaf only when its two largest axes are at least
        this long (optax's 128).
      decay_rate: the second moment's decay exponent (optax's 0.8).
      decay_offset: step offset of that decay schedule (for fine-tuning).
      multiply_by_parameter_scale: multiply by the parameters' RMS (at least 1e-3).
      clipping_threshold: ``None`` or > 0, the largest RMS of a leaf's update.
      momentum: ``None`` or in [0, 1): an EMA of the updates (without debiasing).
      dtype_momentum: dtype of that EMA (optax's float32).
      weight_decay_rate: ``None`` or >= 0 or a schedule, added after the scaling (not
        multiplied by the learning rate).
      eps: >= 0, added to ``|g|^2`` (optax's 1e-30).
      factored: use the factored estimate for leaves of rank >= 2.
      weight_decay_mask: which leaves to decay; see
        :func:`~funcnet.optim.add_decayed_weights`.

    Returns:
      optax's chain: ``chain(scale_by_factored_rms(...), [clip_by_block_rms],
      [scale_by_learning_rate(lr, flip_sign=False)], [scale_by_param_block_rms()],
      [ema(momentum, debias=False, accumulator_dtype=dtype_momentum)],
      [add_decayed_weights(weight_decay_rate, weight_decay_mask)], scale(-1))``.

    References:
      Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
      ICML 2018, https://arxiv.org/abs/1804.04235.
    """
    name = "adafactor"
    scaled = _checks.static_bool(name, "multiply_by_parameter_scale",
                                 multiply_by_parameter_scale)
    with _checks.context(name):
        blocks = [scale_by_factored_rms(factored, decay_rate, decay_offset,
                                        min_dim_size_to_factor, eps)]
        if clipping_threshold is not None:
            blocks.append(clip_by_block_rms(clipping_threshold))
        if learning_rate is not None:
            blocks.append(scale_by_learning_rate(learning_rate, flip_sign=False))
        if scaled:
            blocks.append(scale_by_param_block_rms())
        if momentum is not None:
            blocks.append(ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
        if weight_decay_rate is not None:
            blocks.append(add_decayed_weights(weight_decay_rate, mask=weight_decay_mask))
        return chain(*blocks, _scale(-1.0), name=name)


@described
def adan(learning_rate, b1=0.98, b2=0.92, b3=0.99, eps=1e-8, eps_root=1e-8, weight_decay=0.0,
         mask=None):
    """Adan (adaptive Nesterov momentum), optax's ``adan``:
    ``W_t = W_{t-1} - lr * (scale_by_adan(g)_t + wd * W_{t-1})``; see
    :func:`~funcnet.optim.scale_by_adan`.

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule.
      b1, b2, b3, eps, eps_root: see :func:`~funcnet.optim.scale_by_adan` (optax's
        ``eps_root`` 1e-8 here).
      weight_decay: >= 0 or a schedule, decoupled.
      mask: which leaves to decay; see :func:`~funcnet.optim.add_decayed_weights`.

    Returns:
      ``chain(scale_by_adan(...), add_decayed_weights(weight_decay, mask),
      scale_by_learning_rate(learning_rate))``.

    References:
      Xie et al., 2022, https://arxiv.org/abs/2208.06677.
    """
    return _named("adan", lambda: scale_by_adan(b1, b2, b3, eps, eps_root),
                  learning_rate=learning_rate, decay=(weight_decay, mask))


@described
def yogi(learning_rate, b1=0.9, b2=0.999, eps=1e-3):
    """Yogi, optax's ``yogi``: ``chain(scale_by_yogi(b1, b2, eps),
    scale_by_learning_rate(learning_rate))``; see :func:`~funcnet.optim.scale_by_yogi`.

    References:
      Zaheer et al., "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018.
    """
    return _named("yogi", lambda: scale_by_yogi(b1, b2, eps), learning_rate=learning_rate)


@described
def adadelta(learning_rate=None, rho=0.9, eps=1e-6, weight_decay=0.0, weight_decay_mask=None):
    """AdaDelta, optax's ``adadelta``: ``chain(add_decayed_weights(weight_decay,
    weight_decay_mask), scale_by_adadelta(rho, eps), scale_by_learning_rate(lr))``.

    ``learning_rate=None`` (the default, Zeiler's method without a learning rate) is a
    rate of 1 here: optax's ``None`` skips the learning-rate block and with it the sign
    flip, so ``optax.adadelta()`` ascends the loss.

    Args:
      learning_rate: ``None`` (1) or a number >= 0, a scalar array or a schedule.
      rho, eps: see :func:`~funcnet.optim.scale_by_adadelta`.
      weight_decay: >= 0 or a schedule, added to the gradient before the scaling.
      weight_decay_mask: which leaves to decay; see
        :func:`~funcnet.optim.add_decayed_weights`.

    References:
      Zeiler, 2012, https://arxiv.org/abs/1212.5701.
    """
    with _checks.context("adadelta"):
        return chain(add_decayed_weights(weight_decay, mask=weight_decay_mask),
                     scale_by_adadelta(rho, eps),
                     _lr(1.0 if learning_rate is None else learning_rate), name="adadelta")


@described
def novograd(learning_rate, b1=0.9, b2=0.25, eps=1e-6, eps_root=0.0, weight_decay=0.0):
    """NovoGrad, optax's ``novograd``: ``chain(scale_by_novograd(b1, b2, eps, eps_root,
    weight_decay), scale_by_learning_rate(learning_rate))``; see
    :func:`~funcnet.optim.scale_by_novograd` (optax's ``eps`` 1e-6 here).

    References:
      Ginsburg et al., 2019, https://arxiv.org/abs/1905.11286.
    """
    return _named("novograd", lambda: scale_by_novograd(b1, b2, eps, eps_root, weight_decay),
                  learning_rate=learning_rate)


@described
def sign_sgd(learning_rate):
    """signSGD (Bernstein et al., 2018), optax's ``sign_sgd``: ``W_t = W_{t-1} - lr *
    sign(g_t)``: ``chain(scale_by_sign(), scale_by_learning_rate(learning_rate))``.

    References:
      Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems", ICML
      2018, https://arxiv.org/abs/1802.04434.
    """
    return _named("sign_sgd", scale_by_sign, learning_rate=learning_rate)


@described
def signum(learning_rate, beta=0.9, accumulator_dtype=None):
    """Signum, optax's ``signum``: the sign of the momentum, ``m_t = beta m_{t-1} + (1 -
    beta) g_t``, ``W_t = W_{t-1} - lr * sign(m_t)``: ``chain(ema(beta, debias=False,
    accumulator_dtype), scale_by_sign(), scale_by_learning_rate(learning_rate))``.

    References:
      Bernstein et al., 2018, https://arxiv.org/abs/1802.04434.
    """
    return _named("signum", lambda: ema(beta, debias=False, accumulator_dtype=accumulator_dtype),
                  scale_by_sign, learning_rate=learning_rate)


@described
def noisy_sgd(learning_rate, eta=0.01, gamma=0.55, key=None, *, seed=None):
    """SGD with annealed gradient noise, optax's ``noisy_sgd``: ``W_t = W_{t-1} - lr *
    (g_t + N(0, eta / t^gamma))``: ``chain(add_noise(eta, gamma, key, seed=seed),
    scale_by_learning_rate(learning_rate))``; see :func:`~funcnet.optim.add_noise`.

    References:
      Neelakantan et al., 2015, https://arxiv.org/abs/1511.06807.
    """
    return _named("noisy_sgd", lambda: add_noise(eta, gamma, key, seed=seed),
                  learning_rate=learning_rate)
