"""The named optimizers: each is a ``chain`` of blocks, with optax's signature.

``sgd``, ``adagrad``, ``rmsprop``, ``adam``, ``adamw``, ``nadam``, ``nadamw`` take optax's
arguments in optax's order with optax's defaults and build optax's chain of blocks, so
their trajectories and their states are optax's. ``momentum`` and ``nesterov`` are the
notes' spellings, built from the same blocks. Each ``learning_rate`` is a number >= 0, a
scalar (possibly traced) JAX array, or a schedule ``step -> lr`` evaluated at the number
of updates done so far (0, 1, ...). Hyperparameters are validated once, by the blocks;
their errors carry the optimizer's name (``"adam: scale_by_adam: b1 must be in [0, 1),
got 1.2"``).
"""
from __future__ import annotations

from funcnet import _checks
from funcnet.optim.combine import chain
from funcnet.optim.regularization import add_decayed_weights
from funcnet.optim.adaptive import scale_by_adam, scale_by_rms, scale_by_rss, scale_by_stddev
from funcnet.optim.transforms import _scale, identity, scale_by_learning_rate, trace
from funcnet._describe import described


def _lr(learning_rate):
    """The learning-rate block of a named optimizer: ``learning_rate`` is required (optax
    would treat ``None`` as "no scaling", i.e. gradient *ascent* of the direction)."""
    if learning_rate is None:
        raise TypeError("learning_rate must be a number, a scalar array or a schedule, "
                        "got None")
    return scale_by_learning_rate(learning_rate)


@described
def sgd(learning_rate, momentum=None, nesterov=False, accumulator_dtype=None):
    """Stochastic gradient descent, with optional (Nesterov) momentum (optax's ``sgd``)::

        momentum None:  W_t = W_{t-1} - lr_t g_t
        momentum mu:    m_t = g_t + mu m_{t-1},   W_t = W_{t-1} - lr_t m_t
        nesterov:       W_t = W_{t-1} - lr_t (g_t + mu m_t)

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule.
      momentum: ``None`` (plain SGD) or the momentum coefficient in [0, 1] (as
        :func:`~funcnet.optim.trace`; 1 is a running sum).
      nesterov: Nesterov momentum (ignored without ``momentum``, as in optax).
      accumulator_dtype: dtype of the momentum buffer (default: the parameters').

    Returns:
      An ``Optimizer``: ``chain(trace(momentum, nesterov) or identity(),
      scale_by_learning_rate(learning_rate))``.

    Example:
      >>> import jax.numpy as jnp
      >>> from funcnet import optim
      >>> opt = optim.sgd(0.1)
      >>> params = {"w": jnp.array([1.0, 2.0])}
      >>> updates, state = opt.update({"w": jnp.array([1.0, -1.0])}, opt.init(params), params)
      >>> print(optim.apply_updates(params, updates)["w"])
      [0.9 2.1]

    References:
      Robbins & Monro, "A Stochastic Approximation Method", 1951; Sutskever et al., "On
      the importance of initialization and momentum in deep learning", ICML 2013. Notes
      001, 003, 004.
    """
    nesterov = _checks.static_bool("sgd", "nesterov", nesterov)  # also without momentum
    with _checks.context("sgd"):
        first = identity() if momentum is None else trace(momentum, nesterov,
                                                          accumulator_dtype)
        return chain(first, _lr(learning_rate), name="sgd")


