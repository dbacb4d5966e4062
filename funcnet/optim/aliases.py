"""The named optimizers: each one is a ``chain`` of blocks from ``transforms``.

Every ``learning_rate`` is a non-negative number, a scalar (possibly traced) JAX array,
or a schedule ``step -> lr`` evaluated at the number of updates done so far (0, 1, ...).
Defaults are those of the papers and of optax 0.2, so ``adam(lr)`` here and
``optax.adam(lr)`` give the same trajectory.
"""
from __future__ import annotations

from funcnet.optim.base import (
    Optimizer, chain, check_learning_rate, check_nonnegative, check_unit_interval)
from funcnet.optim.regularization import add_decayed_weights
from funcnet.optim.transforms import (
    scale_by_adagrad, scale_by_adam, scale_by_learning_rate, scale_by_momentum,
    scale_by_rms)


def sgd(learning_rate) -> Optimizer:
    """Plain (stochastic) gradient descent: ``W <- W - lr * dL/dW``.

    Args:
      learning_rate: a number, a scalar array or a schedule.

    Returns:
      An ``Optimizer``.

    Example:
      >>> import jax.numpy as jnp
      >>> from funcnet import optim
      >>> opt = optim.sgd(0.1)
      >>> params = {"w": jnp.array([1.0, 2.0])}
      >>> updates, state = opt.update({"w": jnp.array([1.0, -1.0])}, opt.init(params), params)
      >>> print(optim.apply_updates(params, updates)["w"])
      [0.9 2.1]

    References:
      Robbins & Monro, "A Stochastic Approximation Method", 1951. Notes 001 (vanilla
      gradient descent), 003 (SGD), 004 (gradient descent).
    """
    check_learning_rate("sgd", learning_rate)
    return chain(scale_by_learning_rate(learning_rate), name="sgd")


def momentum(learning_rate, beta=0.9, *, form: str = "classic",
             nesterov: bool = False) -> Optimizer:
    """SGD with momentum, in either of the two forms of the notes.

    ``form="classic"`` (note 003, = ``optax.sgd(lr, momentum=beta)``)::

        v_t = beta v_{t-1} - lr g_t,   W_t = W_{t-1} + v_t

    ``form="ema"`` (note 004, moving average)::

        v_t = beta v_{t-1} + (1 - beta) g_t,   W_t = W_{t-1} - lr v_t

    With ``nesterov=True`` the step uses the look-ahead ``beta v_t + g_t`` (classic:
    ``W_t = W_{t-1} + beta v_t - lr g_t``) or ``beta v_t + (1 - beta) g_t`` (ema).
    For a schedule, the classic form multiplies the accumulated trace by ``lr_t`` (see
    :func:`~funcnet.optim.transforms.scale_by_momentum`).

    Args:
      learning_rate: a number, a scalar array or a schedule.
      beta: momentum coefficient in [0, 1); default 0.9.
      form: ``"classic"`` (default) or ``"ema"`` (keyword-only).
      nesterov: Nesterov momentum (keyword-only).

    Returns:
      An ``Optimizer``.

    References:
      Polyak 1964; Sutskever et al., ICML 2013. Notes 003 and 004.
    """
    name = "nesterov" if nesterov else "momentum"
    check_learning_rate(name, learning_rate)
    check_unit_interval(name, "beta", beta)
    if form not in ("classic", "ema"):
        raise ValueError(f"{name}: form must be 'classic' or 'ema', got {form!r}")
    return chain(scale_by_momentum(beta, form=form, nesterov=nesterov),
                 scale_by_learning_rate(learning_rate), name=name)


def nesterov(learning_rate, beta=0.9, *, form: str = "classic") -> Optimizer:
    """Nesterov momentum: ``momentum(learning_rate, beta, form=form, nesterov=True)``.

    Classic form: ``v_t = beta v_{t-1} - lr g_t``, ``W_t = W_{t-1} + beta v_t - lr g_t``
    (= ``optax.sgd(lr, momentum=beta, nesterov=True)``).

    Args:
      learning_rate: a number, a scalar array or a schedule.
      beta: momentum coefficient in [0, 1); default 0.9.
      form: ``"classic"`` (default) or ``"ema"`` (keyword-only).

    Returns:
      An ``Optimizer``.

    References:
      Nesterov 1983; Sutskever et al., "On the importance of initialization and momentum
      in deep learning", ICML 2013 (the reformulation used here).
    """
    return momentum(learning_rate, beta, form=form, nesterov=True)


def adagrad(learning_rate, initial_accumulator_value=0.1, eps=1e-7) -> Optimizer:
    """AdaGrad: ``G_t = G_{t-1} + g_t^2``, ``W_t = W_{t-1} - lr g_t / sqrt(G_t + eps)``.

    Defaults as in optax: ``G_0 = 0.1``, ``eps = 1e-7`` inside the square root.

    Args:
      learning_rate: a number, a scalar array or a schedule.
      initial_accumulator_value: ``G_0`` >= 0.
      eps: >= 0.

    Returns:
      An ``Optimizer``.

    References:
      Duchi, Hazan, Singer, JMLR 2011.
    """
    check_learning_rate("adagrad", learning_rate)
    check_nonnegative("adagrad", "initial_accumulator_value", initial_accumulator_value)
    check_nonnegative("adagrad", "eps", eps)
    return chain(scale_by_adagrad(initial_accumulator_value, eps),
                 scale_by_learning_rate(learning_rate), name="adagrad")


