"""funcnet._random.draw: the library's random draws (dropout masks, initial weights,
optimizer noise) equal ``jax.random``'s of the same key and shape bit for bit, for every
PRNG implementation, and XLA:CPU gets the flat draw it compiles quickly while other
platforms keep the shaped one."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn, ops, optim
from funcnet._random import draw, normal_like

SHAPES = [(2, 3, 5), (4, 6), (0, 3), (7,), ()]
SAMPLERS = {
    "bits": lambda k, s: jax.random.bits(k, s),
    "bernoulli": lambda k, s: jax.random.bernoulli(k, 0.3, s),
    "truncated_normal": lambda k, s: jax.random.truncated_normal(k, -2.0, 2.0, s),
}


@pytest.fixture(params=[("threefry2x32", True), ("threefry2x32", False), ("rbg", True),
                        ("unsafe_rbg", True)], ids=lambda p: f"{p[0]}-partitionable{p[1]}")
def key(request):
    impl, partitionable = request.param
    before = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", partitionable)
    yield jax.random.key(7, impl=impl)
    jax.config.update("jax_threefry_partitionable", before)


@pytest.mark.parametrize("name", SAMPLERS)
def test_draw_equals_the_shaped_draw(key, name):
    sample = SAMPLERS[name]
    want = [sample(key, shape) for shape in SHAPES]
    eager = [draw(sample, key, shape) for shape in SHAPES]
    jitted = jax.jit(lambda k: [draw(sample, k, shape) for shape in SHAPES])(key)
    for shape, w, e, j in zip(SHAPES, want, eager, jitted):
        for got in (e, j):
            assert got.shape == shape and got.dtype == w.dtype
            np.testing.assert_array_equal(got, w, err_msg=f"{name} {shape}")


def test_draw_under_vmap_over_keys_and_a_traced_probability():
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    p = jnp.asarray([0.1, 0.5, 0.9])
    got = jax.jit(jax.vmap(lambda k, q: draw(
        lambda k, s: jax.random.bernoulli(k, q, s), k, (2, 3, 4))))(keys, p)
    want = jnp.stack([jax.random.bernoulli(k, q, (2, 3, 4)) for k, q in zip(keys, p)])
    np.testing.assert_array_equal(got, want)


def test_normal_like_takes_the_shape_and_dtype():
    x = jnp.zeros((3, 2, 5), jnp.bfloat16)
    key = jax.random.PRNGKey(2)
    got = normal_like(key, x)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_array_equal(got, jax.random.normal(key, x.shape, jnp.bfloat16))


SHAPE = (3, 3, 4, 8)
N = math.prod(SHAPE)
SITES = {
    "dropout": lambda k: ops.dropout(jnp.ones(SHAPE), 0.5, k),
    "variance_scaling_normal": lambda k: nn.initializers.he_normal()(k, SHAPE),
    "variance_scaling_uniform": lambda k: nn.initializers.he_uniform()(k, SHAPE),
    "variance_scaling_truncated": lambda k: nn.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal")(k, SHAPE),
    "normal": lambda k: nn.initializers.normal()(k, SHAPE),
    "truncated_normal": lambda k: nn.initializers.truncated_normal()(k, SHAPE),
    "uniform": lambda k: nn.initializers.uniform()(k, SHAPE),
    "add_noise": lambda k: _update(optim.add_noise(0.1, 0.5, k), jnp.ones(SHAPE)),
    "differentially_private_aggregate": lambda k: _update(
        optim.differentially_private_aggregate(1.0, 0.5, k), jnp.ones((2,) + SHAPE)),
    "hutchinson_estimator_diag_hessian": lambda k: _update(
        optim.hutchinson_estimator_diag_hessian(k), jnp.ones(SHAPE),
        obj_fn=lambda p: jnp.sum(p ** 3)),
}


def _update(opt, x, **extra):
    return opt.update(x, opt.init(x), x, **extra)[0]


@pytest.mark.parametrize("site", SITES)
def test_library_draws_are_flat_on_cpu_and_shaped_elsewhere(site):
    """Every draw of the library goes through :func:`draw`: the CPU program draws ``N``
    values, a CUDA or TPU program (lowered here without the device) the kernel's shape."""
    traced = jax.jit(SITES[site]).trace(jax.random.PRNGKey(0))
    cpu = traced.lower().as_text()
    assert f"tensor<{N}xui32>" in cpu and "tensor<3x3x4x8xui32>" not in cpu
    for platform in ("cuda", "tpu"):
        other = traced.lower(lowering_platforms=(platform,)).as_text()
        assert "tensor<3x3x4x8xui32>" in other and f"tensor<{N}xui32>" not in other