@described
def momentum(learning_rate, beta=0.9, *, form: str = "classic", nesterov: bool = False):
    """SGD with momentum, in either of the two forms of the notes.

    ``form="classic"`` (note 003, = ``sgd(lr, momentum=beta)`` = optax's)::

        v_t = beta v_{t-1} - lr g_t,   W_t = W_{t-1} + v_t

    ``form="ema"`` (note 004, moving average)::

        v_t = beta v_{t-1} + (1 - beta) g_t,   W_t = W_{t-1} - lr v_t

    built as ``chain(trace(beta, nesterov), scale(1 - beta), scale_by_learning_rate(lr))``
    (``v_t = (1 - beta) t_t``: one momentum implementation). With ``nesterov=True`` the
    step uses the look-ahead ``beta v_t + g_t`` (classic) or ``beta v_t + (1 - beta) g_t``
    (ema). ``ema`` with ``lr`` equals ``classic`` with ``(1 - beta) lr``.

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule.
      beta: momentum coefficient in [0, 1].
      form: ``"classic"`` or ``"ema"`` (keyword-only).
      nesterov: Nesterov momentum (keyword-only).

    Returns:
      An ``Optimizer``.

    References:
      Polyak 1964; Sutskever et al., ICML 2013. Notes 003 and 004.
    """
    name = "nesterov" if nesterov is True else "momentum"
    _checks.static_choice(name, "form", form, ("classic", "ema"))
    with _checks.context(name):
        first = trace(beta, nesterov)
        blocks = (first, _lr(learning_rate)) if form == "classic" else (
            first, _scale(1 - beta), _lr(learning_rate))
        return chain(*blocks, name=name)


@described
def nesterov(learning_rate, beta=0.9, *, form: str = "classic"):
    """Nesterov momentum: ``momentum(learning_rate, beta, form=form, nesterov=True)``.

    Classic form: ``v_t = beta v_{t-1} - lr g_t``, ``W_t = W_{t-1} + beta v_t - lr g_t``
    (= ``sgd(lr, momentum=beta, nesterov=True)``).

    References:
      Nesterov 1983; Sutskever et al., ICML 2013 (the reformulation used here).
    """
    return momentum(learning_rate, beta, form=form, nesterov=True)


@described
def adagrad(learning_rate, initial_accumulator_value=0.1, eps=1e-7):
    """AdaGrad: ``G_t = G_{t-1} + |g_t|^2``, ``W_t = W_{t-1} - lr g_t / sqrt(G_t + eps)``.

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule.
      initial_accumulator_value: ``G_0`` >= 0 (optax's 0.1).
      eps: >= 0, inside the square root (optax's 1e-7).

    Returns:
      ``chain(scale_by_rss(initial_accumulator_value, eps), scale_by_learning_rate(lr))``.

    References:
      Duchi, Hazan, Singer, JMLR 2011.
    """
    with _checks.context("adagrad"):
        return chain(scale_by_rss(initial_accumulator_value, eps), _lr(learning_rate),
                     name="adagrad")


@described
def rmsprop(learning_rate, decay=0.9, eps=1e-8, initial_scale=0.0, eps_in_sqrt=True,
            centered=False, momentum=None, nesterov=False, bias_correction=False):
    """RMSProp (optax's flexible ``rmsprop``)::

        v_t = decay v_{t-1} + (1 - decay) |g_t|^2          (v_0 = initial_scale)
        centered: m_t = decay m_{t-1} + (1 - decay) g_t,  v_t <- max(v_t - |m_t|^2, 0)
        u_t = -lr g_t / sqrt(v_t + eps)   (eps_in_sqrt; else / (sqrt(v_t) + eps))
        momentum mu: t_t = u_t + mu t_{t-1}, step t_t  (nesterov: u_t + mu t_t)

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule.
      decay: in [0, 1).
      eps: >= 0.
      initial_scale: ``v_0`` >= 0 (PyTorch 0, TF1 1).
      eps_in_sqrt: ``eps`` inside (optax) or outside (PyTorch) the square root.
      centered: divide by the variance estimate (Graves 2013).
      momentum: ``None`` or a coefficient in [0, 1], applied after the learning rate.
      nesterov: Nesterov momentum.
      bias_correction: divide the moments by ``1 - decay^t``.

    Returns:
      ``chain(scale_by_rms or scale_by_stddev, scale_by_learning_rate(lr),
      trace(momentum, nesterov) or identity())``.

    References:
      Tieleman & Hinton, COURSERA lecture 6.5, 2012; Graves, "Generating Sequences With
      Recurrent Neural Networks", 2013.
    """
    centered = _checks.static_bool("rmsprop", "centered", centered)
    with _checks.context("rmsprop"):
        block = scale_by_stddev if centered else scale_by_rms
        return chain(block(decay, eps, initial_scale, eps_in_sqrt, bias_correction),
                     _lr(learning_rate),
                     identity() if momentum is None else trace(momentum, nesterov),
                     name="rmsprop")


