"""Inverted dropout layer (Srivastava et al. 2014).

References:
  Srivastava, Hinton, Krizhevsky, Sutskever, Salakhutdinov (2014), "Dropout: A Simple Way
  to Prevent Neural Networks from Overfitting", JMLR 15.
"""
from __future__ import annotations

from funcnet import ops
from funcnet.nn.base import Layer, check_float_input, check_init_shape, check_no_params

__all__ = ["Dropout"]


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
      ValueError: at construction if ``rate`` is outside ``[0, 1)``; in ``apply`` if
        ``train=True`` and no ``key`` is given.
      TypeError: at construction if ``rate`` is not a Python number.

    References:
      Srivastava et al. (2014).
    """
    if not isinstance(rate, (int, float)) or isinstance(rate, bool):
        raise TypeError(f"Dropout: rate must be a Python float, got {type(rate).__name__}")
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"Dropout: rate is the probability of dropping a unit and must be "
                         f"in [0, 1), got {rate}")
    name = f"Dropout({rate:g})"

    def init(key, input_shape):
        del key
        return check_init_shape(name, input_shape, range(0, 32), "any rank"), (), ()

    def apply(params, state, x, *, key=None, train=False):
        check_no_params(name, params, state)
        check_float_input(name, x)
        if not train or rate == 0.0:
            return x, state
        if key is None:
            raise ValueError(
                f"{name}: train=True needs a PRNG key to draw the dropout mask; call "
                f"apply(params, state, x, key=jax.random.PRNGKey(...), train=True) (or pass "
                f"train=False for evaluation)")
        return ops.dropout(x, rate, key), state

    return Layer(init, apply, name)
