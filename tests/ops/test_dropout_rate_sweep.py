"""``ops.dropout``'s ``rate`` as a traced scalar (a ``jax.vmap`` sweep over rates, a jitted
function's argument): the sweep equals the static calls one by one (the same masks for the
same key, values and input gradients), for the op and its twin; ``dL/drate`` (the mask held
fixed) equals the twin's autodiff, central differences and the hand formula; errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as R
from tests.ops._cases import normal
from tests.ops._sweeps import assert_sweep_equals_static

jax.config.update("jax_enable_x64", True)

MODULES = pytest.mark.parametrize("m", [ops, R], ids=["op", "twin"])
KEY = jax.random.PRNGKey(3)
X = normal(300, (6, 7))
RATES = jnp.asarray([0.0, 0.1, 0.5, 0.9])


def _loss(m, dims=()):
    w = normal(301, X.shape)        # a weighted sum: every kept element matters
    return lambda x, r: jnp.sum(w * m.dropout(x, r, KEY, dims))


@MODULES
@pytest.mark.parametrize("dims", [(), (1,)], ids=["elementwise", "shared_rows"])
def test_rate_sweep_equals_the_static_calls(m, dims):
    assert_sweep_equals_static(_loss(m, dims), X, RATES, f"{m.__name__} {dims}", rtol=1e-15)


def test_rate_sweep_gives_the_static_masks():
    """The mask of each swept rate is the static call's, element by element (not only
    the loss), and the drop fraction follows the rate."""
    x = jnp.ones((64, 64))
    swept = jax.vmap(lambda r: ops.dropout(x, r, KEY))(RATES)
    for y, r in zip(swept, RATES):
        np.testing.assert_array_equal(y, ops.dropout(x, float(r), KEY))
        assert abs(float(jnp.mean(y == 0)) - float(r)) < 0.03


def test_rate_gradient_equals_the_twin_and_central_differences():
    """``dL/drate = sum(dy * y) / (1 - rate)`` (the mask held fixed) against the twin's
    autodiff and central differences (the step moves no element across its threshold)."""
    for rate in (0.2, 0.6):
        check_vjp(ops.dropout, R.dropout, (X, jnp.asarray(rate), KEY), argnums=(0, 1))
        dy = normal(302, X.shape)
        y, vjp = jax.vjp(lambda r: ops.dropout(X, r, KEY), jnp.asarray(rate))
        np.testing.assert_allclose(vjp(dy)[0], jnp.sum(dy * y) / (1 - rate), rtol=1e-13)


def test_traced_rate_keeps_float32_and_bfloat16():
    for dt in (jnp.float32, jnp.bfloat16):
        x = X.astype(dt)
        y = jax.jit(lambda x, r: ops.dropout(x, r, KEY))(x, 0.5)
        assert y.dtype == dt
        assert_close(y, ops.dropout(x, 0.5, KEY), 0.0, str(dt))
        g = jax.grad(lambda r: jnp.sum(ops.dropout(x, r, KEY).astype(jnp.float32)))(
            jnp.asarray(0.5, jnp.float32))
        assert g.dtype == jnp.float32 and np.isfinite(g)


@pytest.mark.parametrize("rate, exc, match", [
    (jnp.ones((2,)), ValueError, r"dropout: rate must be a scalar, got shape \(2,\)"),
    (jnp.asarray(True), TypeError, r"dropout: rate must have a real numeric dtype"),
])
def test_a_traced_rate_is_checked_for_shape_and_dtype(rate, exc, match):
    for fn in (ops.dropout, R.dropout):
        with pytest.raises(exc, match=match):
            jax.jit(lambda x, r: fn(x, r, KEY))(X, rate)
