"""Random float64 inputs for the core ops, shared by the core-op test modules."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet.gradcheck import assert_close


def on_cpu(f, *args):
    """``jax.jit(f)(*args)`` on the CPU (give NumPy arguments), for a reference whose own
    autodiff loses precision on an accelerator: JAX's second derivative of
    ``lax.reduce_window`` max packs each (value, tangent) pair into one 64-bit word off
    CPU and so rounds float64 to float32's mantissa (it warns "Using reduced precision
    for gradient of reduce-window min/max"); on an H200 that differed from funcnet's exact
    rule by 2e-7. On a CPU backend this is a plain ``jax.jit``."""
    with jax.default_device(jax.devices("cpu")[0]):
        return jax.jit(f)(*args)


def rand(shape, seed=0, dtype=np.float64):
    """Standard-normal NumPy array (no JAX compilation, unlike a new jax.random shape)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def normal(seed, shape, scale=1.0, dtype=jnp.float64):
    return jnp.asarray(rand(shape, seed) * scale, dtype)


def uniform(seed, shape, low, high, dtype=jnp.float64):
    return jnp.asarray(np.random.default_rng(seed).uniform(low, high, size=shape), dtype)


def labels(seed, shape, num_classes):
    return jnp.asarray(np.random.default_rng(seed).integers(0, num_classes, size=shape), jnp.int32)


def probs(seed, shape):
    return jax.nn.softmax(normal(seed, shape), axis=-1)


def channels_first_classes(seed):
    """Classes on axis 1 of ``(N, C, T) = (3, 5, 4)`` logits (optax's ``axis=1``):
    ``(x, y, t, classes, rows)`` -- logits, index labels ``(3, 4)``, probability labels,
    a mask of classes of the logits' shape (every label's class kept, one row with every
    class masked) and a mask of rows ``(3, 4)`` (padding)."""
    rng = np.random.default_rng(seed)
    x, y = normal(seed + 1, (3, 5, 4), 2.0), labels(seed + 2, (3, 4), 5)
    t = jax.nn.softmax(normal(seed + 3, (3, 5, 4)), axis=1)
    classes = rng.random((3, 5, 4)) > 0.3
    classes[np.arange(3)[:, None], np.asarray(y), np.arange(4)[None, :]] = True
    classes[1, :, 2] = False
    rows = np.array([[True, True, False, True], [False, True, True, True],
                     [True, False, True, False]])
    return x, y, t, classes, rows


# (id, op name, args factory): every op is checked against its reference twin.
CORE_CASES = [
    ("matmul_2d", "matmul", lambda: (normal(0, (5, 4)), normal(1, (4, 3)))),
    ("matmul_3d", "matmul", lambda: (normal(2, (2, 3, 4)), normal(3, (4, 6)))),
    ("matmul_1row", "matmul", lambda: (normal(4, (1, 7)), normal(5, (7, 2)))),
    ("affine_2d", "affine", lambda: (normal(6, (5, 4)), normal(7, (4, 3)), normal(8, (3,)))),
    ("affine_4d", "affine", lambda: (normal(9, (2, 3, 2, 4)), normal(10, (4, 5)), normal(11, (5,)))),
    ("affine_vector", "affine", lambda: (normal(12, (4,)), normal(13, (4, 3)), normal(14, (3,)))),
    ("relu", "relu", lambda: (normal(15, (4, 6)),)),
    ("sigmoid", "sigmoid", lambda: (normal(16, (4, 6), 3.0),)),
    ("tanh", "tanh", lambda: (normal(17, (4, 6), 2.0),)),
    ("softmax", "softmax", lambda: (normal(18, (4, 6), 3.0),)),
    ("softmax_rank3", "softmax", lambda: (normal(19, (2, 3, 5)),)),
    ("log_softmax", "log_softmax", lambda: (normal(20, (4, 6), 3.0),)),
    ("sce_index", "softmax_cross_entropy", lambda: (normal(21, (6, 5), 2.0), labels(22, (6,), 5))),
    ("sce_probs", "softmax_cross_entropy", lambda: (normal(23, (6, 5), 2.0), probs(24, (6, 5)))),
    ("sce_unnormalised", "softmax_cross_entropy",
     lambda: (normal(25, (3, 4)), uniform(26, (3, 4), 0.0, 1.0))),
    ("sce_batch1", "softmax_cross_entropy", lambda: (normal(27, (1, 5)), labels(28, (1,), 5))),
    ("sce_seq", "softmax_cross_entropy", lambda: (normal(29, (3, 2, 4)), labels(30, (3, 2), 4))),
    ("ce_index", "cross_entropy", lambda: (probs(31, (6, 5)), labels(32, (6,), 5))),
    ("ce_probs", "cross_entropy", lambda: (probs(33, (6, 5)), probs(34, (6, 5)))),
    ("bce", "binary_cross_entropy", lambda: (uniform(35, (5, 3), 0.05, 0.95),
                                             uniform(36, (5, 3), 0.0, 1.0))),
    ("sigmoid_bce", "sigmoid_binary_cross_entropy",
     lambda: (normal(37, (5, 3), 3.0), uniform(38, (5, 3), 0.0, 1.0))),
    ("mse", "mean_squared_error", lambda: (normal(39, (5, 3)), normal(40, (5, 3)))),
    ("hinge", "multiclass_hinge", lambda: (normal(41, (8, 5)), labels(42, (8,), 5))),
    ("hinge_margin", "multiclass_hinge",
     lambda: (normal(43, (8, 5)), labels(44, (8,), 5), jnp.asarray(0.5, jnp.float64))),
    ("l2", "l2_penalty", lambda: ({"w": normal(45, (3, 4)), "b": (normal(46, (4,)),)},
                                  jnp.asarray(0.1, jnp.float64))),
    ("batch_norm_2d", "batch_norm", lambda: (normal(47, (6, 4), 2.0), normal(48, (4,)),
                                             normal(49, (4,)))),
    ("batch_norm_nhwc", "batch_norm", lambda: (normal(50, (2, 3, 3, 4)), normal(51, (4,)),
                                               normal(52, (4,)))),
    ("batch_norm_batch2", "batch_norm", lambda: (normal(53, (2, 3)), normal(54, (3,)),
                                                 normal(55, (3,)))),
]


