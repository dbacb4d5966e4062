"""GroupNorm and InstanceNorm layers: shapes, params, values (PyTorch's formula in NumPy;
Flax, Equinox and PyTorch themselves when installed), promotion, errors, and a ResNet-GN
block that trains."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn, ops, optim, train
from funcnet.gradcheck import assert_close
from tests.nn._models import (abstract_init, jit_init, numpy_init, randn, struct,
                              trace_apply)

F64 = jnp.float64
KEY = jax.random.PRNGKey(0)

SHAPE_CASES = [
    (nn.GroupNorm(2, dtype=F64), (-1, 4, 4, 6)),
    (nn.GroupNorm(None, group_size=3, use_scale=False, dtype=F64), (-1, 5, 6)),
    (nn.GroupNorm(1, use_bias=False, dtype=F64), (-1, 4)),
    (nn.InstanceNorm(dtype=F64), (-1, 3, 3, 2)),
    (nn.InstanceNorm(use_scale=False, use_bias=False, dtype=F64), (2, -1, 3)),
]


@pytest.mark.parametrize("layer,in_shape", SHAPE_CASES,
                         ids=[f"{c[0].name}{c[1]}-{i}" for i, c in enumerate(SHAPE_CASES)])
def test_shape_agreement(layer, in_shape):
    out_shape, params, state = abstract_init(layer, in_shape)
    assert out_shape == in_shape and state == ()
    concrete = tuple(3 if d == -1 else d for d in in_shape)
    y, new_state = trace_apply(layer, params, state, struct(concrete, F64))
    assert y.shape == concrete and y.dtype == F64 and new_state == ()


def _torch_formula(x, gamma, beta, groups, eps):
    """``torch.nn.GroupNorm(groups, C, eps)`` in NumPy float64 on the channels-first
    transpose: ``(N, C, *) -> (N, G, -1)``, biased variance, per-channel affine."""
    xt = np.moveaxis(x, -1, 1)
    n, c = xt.shape[:2]
    v = xt.reshape(n, groups, -1)
    norm = ((v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + eps))
    affine = (1, c) + (1,) * (xt.ndim - 2)
    return np.moveaxis(norm.reshape(xt.shape) * gamma.reshape(affine) + beta.reshape(affine),
                       1, -1)


def test_params_and_values_are_pytorchs_formula():
    x = np.asarray(randn((2, 3, 4, 6), seed=1, scale=2.0, shift=1.0))
    _, p, _ = jit_init(nn.GroupNorm(3, dtype=F64), (-1, 3, 4, 6), KEY)
    assert set(p) == {"gamma", "beta"}
    np.testing.assert_array_equal(p["gamma"], np.ones(6))
    np.testing.assert_array_equal(p["beta"], np.zeros(6))
    assert set(jit_init(nn.InstanceNorm(use_bias=False), (2, 3, 6), KEY)[1]) == {"gamma"}
    p = {"gamma": np.asarray(randn((6,), 2)), "beta": np.asarray(randn((6,), 3))}
    for layer, groups in ((nn.GroupNorm(3, eps=1e-3), 3),
                          (nn.GroupNorm(None, group_size=2, eps=1e-3), 3),
                          (nn.GroupNorm(1, eps=1e-3), 1), (nn.InstanceNorm(1e-3), 6)):
        y, _ = layer.apply(p, (), x)
        np.testing.assert_allclose(y, _torch_formula(x, p["gamma"], p["beta"], groups, 1e-3),
                                   rtol=1e-12, atol=1e-12, err_msg=nn.describe(layer))


def _peer_params(seed=4, c=6):
    return {"gamma": np.asarray(randn((c,), seed)), "beta": np.asarray(randn((c,), seed + 1))}


def test_equals_flax_group_norm_and_instance_norm():
    fnn = pytest.importorskip("flax.linen")
    x = randn((2, 3, 4, 6), seed=5, scale=2.0, shift=1.0)
    p = _peer_params()
    variables = {"params": {"scale": jnp.asarray(p["gamma"]), "bias": jnp.asarray(p["beta"])}}
    pairs = [(nn.GroupNorm(3), fnn.GroupNorm(num_groups=3, epsilon=1e-5, param_dtype=F64)),
             (nn.GroupNorm(None, group_size=2),
              fnn.GroupNorm(num_groups=None, group_size=2, epsilon=1e-5, param_dtype=F64)),
             (nn.InstanceNorm(), fnn.InstanceNorm(epsilon=1e-5, param_dtype=F64))]
    for ours, theirs in pairs:
        with jax.numpy_dtype_promotion("standard"):        # Flax mixes in float32 constants
            assert theirs.init(KEY, x)["params"]["scale"].shape == (6,)
            want = theirs.apply(variables, x)
        np.testing.assert_allclose(ours.apply(p, (), x)[0], want,
                                   rtol=1e-9, atol=1e-9, err_msg=nn.describe(ours))


def test_equals_equinox_and_torch_group_norm():
    eqx = pytest.importorskip("equinox")
    torch = pytest.importorskip("torch")
    x = randn((2, 3, 4, 6), seed=6, scale=2.0, shift=1.0)
    p = _peer_params(7)
    ours = nn.GroupNorm(3).apply(p, (), x)[0]
    gn = eqx.nn.GroupNorm(3, 6)
    gn = eqx.tree_at(lambda m: (m.weight, m.bias), gn,
                     (jnp.asarray(p["gamma"]), jnp.asarray(p["beta"])))
    theirs = jax.vmap(gn)(jnp.moveaxis(x, -1, 1))              # one (C, H, W) example each
    np.testing.assert_allclose(ours, jnp.moveaxis(theirs, 1, -1), rtol=1e-10, atol=1e-12)
    tensor = lambda a: torch.from_numpy(np.array(a))  # noqa: E731  (a writable copy)
    t = torch.nn.functional.group_norm(tensor(np.moveaxis(np.asarray(x), -1, 1)), 3,
                                       tensor(p["gamma"]), tensor(p["beta"]), eps=1e-5)
    np.testing.assert_allclose(ours, np.moveaxis(t.numpy(), 1, -1), rtol=1e-10, atol=1e-12)


def test_promotion_to_the_common_dtype():
    p = abstract_init(nn.GroupNorm(2, dtype=jnp.float32), (-1, 3, 4))[1]
    assert p["gamma"].dtype == p["beta"].dtype == jnp.float32
    p = {"gamma": jnp.ones(4, jnp.float32), "beta": jnp.zeros(4, jnp.float32)}
    assert nn.GroupNorm(2).apply(p, (), randn((2, 3, 4), 8))[0].dtype == F64
    y = nn.InstanceNorm().apply(p, (), randn((2, 3, 4), 8).astype(jnp.bfloat16))[0]
    assert y.dtype == jnp.float32


@pytest.mark.parametrize("layer, params, x, exc, match", [
    (nn.GroupNorm(4), {"gamma": np.ones(6), "beta": np.zeros(6)}, randn((2, 3, 6)),
     ValueError, r"^GroupNorm: group_norm: x has shape \(2, 3, 6\), expected a number of "
     r"channels \(last axis\) divisible by num_groups=4"),
    (nn.GroupNorm(None, group_size=4), {"gamma": np.ones(6), "beta": np.zeros(6)},
     randn((2, 3, 6)), ValueError, r"^GroupNorm: x has shape \(2, 3, 6\), expected a number "
     r"of channels \(last axis\) divisible by group_size=4"),
    (nn.GroupNorm(2), {"gamma": np.ones(4), "beta": np.zeros(4)}, randn((2, 3, 6)),
     ValueError, r"^GroupNorm: group_norm: gamma has shape \(4,\), expected \(6,\)"),
    (nn.InstanceNorm(), {"gamma": np.ones(6), "beta": np.zeros(6)}, randn((6,)), ValueError,
     r"^InstanceNorm: group_norm: x has shape \(6,\), expected rank >= 2"),
    (nn.InstanceNorm(), {"gamma": np.ones(6)}, randn((2, 6)), ValueError,
     r"^InstanceNorm: params must be a dict with keys \['beta', 'gamma'\]"),
])
def test_apply_errors_eagerly_and_under_jit(layer, params, x, exc, match):
    for fn in (layer.apply, jax.jit(layer.apply)):
        with pytest.raises(exc, match=match):
            fn(params, (), x)


def test_construction_and_init_errors():
    for kw in ({"group_size": 2}, {"num_groups": None}):
        with pytest.raises(ValueError, match=r"^GroupNorm: give exactly one of num_groups and "
                                             r"group_size, got num_groups="):
            nn.GroupNorm(**kw)
    with pytest.raises(ValueError, match=r"^GroupNorm: num_groups must be >= 1, got 0"):
        nn.GroupNorm(0)
    with pytest.raises(TypeError, match=r"^GroupNorm: group_size must be an int, got float"):
        nn.GroupNorm(None, group_size=2.0)
    with pytest.raises(ValueError, match=r"^InstanceNorm: eps must be in \[0, inf\), got -1"):
        nn.InstanceNorm(-1.0)
    with pytest.raises(TypeError, match=r"^GroupNorm: use_scale must be a bool"):
        nn.GroupNorm(use_scale=1)
    with pytest.raises(ValueError, match=r"^GroupNorm: input_shape \(6,\) has rank 1, "
                                         r"expected rank >= 2 \(N, \.\.\., C\)$"):
        nn.GroupNorm(2).init(KEY, (6,))
    with pytest.raises(ValueError, match=r"^GroupNorm: group_norm: x has shape \(1, 4, 6\), "
                                         r"expected a number of channels"):
        nn.GroupNorm(4).init(KEY, (-1, 4, 6))


def _resnet_gn():
    conv = lambda: nn.Conv2D(4, 3, padding="SAME", dtype=F64)  # noqa: E731
    return nn.serial(conv(), nn.GroupNorm(2, dtype=F64), nn.ReLU(),
                     nn.Residual(nn.serial(conv(), nn.GroupNorm(2, dtype=F64), nn.ReLU())),
                     nn.GlobalAvgPool2D(), nn.Dense(3, dtype=F64))


def test_resnet_gn_block_gradients_equal_the_twins_and_it_trains():
    """Conv2D -> GroupNorm -> ReLU with a Residual block: the model's gradient equals the
    one of the same model in ``ops.reference_mode()`` (autodiff of every twin), and a few
    ``make_train_step`` steps fit six examples."""
    model = _resnet_gn()
    _, params, state = numpy_init(model, (-1, 4, 4, 2))
    x, y = randn((6, 4, 4, 2), 9), jnp.asarray(np.arange(6) % 3, jnp.int32)

    def loss(p):
        return ops.softmax_cross_entropy(model.apply(p, state, x)[0], y)

    @jax.jit
    def grads(p):
        with ops.reference_mode():
            want = jax.grad(loss)(p)
        return jax.grad(loss)(p), want

    got, want = grads(params)
    assert_close(got, want, 1e-10, "ResNet-GN grads vs reference_mode")
    opt = optim.adam(5e-2)
    step = train.make_train_step(model, opt, donate=False)
    opt_state, losses = opt.init(params), []
    for _ in range(15):
        params, state, opt_state, m = step(params, state, opt_state, x, y)
        losses.append(float(m["loss"]))
    assert losses[-1] < 0.6 * losses[0], losses
