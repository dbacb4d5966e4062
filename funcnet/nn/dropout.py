"""Inverted dropout layers: ``Dropout`` (Srivastava et al. 2014), with masks shared along
``broadcast_dims`` (spatial dropout), and ``DropPath`` (stochastic depth).

References:
  Srivastava, Hinton, Krizhevsky, Sutskever, Salakhutdinov (2014), "Dropout: A Simple Way
  to Prevent Neural Networks from Overfitting", JMLR 15.
  Tompson, Goroshin, Jain, LeCun, Bregler (2015), "Efficient Object Localization Using
  Convolutional Networks", CVPR (spatial dropout).
  Huang, Sun, Liu, Sedra, Weinberger (2016), "Deep Networks with Stochastic Depth", ECCV.
"""
from __future__ import annotations

import functools

import jax

from funcnet import _checks, ops
from funcnet.nn.base import (Layer, apply_shape, check_dtype, check_input_shape, check_no_params,
                             check_train, check_train_key)
from funcnet._describe import described

__all__ = ["DropPath", "Dropout"]


@described(added=("broadcast_dims",))
def Dropout(rate: float, broadcast_dims=()) -> Layer:
    """Inverted dropout: drop each unit with probability ``rate`` during training.

    ``train=True``: ``y = x * m / (1 - rate)`` with ``m ~ Bernoulli(1 - rate)`` drawn
    independently per element from ``key`` (:func:`funcnet.ops.dropout`), so
    ``E[y] = x``. ``train=False``: ``y = x`` (no rescaling is needed at test time because
    the training output was already scaled by ``1/(1 - rate)``).

    ``rate`` is the probability of DROPPING a unit (PyTorch, Keras, haiku), not the keep
    probability of ``jax.example_libraries.stax.Dropout``. ``broadcast_dims`` as Flax's
    ``nn.Dropout``: one mask value is shared along these axes, e.g. ``(1, 2)`` on NHWC
    drops whole feature maps (spatial dropout; PyTorch's ``Dropout2d``), ``(0,)`` on
    time-major ``(T, N, D)`` sequences one mask for every step (variational dropout).

    Shapes: output has the input's shape. Params ``()``, state ``()``.

    Args:
      rate: drop probability in ``[0, 1)``. ``rate = 0`` is the identity. A traced scalar
        (the layer built inside ``jax.vmap`` over a sweep of rates) is passed on to
        :func:`funcnet.ops.dropout`, which draws the static rate's mask for it.
      broadcast_dims: axes of the input (negative count from the end) that share one mask
        value; checked against the input's rank at ``init``/``apply``. Default ``()``.

    Returns:
      A :class:`Layer` named ``"Dropout(rate)"`` (``"Dropout(rate, broadcast_dims=(1,
      2))"`` with shared axes); its ``apply`` takes ``key=`` (a PRNG key, required when
      ``train=True``).

    Raises:
      ValueError: at construction if ``rate`` is outside ``[0, 1)``, NaN or an array of a
        shape other than ``()``; in ``apply`` if ``train=True`` and no ``key`` is given;
        at ``init``/``apply`` a ``broadcast_dims`` axis outside the input's rank or named
        twice.
      TypeError: at construction if ``rate`` is not a number or a real scalar array or
        ``broadcast_dims`` not a tuple of ints; in ``apply`` a non-float input (or a
        list), or (from :func:`funcnet.ops.dropout`) a bad key.

    References:
      Srivastava et al. (2014); Tompson et al. (2015) for spatial dropout.
    """
    rate = _checks.check_rate("Dropout", "rate", rate)
    dims = _checks.static_ints("Dropout", "broadcast_dims", broadcast_dims)
    name = (f"Dropout({_checks.value_text(rate)})" if not dims
            else f"Dropout({_checks.value_text(rate)}, broadcast_dims={dims})")
    return _dropout_layer(name, rate, lambda ndim: dims)


@described
def DropPath(rate: float) -> Layer:
    """Stochastic depth: drop each EXAMPLE's whole input with probability ``rate`` during
    training (Huang et al. 2016; timm's ``DropPath``, as in ViT, DeiT, Swin, ConvNeXt).

    ``train=True``: ``y_n = x_n * m_n / (1 - rate)``, ``m_n ~ Bernoulli(1 - rate)`` per
    example ``n`` (axis 0), shared by every other axis: :func:`funcnet.ops.dropout` with
    ``broadcast_dims`` all axes but the first. ``train=False``: ``y = x``. Put it last in
    a residual branch, ``Residual(serial(block, DropPath(r)))``, so that ``x + f(x)``
    becomes ``x`` for the dropped examples; the usual schedule grows ``r`` linearly with
    depth (``r_l = r_max l / (L - 1)``).

    Shapes: input of rank >= 2 with the batch on axis 0 (``(N, ...)``); output of the
    same shape. Params ``()``, state ``()``. Under ``jax.vmap`` over examples (no batch
    axis) use ``Dropout(rate, broadcast_dims=<every axis>)`` with one key per example.

    Args:
      rate: drop probability in ``[0, 1)``. ``rate = 0`` is the identity. A traced scalar
        as :func:`Dropout`.

    Returns:
      A :class:`Layer` named ``"DropPath(rate)"``; its ``apply`` takes ``key=`` (required
      when ``train=True``).

    Raises:
      ValueError: as :func:`Dropout`; an input of rank < 2 (no batch axis besides the
        features), at ``init`` or ``apply``.
      TypeError: as :func:`Dropout`.

    References:
      Huang et al. (2016), "Deep Networks with Stochastic Depth".
    """
    rate = _checks.check_rate("DropPath", "rate", rate)
    name = f"DropPath({_checks.value_text(rate)})"

    def dims(ndim: int) -> tuple:
        if ndim < 2:
            raise ValueError(f"{name}: the input has rank {ndim}, expected rank >= 2 "
                             f"(N, ...) with the examples on axis 0")
        return tuple(range(1, ndim))

    return _dropout_layer(name, rate, dims)


def _dropout_layer(name: str, rate, dims) -> Layer:
    """The layer of :func:`Dropout` and :func:`DropPath`: ``ops.dropout`` with the shared
    axes ``dims(input rank)`` when training, the identity otherwise."""

    def init(key, input_shape):
        shape = check_input_shape(name, key, input_shape, None)
        training = functools.partial(apply, key=jax.random.PRNGKey(0), train=True)
        # traced as in training, so the shared axes are checked against the input's rank
        return apply_shape(name, training, (), (), shape, check_dtype(name, None)), (), ()

    def apply(params, state, x, *, key=None, train=False):
        check_no_params(name, params, state)
        if not check_train(name, train) or not _checks.may_drop(rate):
            _checks.check_float(name, "x", x)   # the identity path calls no op
            return x, state
        check_train_key(name, key)
        shared = dims(len(_checks.shape_of(x)))
        with _checks.context(name):
            return ops.dropout(x, rate, key, shared), state

    return Layer(init, apply, name)
