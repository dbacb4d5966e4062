"""``ops.softmax`` / ``ops.log_softmax`` with ``jax.nn``'s ``axis`` (an int, a tuple of
ints, ``None``) and ``where=`` (a bool mask of ``x``'s rank, each size equal or 1).

Values and gradients equal ``jax.nn.softmax`` / ``jax.nn.log_softmax`` (also for a row
with nothing kept: 0 / ``-inf`` with gradient 0, and for ``-inf`` / ``+inf`` entries
inside and outside the mask); the hand-written backward rules match autodiff of the twins
(``funcnet.ops.reference``) and central differences; they stay ``custom_vjp`` rules; jit
and vmap (a mask per example) agree; bad ``axis`` / ``where`` raise matched errors.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as ref
from tests.ops._cases import assert_raises_everywhere, normal

jax.config.update("jax_enable_x64", True)

NAMES = ("softmax", "log_softmax")
X3 = normal(700, (3, 4, 5), 2.0)
X4 = normal(701, (2, 3, 4, 5), 2.0)
RNG = np.random.default_rng(702)
W3 = RNG.random((3, 4, 5)) > 0.35
W3[0, 1, :] = False                      # a row (axis -1) with nothing kept
W3[:, :, 0] = True                       # every (axis 0) and (axes 0, 1) slice keeps one
W3[1, 1:, :] = False                     # a fully masked (axes 1, 2) slice: X3[1]'s rows
W_BCAST = RNG.random((3, 1, 5)) > 0.4    # attention-style (N, 1, T) against (N, H, T)
W_BCAST[2] = False                       # example 2: nothing kept
W4 = RNG.random((2, 1, 4, 5)) > 0.3
W4[0, 0, 2, :] = False                   # a fully masked (axes 1, 3) slice
X_INF = jnp.asarray([[-np.inf, 1.0, 2.0, 0.5],      # -inf inside the mask
                     [np.inf, 1.0, -2.0, 0.5],      # +inf outside the mask: ignored
                     [-np.inf, -np.inf, 3.0, 1.0],  # both kept entries -inf: NaN (jax.nn)
                     [-np.inf, 0.3, np.nan, 1.0]])  # NaN outside the mask: ignored
W_INF = np.array([[True, True, True, False],
                  [False, True, True, True],
                  [True, True, False, False],
                  [True, True, False, True]])

# (id, x, axis, where): axis int / tuple / None, with and without a mask
CASES = [
    ("axis_last", X3, -1, None),
    ("axis0", X3, 0, None),
    ("axis_tuple", X4, (1, 3), None),
    ("axis_tuple_unsorted", X4, (3, 0, 1), None),
    ("axis_none", X3, None, None),
    ("where_last", X3, -1, W3),
    ("where_axis0", X3, 0, W3),
    ("where_tuple", X3, (1, 2), W3),
    ("where_none_axis", X3, None, W3),
    ("where_bcast", X3, -1, W_BCAST),
    ("where_bcast_tuple", X3, (1, 2), W_BCAST),
    ("where_rank4_bcast_tuple", X4, (1, 3), W4),
    ("where_all_false", X3, -1, np.zeros((3, 4, 5), bool)),
    ("where_all_true", X3, (0, 2), np.ones((1, 1, 1), bool)),
]
IDS = [c[0] for c in CASES]


def _call(fn, x, axis, where):
    return fn(x, axis=axis) if where is None else fn(x, axis=axis, where=where)


def _finite(name, where):
    """The op's output with ``log_softmax``'s ``-inf`` outside ``where`` set to 0 (a
    finite value for the output and central-difference checks); softmax unchanged."""
    if name == "softmax" or where is None:
        return lambda y: y
    return lambda y: jnp.where(where, y, 0.0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_values_equal_jax_nn(name, case):
    _, x, axis, where = case
    y = _call(getattr(ops, name), x, axis, where)
    want = _call(getattr(jax.nn, name), x, axis, where)
    assert y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_allclose(y, want, rtol=1e-14, atol=0)
    np.testing.assert_array_equal(_call(getattr(ref, name), x, axis, where), y)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vjp_matches_reference_and_central_differences(name, case):
    _, x, axis, where = case
    fin = _finite(name, where)     # where held fixed in the closures
    check_vjp(lambda v: fin(_call(getattr(ops, name), v, axis, where)),
              lambda v: fin(_call(getattr(ref, name), v, axis, where)), (x,), seed=703)


def _vjps(name, x, axis, where, ct):
    """``(op, twin, jax.nn)``: each ``(y, dx)`` for the cotangent ``ct`` (nonzero also
    outside ``where``, at the ``-inf`` outputs of log_softmax)."""
    out = []
    for fn in (getattr(ops, name), getattr(ref, name), getattr(jax.nn, name)):
        y, vjp = jax.vjp(lambda v, fn=fn: _call(fn, v, axis, where), x)
        out.append((y, vjp(ct)[0]))
    return out


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grads_equal_jax_nn(name, case):
    _, x, axis, where = case
    ct = normal(704, x.shape)
    (y, dx), (_, dx_twin), (_, dx_nn) = _vjps(name, x, axis, where, ct)
    np.testing.assert_allclose(dx, dx_nn, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, dx_twin, rtol=1e-12, atol=1e-14)
    if where is not None:          # the cotangent outside the mask is ignored: dx is 0
        assert np.all(np.where(np.broadcast_to(where, x.shape), True, dx == 0))
    # and so is jax.grad of a scalar through the op
    loss = lambda fn: lambda v: jnp.sum(jnp.sin(_finite(name, where)(_call(fn, v, axis, where))))
    assert_close(jax.grad(loss(getattr(ops, name)))(x), jax.grad(loss(getattr(jax.nn, name)))(x),
                 1e-12, "grad")


@pytest.mark.parametrize("name", NAMES)
def test_fully_masked_row_is_zero_or_minus_inf_with_zero_gradient(name):
    x = normal(705, (3, 4))
    where = np.array([[True, False, True, True], [False] * 4, [True] * 4])
    ct = normal(706, x.shape)
    (y, dx), (_, dx_twin), (y_nn, dx_nn) = _vjps(name, x, -1, where, ct)
    fill = 0.0 if name == "softmax" else -np.inf
    np.testing.assert_array_equal(y[1], np.full(4, fill))
    np.testing.assert_array_equal(y_nn[1], np.full(4, fill))
    np.testing.assert_array_equal(dx[1], np.zeros(4))
    np.testing.assert_array_equal(dx_twin[1], np.zeros(4))
    np.testing.assert_array_equal(dx_nn[1], np.zeros(4))
    assert np.all(np.isfinite(dx)) and np.all(np.isfinite(dx_twin))
    # the kept rows are the unmasked softmax of their kept entries
    kept = getattr(ops, name)(x[0, np.array([0, 2, 3])])
    np.testing.assert_allclose(y[0, np.array([0, 2, 3])], kept, rtol=1e-14)
    assert y[0, 1] == fill and dx[0, 1] == 0


@pytest.mark.parametrize("name", NAMES)
def test_infinite_entries_inside_and_outside_the_mask_equal_jax_nn(name):
    ct = normal(707, X_INF.shape)
    for where in (W_INF, None):
        (y, dx), (y_twin, dx_twin), (y_nn, dx_nn) = _vjps(name, X_INF, -1, where, ct)
        for a, b in ((y, y_nn), (y_twin, y_nn), (dx, dx_nn), (dx_twin, dx_nn)):
            np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)   # NaN where jax.nn's
    (y, dx), *_ = _vjps(name, X_INF, -1, W_INF, ct)
    assert np.all(np.isfinite(y[1])) == (name == "softmax")   # +inf outside: a finite row
    assert np.all(np.isnan(y[2, :2])) and np.all(dx[2, 2:] == 0)  # all kept -inf: NaN
    if name == "log_softmax":                                 # a kept -inf entry: dx = dy
        assert y[0, 0] == -np.inf and dx[0, 0] == ct[0, 0]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", [c for c in CASES if c[0] in (
    "axis_tuple", "axis_none", "where_last", "where_bcast_tuple")], ids=lambda c: c[0])
def test_backward_is_the_custom_vjp_rule(name, case):
    """A ``custom_vjp`` (in the program, no forward mode) whose backward is the
    hand-written rule: ``jax.grad``'s program divides no more than the forward does (the
    rules have no division; autodiff of the twin's ``e / s`` or ``log s`` adds some)."""
    _, x, axis, where = case
    fin = _finite(name, where)

    def loss(fn):
        return lambda v: jnp.sum(jnp.sin(fin(_call(fn, v, axis, where))))

    op, twin = getattr(ops, name), getattr(ref, name)
    forward = str(jax.make_jaxpr(loss(op))(x))
    assert re.search(rf"custom_vjp_call\[\s*name=_{name}\s", forward)
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(loss(op), (x,), (x,))
    divs = [str(jax.make_jaxpr(jax.grad(f))(x)).count(" = div ") for f in (loss(op), loss(twin))]
    assert divs[0] == forward.count(" = div ") < divs[1]


