"""funcnet.nn.memory: saved_residuals / residual_bytes report what the backward pass keeps;
Remat gives the same values and gradients with fewer saved bytes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn, ops
from funcnet.nn import memory
from tests.nn._models import numpy_init, randn

N, D, H, C = 8, 12, 16, 5


def _mlp():
    return nn.serial(nn.Dense(H), nn.ReLU(), nn.Dense(H), nn.ReLU(), nn.Dense(C))


def _setup(model, dtype=jnp.float32):
    _, params, state = numpy_init(model, (-1, D))
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    x = randn((N, D), seed=1).astype(dtype)
    y = jnp.arange(N, dtype=jnp.int32) % C

    def loss(params, x):
        logits, _ = model.apply(params, state, x)
        return ops.softmax_cross_entropy(logits, y)

    return loss, params, x


def test_saved_residuals_small_mlp_lists_params_and_relu_masks():
    loss, params, x = _setup(_mlp())
    recs = memory.saved_residuals(loss, params, x)
    assert all(isinstance(r, memory.SavedResidual) for r in recs)
    for r in recs:
        assert r.nbytes == int(np.prod(r.shape)) * r.dtype.itemsize
    args = [r for r in recs if r.is_argument]
    acts = [r for r in recs if not r.is_argument]
    # the backward pass needs x (for dW1) and the weights of layers 2 and 3 (for dX)
    arg_shapes = {r.shape for r in args}
    assert (N, D) in arg_shapes
    assert (H, H) in arg_shapes and (H, C) in arg_shapes
    # each ReLU keeps its (N, H) output or mask; nothing bigger than (N, H) is saved
    relu_like = [r for r in acts if r.shape == (N, H)]
    assert len(relu_like) >= 2
    assert all(int(np.prod(r.shape)) <= N * max(H, C) for r in acts)
    # the softmax-CE rule keeps probabilities (N, C), not the logits' whole graph
    assert any(r.shape == (N, C) for r in acts)


def test_residual_bytes_totals_and_argument_switch():
    loss, params, x = _setup(_mlp())
    recs = memory.saved_residuals(loss, params, x)
    total = memory.residual_bytes(loss, params, x)
    acts = memory.residual_bytes(loss, params, x, include_arguments=False)
    assert total == sum(r.nbytes for r in recs)
    assert acts == sum(r.nbytes for r in recs if not r.is_argument)
    assert 0 < acts < total
    text = memory.format_residuals(recs)
    assert f"total {total:,} B" in text


def test_relu_saves_a_boolean_mask_not_floats():
    def f(x):
        return jnp.sum(ops.relu(x) * 2.0)

    recs = memory.saved_residuals(f, jnp.ones((4, 3), jnp.float32))
    acts = [r for r in recs if not r.is_argument and r.shape != ()]
    assert [(r.shape, r.dtype) for r in acts] == [((4, 3), np.dtype(bool))]


@pytest.mark.parametrize("transform", ["eager", "jit"])
def test_remat_same_values_and_gradients_fewer_residuals(transform):
    inner = nn.serial(nn.Dense(H), nn.ReLU(), nn.Dense(H), nn.ReLU())
    plain = nn.serial(inner, nn.Dense(C))
    remat = nn.serial(memory.Remat(inner), nn.Dense(C))
    loss_p, params, x = _setup(plain)
    loss_r, params_r, _ = _setup(remat)
    chex_equal = jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(params_r)
    assert chex_equal  # Remat keeps the wrapped layer's params structure
    g = jax.value_and_grad(loss_p)
    gr = jax.value_and_grad(loss_r)
    if transform == "jit":
        g, gr = jax.jit(g), jax.jit(gr)
    (v, grads), (vr, grads_r) = g(params, x), gr(params, x)
    np.testing.assert_allclose(vr, v, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads_r), jax.tree.leaves(grads)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    act = memory.residual_bytes(loss_p, params, x, include_arguments=False)
    act_r = memory.residual_bytes(loss_r, params, x, include_arguments=False)
    assert act_r < act


def test_remat_with_policy_and_in_float64():
    inner = nn.serial(nn.Dense(H), nn.ReLU())
    model = nn.serial(memory.Remat(inner, jax.checkpoint_policies.nothing_saveable),
                      nn.Dense(C))
    loss, params, x = _setup(model, jnp.float64)
    ref, _, _ = _setup(nn.serial(inner, nn.Dense(C)), jnp.float64)
    for a, b in zip(jax.tree.leaves(jax.grad(loss)(params, x)),
                    jax.tree.leaves(jax.grad(ref)(params, x))):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_remat_layer_protocol():
    layer = memory.Remat(nn.Dense(H))
    assert isinstance(layer, nn.Layer)
    assert layer.name == "Remat(Dense(16))"
    out_shape, params, state = layer.init(jax.random.PRNGKey(0), (-1, D))
    assert out_shape == (-1, H)
    y, state2 = layer.apply(params, state, jnp.ones((N, D), jnp.float32), train=True)
    assert y.shape == (N, H) and state2 == state
    with pytest.raises(TypeError, match="Remat: layer must have init and apply"):
        memory.Remat(object())
