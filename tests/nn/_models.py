"""Models shared by the funcnet.nn tests, each with a twin written with funcnet.ops.reference.

The twins spell out, layer by layer, what the ``serial`` model must compute (same params,
same key splitting), so gradients of the two can be compared to 1e-10 in float64.
"""
import jax
import jax.numpy as jnp
import numpy as np

from funcnet import nn
from funcnet.ops import reference as R

F64 = jnp.float64
EPS = 1e-5


def randn(shape, seed=0, scale=1.0, shift=0.0):
    """float64 normal test data from NumPy (no XLA compile per shape, unlike jax.random)."""
    rng = np.random.default_rng(seed)
    return jnp.asarray(shift + scale * rng.standard_normal(shape), F64)


def randint(shape, high, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, high, shape), jnp.int32)


def mlp(dtype=F64, rate=0.5, momentum=0.9):
    """784-100-100-10 with BatchNorm and Dropout (9 layers)."""
    return nn.serial(
        nn.Dense(100, dtype=dtype), nn.BatchNorm(momentum, dtype=dtype), nn.ReLU(),
        nn.Dropout(rate),
        nn.Dense(100, dtype=dtype), nn.BatchNorm(momentum, dtype=dtype), nn.ReLU(),
        nn.Dropout(rate),
        nn.Dense(10, dtype=dtype))


def _ref_bn(h, p, s, train, momentum):
    if train:
        y, mu, var = R.batch_norm(h, p["gamma"], p["beta"], eps=EPS)
        s = {"mean": momentum * s["mean"] + (1 - momentum) * mu,
             "var": momentum * s["var"] + (1 - momentum) * var}
        return y, s
    inv = 1.0 / jnp.sqrt(s["var"] + EPS)
    y = (h - s["mean"][None, :]) * (p["gamma"] * inv)[None, :] + p["beta"][None, :]
    return y, s


def ref_mlp(params, state, x, key=None, train=False, rate=0.5, momentum=0.9):
    """The MLP above written directly with the reference ops."""
    keys = jax.random.split(key, 9) if key is not None else [None] * 9
    new_state = list(state)
    h = x
    for d, bn, dr in ((0, 1, 3), (4, 5, 7)):
        h = R.affine(h, params[d]["w"], params[d]["b"])
        h, new_state[bn] = _ref_bn(h, params[bn], state[bn], train, momentum)
        h = R.relu(h)
        if train:
            h = R.dropout(h, rate, keys[dr])
    h = R.affine(h, params[8]["w"], params[8]["b"])
    return h, tuple(new_state)


def cnn(dtype=F64):
    """The book's CNN (note 003 §7): conv-relu-pool, affine-relu, affine."""
    return nn.serial(nn.Conv2D(30, 5, dtype=dtype), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(),
                     nn.Dense(100, dtype=dtype), nn.ReLU(), nn.Dense(10, dtype=dtype))


def ref_cnn(params, x):
    h = R.conv2d(x, params[0]["w"], params[0]["b"], stride=1, padding=0)
    # Max-pool ties only occur among ReLU zeros, whose gradient is 0 whichever element the
    # tie rule picks, so autodiff of the reference agrees with funcnet's first-max rule.
    h = R.max_pool2d(R.relu(h), window=2)
    h = h.reshape(h.shape[0], -1)
    h = R.relu(R.affine(h, params[4]["w"], params[4]["b"]))
    return R.affine(h, params[6]["w"], params[6]["b"])


def abstract_init(model, input_shape, key=None):
    """``model.init`` traced with ``jax.eval_shape``: params/state as ShapeDtypeStructs.

    Error tests only need the shapes, and tracing instead of running keeps them fast while
    proving that the checks fire at trace time.
    """
    out = {}

    def f(k):
        out["shape"], p, s = model.init(k, input_shape)
        return p, s

    params, state = jax.eval_shape(f, jax.random.PRNGKey(0) if key is None else key)
    return out["shape"], params, state


def trace_apply(model, params, state, x, **kw):
    """``model.apply`` under ``jax.eval_shape`` (x: an array or a ShapeDtypeStruct)."""
    return jax.eval_shape(lambda p, s, x: model.apply(p, s, x, **kw), params, state, x)


def struct(shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


def jit_init(model, input_shape, key):
    """``model.init`` as ONE compiled program (eager init would compile every random op
    separately, which dominates the run time of small tests on CPU)."""
    out = {}

    def f(k):
        out["shape"], p, s = model.init(k, input_shape)
        return p, s

    params, state = jax.jit(f)(key)
    return out["shape"], params, state


def random_params(layer, input_shape, seed):
    """Random float64 params of ``layer``: the shapes from its init traced abstractly, the
    values ``randn`` drawn leaf by leaf in sorted-key order from ``seed`` on."""
    _, p, _ = abstract_init(layer, input_shape)
    return {k: randn(v.shape, seed=seed + i) for i, (k, v) in enumerate(sorted(p.items()))}


def numpy_init(model, input_shape, seed=0):
    """``(output_shape, params, state)`` with random params drawn by NumPy.

    For tests about what a model computes, not about its initializers: the shapes come
    from ``model.init`` traced abstractly, the values from NumPy (weights ``N(0,
    1/fan_in)``, vectors ``N(0, 0.1^2)``), so no random-number program is compiled. State
    leaves named ``var`` are ones, other state leaves zeros (batch norm's initial state).
    """
    out_shape, params, state = abstract_init(model, input_shape)
    leaves, tree = jax.tree_util.tree_flatten(params)
    filled = [randn(a.shape, seed + i, scale=(1 / np.sqrt(np.prod(a.shape[:-1]))
                                              if len(a.shape) > 1 else 0.1)).astype(a.dtype)
              for i, a in enumerate(leaves)]

    def initial(path, a):
        is_var = getattr(path[-1], "key", None) == "var"
        return (jnp.ones if is_var else jnp.zeros)(a.shape, a.dtype)
    return (out_shape, jax.tree_util.tree_unflatten(tree, filled),
            jax.tree_util.tree_map_with_path(initial, state))