def _adam(name, learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, form, decay=None):
    with _checks.context(name):
        blocks = [scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, form=form)]
        if decay is not None:
            blocks.append(add_decayed_weights(*decay))
        return chain(*blocks, _lr(learning_rate), name=name)


@described
def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, mu_dtype=None, *,
         nesterov=False, form: str = "standard"):
    """Adam (Kingma & Ba, 2015), optax's ``adam``.

    ``form="standard"`` (notes 000 and 004, = optax)::

        m_t = b1 m_{t-1} + (1-b1) g_t,   v_t = b2 v_{t-1} + (1-b2) |g_t|^2
        W_t = W_{t-1} - lr * m_hat_t / (sqrt(v_hat_t + eps_root) + eps)
        m_hat_t = m_t / (1 - b1^t),   v_hat_t = v_t / (1 - b2^t)

    ``form="folded"`` (note 000's "modified" form, a funcnet extension)::

        W_t = W_{t-1} - lr_t * m_t / (sqrt(v_t + eps_root) + eps),
        lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)

    The forms agree when ``eps = 0``; with the same ``eps`` they differ (see
    :func:`~funcnet.optim.scale_by_adam` and ``docs/formulas.md``).

    Args:
      learning_rate: a number >= 0, a scalar array or a schedule; the paper uses 1e-3.
      b1: in [0, 1).
      b2: in [0, 1).
      eps: >= 0.
      eps_root: >= 0, inside the square root.
      mu_dtype: dtype of the first moment (default: the parameters').
      nesterov: NAdam (keyword-only).
      form: ``"standard"`` or ``"folded"`` (keyword-only).

    Returns:
      ``chain(scale_by_adam(...), scale_by_learning_rate(learning_rate))``.

    Example:
      >>> import jax.numpy as jnp
      >>> from funcnet import optim
      >>> opt = optim.adam(0.1)
      >>> params = jnp.array([1.0, -2.0])
      >>> updates, state = opt.update(2 * params, opt.init(params), params)
      >>> print(optim.apply_updates(params, updates))  # first step moves lr * sign(g)
      [ 0.9 -1.9]

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
      https://arxiv.org/abs/1412.6980. Notes 000 and 004.
    """
    return _adam("adam", learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, form)


@described
def adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, mu_dtype=None,
          weight_decay=1e-4, mask=None, *, nesterov=False, form: str = "standard"):
    """Adam with decoupled weight decay (AdamW), scaled by the learning rate (optax)::

        W_t = W_{t-1} - lr * (m_hat_t / (sqrt(v_hat_t + eps_root) + eps) + wd * W_{t-1})

    Loshchilov & Hutter's Algorithm 2 with ``eta_t * alpha = lr`` and
    ``eta_t * lambda = lr * wd``. The decay does not pass through Adam's moments (unlike
    ``chain(add_decayed_weights(wd), adam(lr))``, Adam on an L2-regularized loss).

    Args:
      learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, form: as in :func:`adam`.
      weight_decay: >= 0 or a schedule (optax's 1e-4).
      mask: which leaves to decay; see :func:`~funcnet.optim.add_decayed_weights`.

    Returns:
      ``chain(scale_by_adam(...), add_decayed_weights(weight_decay, mask),
      scale_by_learning_rate(learning_rate))``.

    References:
      Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
      https://arxiv.org/abs/1711.05101.
    """
    return _adam("adamw", learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, form,
                 decay=(weight_decay, mask))


@described
def nadam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, mu_dtype=None, *,
          nesterov=True):
    """NAdam: ``adam(..., nesterov=True)`` (Dozat, 2016), optax's ``nadam`` (and, as there,
    ``nesterov=False`` gives Adam)."""
    return _adam("nadam", learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, "standard")


@described
def nadamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, mu_dtype=None,
           weight_decay=1e-4, mask=None, *, nesterov=True):
    """NAdamW: ``adamw(..., nesterov=True)``, optax's ``nadamw``."""
    return _adam("nadamw", learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov,
                 "standard", decay=(weight_decay, mask))
