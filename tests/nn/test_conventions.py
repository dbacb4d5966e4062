"""JAX's conventions in funcnet.nn: ``dtype=None`` follows ``jax_enable_x64`` (resolved at
init time), params and input promote like Flax, any ``jax.nn.initializers`` initializer
works as ``w_init``, and funcnet's initializers that share a name with JAX's draw the same
numbers where they are the same distribution."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from funcnet.nn import initializers as I

KEY = jax.random.PRNGKey(0)
F32, F64, BF16 = jnp.float32, jnp.float64, jnp.bfloat16


def _leaves_dtypes(tree):
    return {a.dtype for a in jax.tree_util.tree_leaves(tree)}


def _abstract_init(layer, shape):
    """``init``'s params and state as ShapeDtypeStructs (dtypes without computing)."""
    return jax.eval_shape(lambda k: layer.init(k, shape)[1:], KEY)


def test_default_dtype_follows_x64_like_stax_flax_equinox():
    """x64 is on in the test session: ``nn.Dense(3)`` makes float64 params and runs on a
    float64 input (it refused it before the second stage)."""
    layer = nn.Dense(3)
    _, p, _ = layer.init(KEY, (-1, 4))
    assert _leaves_dtypes(p) == {np.dtype(F64)}
    y, _ = layer.apply(p, (), jnp.ones((2, 4), F64))
    assert y.dtype == F64
    model = nn.serial(nn.Conv2D(2, 3), nn.BatchNorm(), nn.ReLU())
    assert _leaves_dtypes(_abstract_init(model, (-1, 5, 5, 1))) == {np.dtype(F64)}


def test_dtype_none_is_resolved_at_init_not_construction():
    layer = nn.serial(nn.Dense(3), nn.BatchNorm())      # built with x64 on
    with jax.enable_x64(False):
        assert _leaves_dtypes(_abstract_init(layer, (-1, 4))) == {np.dtype(F32)}
    assert _leaves_dtypes(_abstract_init(layer, (-1, 4))) == {np.dtype(F64)}


@pytest.mark.parametrize("param,inp,out", [(F32, F64, F64), (F64, F32, F64), (BF16, BF16, BF16),
                                           (BF16, F32, F32), (F32, BF16, F32)])
def test_params_and_input_promote_like_flax(param, inp, out):
    layers = [(nn.Dense(3, dtype=param), (-1, 4), (2, 4)),
              (nn.Conv2D(2, 3, dtype=param), (-1, 5, 5, 2), (2, 5, 5, 2)),
              (nn.BatchNorm(dtype=param), (-1, 4), (3, 4)),
              (nn.RNN(3, dtype=param), (2, -1, 4), (2, 3, 4)),
              (nn.Conv1D(2, 3, dtype=param), (-1, 5, 2), (2, 5, 2)),
              (nn.GroupNorm(2, dtype=param), (-1, 3, 4), (2, 3, 4))]
    for layer, in_shape, x_shape in layers:
        p, s = jax.eval_shape(lambda k, layer=layer, in_shape=in_shape: layer.init(
            k, in_shape)[1:], KEY)
        assert _leaves_dtypes((p, s)) == {np.dtype(param)}, layer.name
        for train in (False, True):
            y, s2 = jax.eval_shape(lambda p, s, x, layer=layer: layer.apply(p, s, x, train=train),
                                   p, s, jax.ShapeDtypeStruct(x_shape, inp))
            assert y.dtype == out, (layer.name, train)
            assert jax.tree_util.tree_map(lambda a: a.dtype, s2) == \
                jax.tree_util.tree_map(lambda a: a.dtype, s), layer.name   # state keeps dtype


def test_promotion_values_and_gradients():
    """float32 params on a float64 input compute in float64; the params' gradient comes
    back in float32 (the cast is differentiated), as in Flax."""
    layer = nn.Dense(3, dtype=F32)
    p = {"w": jnp.linspace(-1, 1, 12, dtype=F32).reshape(4, 3), "b": jnp.ones(3, F32)}
    x = jnp.linspace(-1, 1, 8, dtype=F64).reshape(2, 4)
    y, _ = layer.apply(p, (), x)
    expected = x @ p["w"].astype(F64) + p["b"].astype(F64)[None, :]
    np.testing.assert_allclose(y, expected, rtol=1e-14)
    g = jax.grad(lambda p: jnp.sum(layer.apply(p, (), x)[0]))(p)
    assert _leaves_dtypes(g) == {np.dtype(F32)}
    np.testing.assert_allclose(g["w"], np.broadcast_to(np.asarray(x.sum(0))[:, None], (4, 3)),
                               rtol=1e-6)
    # bfloat16 end to end: params, input and output stay bfloat16
    layer = nn.Dense(3, dtype=BF16)
    p = jax.tree_util.tree_map(lambda a: a.astype(BF16), p)
    y, _ = layer.apply(p, (), x.astype(BF16))
    assert y.dtype == BF16
    np.testing.assert_allclose(np.asarray(y, np.float64),
                               np.asarray(x.astype(BF16), np.float64) @ np.asarray(p["w"],
                                                                                   np.float64)
                               + 1.0, rtol=0.02, atol=0.02)


def _jax_initializer(name):
    """Every public initializer of ``jax.nn.initializers`` with typical arguments."""
    make = getattr(jax.nn.initializers, name)
    args = {"constant": (0.3,), "variance_scaling": (1.5, "fan_avg", "uniform")}
    return make if name in ("zeros", "ones") else make(*args.get(name, ()))


JAX_INITS = sorted(n for n in dir(jax.nn.initializers)
                   if not n.startswith("_") and n != "Initializer")


ELEMENTWISE = ("constant", "normal", "ones", "truncated_normal", "uniform", "zeros")