def assert_raises_everywhere(call, args, exc, match):
    """``call(*args)`` raises ``exc`` matching ``match`` eagerly, under ``jax.jit`` and in
    ``ops.reference_mode()`` (the twin checks too): an op's error-table test."""
    from funcnet import ops
    for fn in (call, jax.jit(call)):
        with pytest.raises(exc, match=match):
            fn(*args)
    with ops.reference_mode(), pytest.raises(exc, match=match):
        jax.jit(call)(*args)


PEER_RTOL = {jnp.float64: 1e-14, jnp.float32: 1e-6, jnp.bfloat16: 1e-2}


def assert_equal_peers(cases, x):
    """Every ``(id, op, peer)`` of ``cases``: ``op(x)`` and the gradient of ``sum(sin(op))``
    equal ``peer``'s (e.g. the ``jax.nn`` function of the same name), in ``x``'s dtype, to
    :data:`PEER_RTOL` (one jitted program for all the cases)."""
    @jax.jit
    def both(x):
        return [tuple((f(x), jax.grad(lambda v: jnp.sum(jnp.sin(f(v))))(x))
                      for f in (op, peer)) for _, op, peer in cases]

    rtol = PEER_RTOL[jnp.dtype(x.dtype).type]
    for (case_id, *_), ((y, g), (y_ref, g_ref)) in zip(cases, both(x)):
        assert y.dtype == x.dtype and g.dtype == x.dtype, case_id
        assert_close(y, y_ref, rtol, f"{case_id} value")
        assert_close(g, g_ref, rtol, f"{case_id} grad")


def assert_second_order_and_vmap(cases, x):
    """Every ``(id, op, twin)`` of elementwise (or last-axis) ops: ``grad(grad)`` and a
    ``vmap(grad)`` over rows ``(x, -x)`` of ``op`` equal the twin's to 1e-10 (the
    hand-written backward rules are differentiable and batchable)."""
    @jax.jit
    def run(x):
        out = []
        for _, *fns in cases:
            per = []
            for f in fns:
                d1 = jax.grad(lambda v: jnp.sum(jnp.sin(f(v))))
                per.append((jax.grad(lambda v: jnp.sum(d1(v) ** 2))(x),
                            jax.vmap(jax.grad(lambda s: jnp.sum(f(s) * s[:1])))(
                                jnp.stack([x, -x], 1))))
            out.append(per)
        return out

    for (case_id, *_), (got, want) in zip(cases, run(x)):
        assert_close(got, want, 1e-10, f"{case_id} grad(grad), vmap(grad)")
