"""Second order through the hand-written backward rules at ties: ``jax.hessian`` (forward
mode over the backward rule) must use the same tie rule as the first derivative, so the
Hessian is symmetric and equals the twin's.

max_pool2d with ``stride == window`` (the default, non-overlapping windows) used
``jnp.max`` for ``y`` in its forward rule: the first derivative sends ``dy`` to the first
maximum of a window, but the forward-mode derivative of ``jnp.max`` averages over tied
maxima, so at a tie the Hessian was asymmetric (``H[first, j] = f''/k`` for each of the
``k`` tied ``j``, ``H[j, first] = 0``). Ties are common: zeros after a ReLU, quantised or
clipped inputs.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import ops
from funcnet.gradcheck import assert_close
from funcnet.ops import reference as R
from tests.ops._cases import on_cpu


def _hessian(max_pool2d, x, window, stride, padding):
    def f(x):
        y = max_pool2d(x, window, stride, padding)
        w = jnp.arange(1.0, 1.0 + y.size, dtype=x.dtype).reshape(y.shape)
        return jnp.sum(jnp.sin(y) * w)
    h = jax.hessian(f)(x)
    return h.reshape(x.size, x.size)


_X = np.random.default_rng(0).integers(0, 2, (1, 6, 6, 2)).astype(np.float64)


@pytest.mark.parametrize("window,stride,padding", [(2, None, 0), (3, None, 0),
                                                   (2, 1, 0), (3, 2, 1)])
@pytest.mark.parametrize("x", [np.ones((1, 4, 4, 1)), _X], ids=["all_tied", "zeros_ones"])
def test_max_pool_hessian_at_ties_is_symmetric_and_equals_the_twin(x, window, stride,
                                                                   padding):
    ours = jax.jit(lambda x: _hessian(ops.max_pool2d, x, window, stride, padding))(x)
    twin = on_cpu(lambda x: _hessian(R.max_pool2d, x, window, stride, padding), x)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ours).T)
    assert_close(ours, twin, 1e-14, "Hessian vs twin")