@pytest.mark.parametrize("name", JAX_INITS)
def test_any_jax_initializer_works_as_w_init(name):
    """Each one builds the kernel of Dense (of Conv2D for ``delta_orthogonal``, which needs
    a convolution kernel) with exactly the numbers it draws itself; the shape-agnostic ones
    also serve as ``b_init``."""
    init = _jax_initializer(name)
    b_init = init if name in ELEMENTWISE else nn.initializers.zeros
    conv = name == "delta_orthogonal"
    layer, in_shape, shape = ((nn.Conv2D(4, 3, w_init=init), (-1, 6, 6, 2), (3, 3, 2, 4)) if conv
                              else (nn.Dense(4, w_init=init, b_init=b_init), (-1, 3), (3, 4)))
    _, p, _ = layer.init(KEY, in_shape)
    kw, kb = jax.random.split(KEY)
    assert p["w"].dtype == F64 and p["w"].shape == shape
    np.testing.assert_array_equal(p["w"], init(kw, shape, F64))
    np.testing.assert_array_equal(p["b"], (init if conv else b_init)(kb, (4,), F64)
                                  if not conv else np.zeros(4))


@pytest.mark.parametrize("ours,theirs", [
    (I.normal(0.3), jax.nn.initializers.normal(0.3)),
    (I.uniform(0.3), jax.nn.initializers.uniform(0.3)),
    (I.truncated_normal(0.3), jax.nn.initializers.truncated_normal(0.3)),
    (I.orthogonal(2.0), jax.nn.initializers.orthogonal(2.0)),
    (I.constant(0.5), jax.nn.initializers.constant(0.5)),
    (I.zeros, jax.nn.initializers.zeros),
    (I.ones, jax.nn.initializers.ones),
], ids=["normal", "uniform", "truncated_normal", "orthogonal", "constant", "zeros", "ones"])
def test_same_names_draw_the_same_numbers_as_jax(ours, theirs):
    np.testing.assert_array_equal(ours(KEY, (5, 3), F64), theirs(KEY, (5, 3), F64))
    assert jax.eval_shape(lambda k: ours(k, (2, 2)), KEY).dtype == F64   # None: default


def test_initializers_are_factories_with_the_jax_signature():
    for make in (I.he_normal, I.he_uniform, I.xavier_normal, I.xavier_uniform, I.glorot_normal,
                 I.lecun_normal, I.lecun_uniform, I.normal, I.uniform, I.truncated_normal,
                 I.orthogonal):
        init = make()
        assert jax.eval_shape(lambda k: init(k, (3, 4), F32), KEY).dtype == F32
        assert jax.eval_shape(lambda k: init(k, (3, 4)), KEY).dtype == F64
        with jax.enable_x64(False):                           # resolved when called
            assert jax.eval_shape(lambda k: init(k, (3, 4)), KEY).dtype == F32


def _doc(fn):
    return " ".join(fn.__doc__.split())


def _default(fn, arg):
    import inspect
    return inspect.signature(fn).parameters[arg].default


def test_defaults_that_differ_from_flax_are_stated_in_the_docstrings():
    """The defaults are fixed (DESIGN, checkpoints); each docstring says what it is and
    what Flax's is, and the BatchNorm docstring no longer suggests Keras's default."""
    assert _default(nn.BatchNorm, "momentum") == 0.9
    bn = _doc(nn.BatchNorm)
    assert "as in the book's ``BatchNormalization`` and Keras" not in bn
    assert "default to 0.99" in bn and "PyTorch's default (``momentum=0.1``)" in bn
    assert _default(nn.Conv2D, "padding") == 0 == _default(nn.Conv1D, "padding")
    assert "Flax's ``Conv`` defaults to ``'SAME'``" in _doc(nn.Conv2D)
    assert "(``'VALID'``; Flax: ``'SAME'``)" in _doc(nn.Conv1D)
    assert "Flax's ``Dense`` defaults to LeCun normal truncated" in _doc(nn.Dense)
    assert "Flax's ``Conv`` defaults to LeCun normal truncated" in _doc(nn.Conv2D)
    assert "Flax's ``GRUCell`` has no recurrent ``r``/``z`` bias" in _doc(nn.GRU)
    mha = _doc(nn.MultiHeadAttention)
    assert "broadcast_dropout=True" in mha and "packed ``(3D, F)`` in-projection" in mha


def test_gru_equals_flax_layout_when_the_redundant_recurrent_biases_are_zero():
    """What the GRU docstring says: Flax's ``GRUCell`` (biases ``ir``, ``iz``, ``in`` on
    the input, ``hn`` on the recurrent candidate) is this layer with ``bh[:2H] = 0``."""
    T, N, D, H = 3, 2, 2, 3
    layer = nn.GRU(H)
    _, p, _ = layer.init(KEY, (T, -1, D))
    rng = np.random.default_rng(0)
    p = {k: jnp.asarray(rng.standard_normal(v.shape)) for k, v in p.items()}
    p["bh"] = p["bh"].at[:2 * H].set(0.0)
    xs = jnp.asarray(rng.standard_normal((T, N, D)))
    h, outs = jnp.zeros((N, H)), []
    for x in xs:   # Flax's GRUCell, written out
        gx, gh = x @ p["wx"] + p["bx"][None], h @ p["wh"]
        r = jax.nn.sigmoid(gx[:, :H] + gh[:, :H])
        z = jax.nn.sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
        n = jnp.tanh(gx[:, 2 * H:] + r * (gh[:, 2 * H:] + p["bh"][None, 2 * H:]))
        h = (1 - z) * n + z * h
        outs.append(h)
    np.testing.assert_allclose(layer.apply(p, (), xs)[0], jnp.stack(outs), rtol=1e-12)