def rmsprop(learning_rate, decay=0.9, eps=1e-8) -> Optimizer:
    """RMSProp: ``v_t = decay v_{t-1} + (1-decay) g_t^2``, ``W -= lr g_t / sqrt(v_t + eps)``.

    Defaults as in optax: ``decay = 0.9``, ``eps = 1e-8`` inside the square root,
    ``v_0 = 0``, no centering, no momentum.

    Args:
      learning_rate: a number, a scalar array or a schedule.
      decay: in [0, 1).
      eps: >= 0.

    Returns:
      An ``Optimizer``.

    References:
      Tieleman & Hinton, COURSERA lecture 6.5, 2012.
    """
    check_learning_rate("rmsprop", learning_rate)
    check_unit_interval("rmsprop", "decay", decay)
    check_nonnegative("rmsprop", "eps", eps)
    return chain(scale_by_rms(decay, eps), scale_by_learning_rate(learning_rate),
                 name="rmsprop")


def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, *, eps_root=0.0,
         form: str = "standard") -> Optimizer:
    """Adam (Kingma & Ba, 2015).

    ``form="standard"`` (notes 000 and 004, = ``optax.adam``)::

        m_t = b1 m_{t-1} + (1-b1) g_t,   v_t = b2 v_{t-1} + (1-b2) g_t^2
        W_t = W_{t-1} - lr * m_hat_t / (sqrt(v_hat_t + eps_root) + eps)
        m_hat_t = m_t / (1 - b1^t),   v_hat_t = v_t / (1 - b2^t)

    ``form="folded"`` (note 000's "modified" form)::

        W_t = W_{t-1} - lr_t * m_t / (sqrt(v_t + eps_root) + eps),
        lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)

    The forms agree exactly when ``eps = 0``, or when the folded form is given
    ``eps * sqrt(1 - b2^t)`` at step ``t``; with the same constant ``eps`` they differ (see
    :func:`~funcnet.optim.transforms.scale_by_adam` and ``docs/formulas.md``).

    Args:
      learning_rate: a number, a scalar array or a schedule; the paper uses 1e-3.
      b1: in [0, 1); default 0.9.
      b2: in [0, 1); default 0.999.
      eps: >= 0; default 1e-8.
      eps_root: >= 0, inside the square root; default 0 (keyword-only).
      form: ``"standard"`` or ``"folded"`` (keyword-only).

    Returns:
      An ``Optimizer``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from funcnet import optim
      >>> opt = optim.adam(0.1)
      >>> params = jnp.array([1.0, -2.0])
      >>> state = opt.init(params)
      >>> updates, state = opt.update(2 * params, state, params)
      >>> print(optim.apply_updates(params, updates))  # first step moves lr * sign(g)
      [ 0.9 -1.9]

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
      https://arxiv.org/abs/1412.6980. Notes 000 and 004.
    """
    _check_adam("adam", learning_rate, b1, b2, eps, eps_root, form)
    return chain(scale_by_adam(b1, b2, eps, eps_root=eps_root, form=form),
                 scale_by_learning_rate(learning_rate), name="adam")


def adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, *, eps_root=0.0,
          weight_decay=1e-4, mask=None, form: str = "standard") -> Optimizer:
    """Adam with decoupled weight decay (AdamW), scaled by the learning rate as in optax::

        W_t = W_{t-1} - lr * (m_hat_t / (sqrt(v_hat_t + eps_root) + eps) + wd * W_{t-1})

    This is Loshchilov & Hutter's Algorithm 2 with ``eta_t * alpha = lr`` and
    ``eta_t * lambda = lr * wd``. The decay does not pass through Adam's moments (unlike
    ``chain(add_decayed_weights(wd), adam(lr))``, which is Adam on an L2-regularized loss).

    Args:
      learning_rate: a number, a scalar array or a schedule.
      b1, b2, eps, eps_root, form: as in :func:`adam`.
      weight_decay: >= 0; default 1e-4 (as optax) (keyword-only).
      mask: which leaves to decay; see :func:`add_decayed_weights` (keyword-only).

    Returns:
      An ``Optimizer``.

    References:
      Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
      https://arxiv.org/abs/1711.05101.
    """
    _check_adam("adamw", learning_rate, b1, b2, eps, eps_root, form)
    check_nonnegative("adamw", "weight_decay", weight_decay)
    return chain(scale_by_adam(b1, b2, eps, eps_root=eps_root, form=form),
                 add_decayed_weights(weight_decay, mask),
                 scale_by_learning_rate(learning_rate), name="adamw")


def _check_adam(name, learning_rate, b1, b2, eps, eps_root, form):
    check_learning_rate(name, learning_rate)
    check_unit_interval(name, "b1", b1)
    check_unit_interval(name, "b2", b2)
    check_nonnegative(name, "eps", eps)
    check_nonnegative(name, "eps_root", eps_root)
    if form not in ("standard", "folded"):
        raise ValueError(f"{name}: form must be 'standard' or 'folded', got {form!r}")
