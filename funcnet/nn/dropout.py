"""Inverted dropout layer (Srivastava et al. 2014).

References:
  Srivastava, Hinton, Krizhevsky, Sutskever, Salakhutdinov (2014), "Dropout: A Simple Way
  to Prevent Neural Networks from Overfitting", JMLR 15.
"""
from __future__ import annotations

from funcnet import _checks, ops
from funcnet.nn.base import (Layer, apply_shape, check_dtype, check_input_shape, check_no_params,
                             check_train, check_train_key)
from funcnet._describe import described

__all__ = ["Dropout"]


@described
def Dropout(rate: float) -> Layer:
    """Inverted dropout: drop each unit with probability ``rate`` during training.

    ``train=True``: ``y = x * m / (1 - rate)`` with ``m ~ Bernoulli(1 - rate)`` drawn
    independently per element from ``key`` (:func:`funcnet.ops.dropout`), so
    ``E[y] = x``. ``train=False``: ``y = x`` (no rescaling is needed at test time because
    the training output was already scaled by ``1/(1 - rate)``).

    ``rate`` is the probability of DROPPING a unit (PyTorch, Keras, haiku), not the keep
    probability of ``jax.example_libraries.stax.Dropout``.

    Shapes: output has the input's shape. Params ``()``, state ``()``.

    Args:
      rate: drop probability in ``[0, 1)``. ``rate = 0`` is the identity.

    Returns:
      A :class:`Layer` named ``"Dropout(rate)"``; its ``apply`` takes ``key=`` (a PRNG
      key, required when ``train=True``).

    Raises:
      ValueError: at construction if ``rate`` is outside ``[0, 1)`` or NaN; in ``apply`` if
        ``train=True`` and no ``key`` is given.
      TypeError: at construction if ``rate`` is not a Python number; in ``apply`` a
        non-float input (or a list), or (from :func:`funcnet.ops.dropout`) a bad key.

    References:
      Srivastava et al. (2014).
    """
    rate = _checks.static_float("Dropout", "rate", rate, 0.0, 1.0, high_inclusive=False)
    name = f"Dropout({rate:g})"

    def init(key, input_shape):
        shape = check_input_shape(name, key, input_shape, None)
        return apply_shape(name, apply, (), (), shape, check_dtype(name, None)), (), ()

    def apply(params, state, x, *, key=None, train=False):
        check_no_params(name, params, state)
        if not check_train(name, train) or rate == 0.0:
            _checks.check_float(name, "x", x)   # the identity path calls no op
            return x, state
        check_train_key(name, key)
        with _checks.context(name):
            return ops.dropout(x, rate, key), state

    return Layer(init, apply, name)