@pytest.mark.parametrize("name", NAMES)
def test_jit_and_vmap_with_per_example_masks_agree(name):
    fn = getattr(ops, name)
    x = X3                                                   # (N, H, T)
    masks = W_BCAST[:, 0, :]                                 # (N, T): one mask per example
    ct = normal(708, x.shape)

    def one(v, m, c):                                        # v (H, T), m (T,): as (1, T)
        y, vjp = jax.vjp(lambda u: fn(u, axis=-1, where=m[None, :]), v)
        return jnp.where(m[None, :], y, 0.0), vjp(c)[0]

    y_v, dx_v = jax.jit(jax.vmap(one))(x, masks, ct)
    for i in range(x.shape[0]):
        y_i, dx_i = one(x[i], masks[i], ct[i])
        assert_close(y_v[i], y_i, 1e-14, "vmap value")
        assert_close(dx_v[i], dx_i, 1e-14, "vmap grad")
    (y, dx), *_ = _vjps(name, x, -1, W_BCAST, ct)             # the batched op itself
    assert_close(y_v, jnp.where(W_BCAST, y, 0.0), 1e-14, "batched value")
    assert_close(dx_v, dx, 1e-14, "batched grad")
    # jit with a traced mask and a static tuple axis
    jitted = jax.jit(lambda v, m: fn(v, axis=(1, 2), where=m))
    np.testing.assert_allclose(jitted(x, W_BCAST), fn(x, axis=(1, 2), where=W_BCAST),
                               rtol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_reference_mode_runs_the_twin_with_where(name):
    fn = getattr(ops, name)
    loss = lambda v: jnp.sum(jnp.sin(_finite(name, W3)(fn(v, axis=(0, 2), where=W3))))
    with ops.reference_mode():
        inside = jax.value_and_grad(loss)(X3)
    assert_close(inside, jax.value_and_grad(loss)(X3), 1e-12, "reference mode")


X23 = jnp.zeros((2, 3))
ERRORS = [
    ("where_float", dict(where=np.ones((2, 3))), TypeError,
     r"{}: where must be a bool array, got float64"),
    ("where_int", dict(where=np.ones((2, 3), np.int32)), TypeError,
     r"{}: where must be a bool array, got int32"),
    ("where_lower_rank", dict(where=np.ones(3, bool)), ValueError,
     r"{}: where has shape \(3,\) \(rank 1\), expected rank 2 \(x has shape \(2, 3\)"),
    ("where_higher_rank", dict(where=np.ones((1, 2, 3), bool)), ValueError,
     r"{}: where has shape \(1, 2, 3\) \(rank 3\), expected rank 2 \(x has shape \(2, 3\)"),
    ("where_wrong_size", dict(where=np.ones((2, 2), bool)), ValueError,
     r"{}: where has shape \(2, 2\), expected a shape broadcastable to \(2, 3\)"),
    ("where_transposed", dict(where=np.ones((3, 2), bool)), ValueError,
     r"{}: where has shape \(3, 2\), expected a shape broadcastable to \(2, 3\)"),
    ("axis_repeated", dict(axis=(1, 1)), ValueError,
     r"{}: axis must name distinct axes, got \(1, 1\)"),
    ("axis_repeated_negative", dict(axis=(0, -2)), ValueError,
     r"{}: axis must name distinct axes, got \(0, -2\)"),
    ("axis_empty_tuple", dict(axis=()), ValueError, r"{}: axis must name distinct axes, got \(\)"),
    ("axis_out_of_range", dict(axis=2), ValueError,
     r"{}: axis 2 is out of range for an input of rank 2"),
    ("axis_tuple_out_of_range", dict(axis=(0, -3)), ValueError,
     r"{}: axis -3 is out of range for an input of rank 2"),
    ("axis_float", dict(axis=1.0), TypeError,
     r"{}: axis must be an int or a tuple of ints, got 1.0"),
    ("axis_tuple_float", dict(axis=(0, 1.0)), TypeError, r"{}: axis must be an int, got float"),
    ("axis_bool", dict(axis=True), TypeError, r"{}: axis must be an int, got bool"),
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(name, case):
    _, kw, exc, match = case
    fn = getattr(ops, name)
    assert_raises_everywhere(lambda x: fn(x, **kw), (X23,), exc, match.format(name))


@pytest.mark.parametrize("name", NAMES)
def test_empty_axis_is_refused(name):
    fn = getattr(ops, name)
    x = jnp.zeros((2, 0, 3))
    with pytest.raises(ValueError, match=rf"{name}: x has shape \(2, 0, 3\), expected at "
                       r"least one class along axes \(0, 1\)"):
        fn(x, axis=(1, 0))
    with pytest.raises(ValueError, match=r"at least one class along axes \(0, 1, 2\)"):
        fn(x, axis=None, where=np.ones((2, 0, 3), bool))
    assert fn(x, axis=(0, 2)).shape == (2, 0, 3)    # an empty batch axis is fine
