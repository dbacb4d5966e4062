"""LayerNorm and RMSNorm layers: shape agreement, params, values and gradients against the
reference twins, promotion, errors (the op's, prefixed with the layer's name)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from funcnet.gradcheck import assert_close
from funcnet.ops import reference as R
from tests.nn._models import abstract_init, jit_init, randn, struct, trace_apply

F64 = jnp.float64
KEY = jax.random.PRNGKey(0)

SHAPE_CASES = [
    (nn.LayerNorm(dtype=F64), (-1, 6)),
    (nn.LayerNorm(1e-3, use_scale=False, dtype=F64), (-1, 3, 5)),
    (nn.LayerNorm(use_bias=False, dtype=F64), (4,)),
    (nn.RMSNorm(dtype=F64), (-1, 2, 2, 3)),
    (nn.RMSNorm(use_scale=False, dtype=F64), (5,)),
]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layer,in_shape", SHAPE_CASES,
                         ids=[f"{c[0].name}{c[1]}-{i}" for i, c in enumerate(SHAPE_CASES)])
def test_shape_agreement(layer, in_shape, batch):
    out_shape, params, state = abstract_init(layer, in_shape)
    assert out_shape == in_shape and state == ()
    concrete = tuple(batch if d == -1 else d for d in in_shape)
    y, new_state = trace_apply(layer, params, state, struct(concrete, F64))
    assert y.shape == concrete and y.dtype == F64 and new_state == ()


def test_params_and_values_match_the_ops():
    x = np.asarray(randn((4, 3, 5), seed=1, scale=2.0, shift=1.0))
    _, p, _ = jit_init(nn.LayerNorm(dtype=F64), (-1, 3, 5), KEY)
    assert set(p) == {"gamma", "beta"}
    np.testing.assert_array_equal(p["gamma"], np.ones(5))
    np.testing.assert_array_equal(p["beta"], np.zeros(5))
    assert set(jit_init(nn.LayerNorm(use_scale=False), (2, 5), KEY)[1]) == {"beta"}
    assert jit_init(nn.RMSNorm(use_scale=False), (2, 5), KEY)[1] == {}
    p = {"gamma": np.asarray(randn((5,), 2)), "beta": np.asarray(randn((5,), 3))}
    y, _ = nn.LayerNorm(1e-3).apply(p, (), x)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(y, (x - mu) / np.sqrt(var + 1e-3) * p["gamma"] + p["beta"],
                               rtol=1e-12)
    y, _ = nn.RMSNorm().apply({"gamma": p["gamma"]}, (), x)
    np.testing.assert_allclose(y, x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6)
                               * p["gamma"], rtol=1e-12)


def test_model_gradients_equal_the_reference():
    """Dense -> LayerNorm -> Dense -> RMSNorm: layer gradients == autodiff of the twins."""
    model = nn.serial(nn.Dense(6, dtype=F64), nn.LayerNorm(dtype=F64), nn.Dense(4, dtype=F64),
                      nn.RMSNorm(dtype=F64))
    _, params, state = jit_init(model, (-1, 3), KEY)
    params = jax.tree_util.tree_map(lambda a: a + 0.1 * randn(a.shape, 4), params)
    x = randn((5, 3), seed=5)

    def ref(p, x):
        h = R.layer_norm(R.affine(x, p[0]["w"], p[0]["b"]), p[1]["gamma"], p[1]["beta"])
        return R.rms_norm(R.affine(h, p[2]["w"], p[2]["b"]), p[3]["gamma"])

    def loss(f):
        return lambda p: jnp.sum(jnp.sin(f(p, x)))

    run = jax.jit(lambda p: [jax.grad(loss(f))(p) for f in
                             (lambda p, x: model.apply(p, state, x)[0], ref)])
    got, want = run(params)
    assert_close(got, want, 1e-10, "model grads")


def test_promotion_to_the_common_dtype():
    _, p, _ = jit_init(nn.LayerNorm(dtype=jnp.float32), (-1, 4), KEY)
    y, _ = nn.LayerNorm().apply(p, (), randn((2, 4), 6))
    assert p["gamma"].dtype == jnp.float32 and y.dtype == F64
    y, _ = nn.LayerNorm().apply(p, (), randn((2, 4), 6).astype(jnp.bfloat16))
    assert y.dtype == jnp.float32


@pytest.mark.parametrize("layer, params, x, exc, match", [
    (nn.LayerNorm(), {"gamma": np.ones(6), "beta": np.zeros(6)}, randn((2, 5)), ValueError,
     r"^LayerNorm: layer_norm: gamma has shape \(6,\), expected \(5,\) \(one per feature "
     r"of x \(2, 5\)\)"),
    (nn.LayerNorm(), {"gamma": np.ones(5)}, randn((2, 5)), ValueError,
     r"^LayerNorm: params must be a dict with keys \['beta', 'gamma'\], got a dict with "
     r"keys \['gamma'\]"),
    (nn.RMSNorm(), {"gamma": np.ones(5)}, np.ones((2, 5), np.int32), TypeError,
     r"^RMSNorm: x must have a floating dtype, got int32"),
    (nn.RMSNorm(), {"gamma": np.ones((1, 5))}, randn((2, 5)), ValueError,
     r"^RMSNorm: params\['gamma'\] has shape \(1, 5\), expected \(\*,\)"),
])
def test_apply_errors_eagerly_and_under_jit(layer, params, x, exc, match):
    for fn in (layer.apply, jax.jit(layer.apply)):
        with pytest.raises(exc, match=match):
            fn(params, (), x)


def test_construction_and_init_errors():
    with pytest.raises(ValueError, match=r"LayerNorm: eps must be in \[0, inf\), got -1"):
        nn.LayerNorm(-1.0)
    with pytest.raises(TypeError, match=r"RMSNorm: use_scale must be a bool, got int 1"):
        nn.RMSNorm(use_scale=1)
    with pytest.raises(TypeError, match=r"LayerNorm: scale_init must be callable"):
        nn.LayerNorm(scale_init=1.0)
    with pytest.raises(ValueError, match=r"LayerNorm: input_shape \(\) has rank 0, expected "
                                         r"rank >= 1 \(\.\.\., F\)$"):
        nn.LayerNorm().init(KEY, ())
