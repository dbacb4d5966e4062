"""Conv1D against lax.conv_general_dilated, GlobalAvgPool2D against jnp.mean, and the
use_bias switch of Dense/Conv2D: values and gradients in float64, checked in one jitted
program per layer."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from funcnet import nn
from funcnet.nn import memory
from tests.nn._models import abstract_init, numpy_init, randn

F64 = jnp.float64
TOL = dict(rtol=1e-10, atol=1e-12)


def _close(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, **TOL)


@pytest.mark.parametrize("kernel,stride,padding,lax_padding", [
    (3, 1, 0, "VALID"), (4, 2, (2, 1), [(2, 1)]), (3, 2, "SAME", "SAME"), (1, 1, 1, [(1, 1)])])
def test_conv1d_equals_lax_conv_in_value_and_gradient(kernel, stride, padding, lax_padding):
    layer = nn.Conv1D(3, kernel, stride=stride, padding=padding, dtype=F64)
    x = randn((2, 9, 4), seed=1)
    _, p, _ = abstract_init(layer, (-1, 9, 4))
    assert p["w"].shape == (kernel, 4, 3) and p["b"].shape == (3,)     # Flax's (K, Cin, Cout)
    p = {"w": randn(p["w"].shape, seed=2), "b": randn((3,), seed=3)}

    def ours(p, x):
        return layer.apply(p, (), x)[0]

    def theirs(p, x):
        y = lax.conv_general_dilated(x, p["w"], (stride,), lax_padding,
                                     dimension_numbers=("NWC", "WIO", "NWC"))
        return y + p["b"][None, None, :]

    @jax.jit
    def both(p, x):
        ct = jnp.cos(jnp.arange(theirs(p, x).size, dtype=F64)).reshape(theirs(p, x).shape)
        vjp = [jax.vjp(f, p, x)[1](ct) for f in (ours, theirs)]
        return ours(p, x), theirs(p, x), ours(p, x[0]), vjp

    y, y_ref, y_one, (g, g_ref) = both(p, x)
    np.testing.assert_allclose(y, y_ref, **TOL)
    np.testing.assert_allclose(y_one, y_ref[0], **TOL)             # one sequence (L, C)
    _close(g, g_ref)


def test_global_avg_pool_is_the_mean_with_an_exact_gradient_and_no_residual():
    layer = nn.GlobalAvgPool2D()
    x = randn((3, 5, 4, 2), seed=4)
    assert layer.init(jax.random.PRNGKey(0), (-1, 5, 4, 2))[0] == (-1, 2)

    @jax.jit
    def both(x):
        f = lambda x: jnp.sum(jnp.sin(layer.apply((), (), x)[0]))   # noqa: E731
        g = lambda x: jnp.sum(jnp.sin(jnp.mean(x, axis=(1, 2))))    # noqa: E731
        return layer.apply((), (), x)[0], layer.apply((), (), x[1])[0], jax.grad(f)(x), \
            jax.grad(g)(x)

    y, y_one, g, g_ref = both(x)
    np.testing.assert_allclose(y, np.asarray(x).mean(axis=(1, 2)), **TOL)
    np.testing.assert_allclose(y_one, y[1], **TOL)
    np.testing.assert_allclose(g, g_ref, **TOL)
    # dx = dy / (H*W): nothing is saved for the backward pass but the (static) geometry
    assert memory.residual_bytes(lambda x: jnp.sum(layer.apply((), (), x)[0]), x,
                                 include_arguments=False) == 0


def test_use_bias_false_calls_matmul_and_conv_without_bias():
    dense = nn.Dense(3, use_bias=False, dtype=F64)
    conv = nn.Conv2D(2, 3, use_bias=False, dtype=F64)
    _, pd, _ = numpy_init(dense, (-1, 4))
    _, pc, _ = numpy_init(conv, (-1, 5, 5, 2))
    assert set(pd) == {"w"} and set(pc) == {"w"}
    x = randn((2, 4), seed=5)
    jaxpr = str(jax.make_jaxpr(lambda p: jnp.sum(dense.apply(p, (), x)[0]))(pd))
    assert re.findall(r"custom_vjp_call\[\s*name=(\w+)", jaxpr) == ["_matmul"]
    np.testing.assert_allclose(dense.apply(pd, (), x)[0], np.asarray(x) @ np.asarray(pd["w"]),
                               **TOL)
    xc = randn((2, 5, 5, 2), seed=6)
    with_bias = nn.Conv2D(2, 3, dtype=F64)
    np.testing.assert_allclose(conv.apply(pc, (), xc)[0],
                               with_bias.apply({"w": pc["w"], "b": jnp.zeros(2, F64)}, (), xc)[0],
                               **TOL)
