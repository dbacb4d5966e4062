"""dropout(broadcast_dims=): one mask value shared along the named axes (Flax's
``Dropout(broadcast_dims=)``; spatial dropout, stochastic depth); backward regenerates
the same broadcast mask from the key; nn.Dropout(broadcast_dims=) and nn.DropPath."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as R
from funcnet.ops.dropout import dropout
from tests.ops._cases import rand

KEY = jax.random.PRNGKey(7)
dropout_mod = importlib.import_module("funcnet.ops.dropout")


@pytest.mark.parametrize("dims", [(1, 2), (0,), (-1,), (0, 1, 2, 3)])
def test_vjp_matches_reference_and_central_differences(dims):
    check_vjp([lambda x, k: dropout(x, 0.4, k, dims)],
              lambda x, k: R.dropout(x, 0.4, k, dims), (rand((3, 4, 2, 5)), KEY),
              fd_rtol=1e-6)


def test_the_mask_is_bernoulli_of_the_broadcast_shape_and_shared_along_it():
    """NHWC with (1, 2): whole feature maps, the mask ``bernoulli(key, 1 - r, (N, 1, 1,
    C))`` (Flax's definition); the gradient is that mask over ``1 - r``; the backward
    saves the key only."""
    x = rand((4, 3, 5, 6)) + 2.0        # no zero inputs: a zero output means dropped
    y, dx = jax.jit(lambda x: (dropout(x, 0.5, KEY, (1, 2)),
                               jax.grad(lambda x: dropout(x, 0.5, KEY, (1, 2)).sum())(x)))(x)
    mask = jax.random.bernoulli(KEY, 0.5, (4, 1, 1, 6))
    np.testing.assert_array_equal(np.asarray(y), np.where(mask, x / 0.5, 0.0))
    np.testing.assert_array_equal(np.asarray(dx), np.broadcast_to(np.asarray(mask) / 0.5,
                                                                  x.shape))
    assert 0 < mask.sum() < mask.size
    _, res = jax.eval_shape(lambda x, k: dropout_mod._dropout_fwd(x, 0.5, k, (4, 1, 1, 6)),
                            x, KEY)
    assert res.shape == (2,) and res.dtype == jnp.uint32


def test_no_broadcast_dims_is_the_elementwise_op():
    x = rand((5, 6))
    np.testing.assert_array_equal(dropout(x, 0.3, KEY, ()), dropout(x, 0.3, KEY))
    assert_close(dropout(x, 0.3, KEY, []), R.dropout(x, 0.3, KEY), 1e-15, "twin")


@pytest.mark.parametrize("dims, exc, match", [
    ((2,), ValueError, r"dropout: broadcast_dims 2 is out of range for an input of rank 2"),
    ((1, -1), ValueError, r"dropout: broadcast_dims \(1, -1\) names an axis twice \(x has "
                          r"shape \(3, 4\)\)"),
    (1, TypeError, r"dropout: broadcast_dims must be a tuple of ints, got int"),
    ((0.5,), TypeError, r"dropout: broadcast_dims must be an int, got float 0.5"),
])
def test_bad_broadcast_dims_raise_at_trace_time(dims, exc, match):
    for fn in (dropout, R.dropout):
        with pytest.raises(exc, match=match):
            jax.eval_shape(lambda x: fn(x, 0.5, KEY, dims), jnp.ones((3, 4)))


def test_drop_path_drops_whole_examples_at_the_rate_and_keeps_the_mean():
    layer = nn.DropPath(0.25)
    assert layer.init(KEY, (-1, 3, 4))[0] == (-1, 3, 4)
    x = jnp.ones((4000, 3, 4), jnp.float32)
    y = jax.jit(lambda x, k: layer.apply((), (), x, key=k, train=True)[0])(x, KEY)
    y = np.asarray(y)
    per_example = y.reshape(4000, -1)
    assert np.all(per_example == per_example[:, :1])                    # all or nothing
    kept = per_example[:, 0] != 0
    assert abs(kept.mean() - 0.75) < 6 * np.sqrt(0.25 * 0.75 / 4000)
    np.testing.assert_allclose(per_example[kept], 1 / 0.75, rtol=1e-6)
    assert layer.apply((), (), x, train=False)[0] is x


def test_drop_path_in_a_residual_branch_leaves_dropped_examples_the_identity():
    """``x + f(x) m / (1 - r)``: a dropped example's output is its input and its gradient
    reaches the branch's weights not at all; equal to the twin built on ``Dropout``."""
    model = nn.Residual(nn.serial(nn.Dense(4), nn.DropPath(0.5)))
    twin = nn.Residual(nn.serial(nn.Dense(4), nn.Dropout(0.5, broadcast_dims=(1,))))
    _, params, state = model.init(KEY, (-1, 4))
    x, k = rand((16, 4)), jax.random.PRNGKey(3)

    def run(m, p, x):
        return m.apply(p, state, x, key=k, train=True)[0]

    y = run(model, params, x)
    assert_close(y, run(twin, params, x), 1e-12, "DropPath vs Dropout(broadcast_dims)")
    dropped = np.all(np.asarray(y) == np.asarray(x), axis=1)
    assert 0 < dropped.sum() < 16
    rows = jnp.asarray(dropped, x.dtype)[:, None]         # a loss on the dropped rows only
    g = jax.grad(lambda p: (run(model, p, x) * rows).sum())(params)
    assert all(np.all(np.asarray(v) == 0) for v in jax.tree_util.tree_leaves(g))


def test_layers_check_the_shared_axes_against_the_input_at_init():
    cases = [(nn.Dropout(0.5, broadcast_dims=(3,)), (-1, 4, 2),
              r"Dropout\(0.5, broadcast_dims=\(3,\)\): dropout: broadcast_dims 3 is out of "
              r"range for an input of rank 3"),
             (nn.DropPath(0.1), (-1,), r"DropPath\(0.1\): the input has rank 1, expected "
                                       r"rank >= 2 \(N, ...\) with the examples on axis 0")]
    for layer, shape, match in cases:
        with pytest.raises(ValueError, match=match):
            layer.init(KEY, shape)
    with pytest.raises(TypeError, match="Dropout: broadcast_dims must be a tuple of ints"):
        nn.Dropout(0.5, broadcast_dims=1)


def test_describe_keeps_the_old_dropout_text_and_records_shared_axes():
    """Runs checkpointed before ``broadcast_dims`` existed still resume (same text)."""
    assert nn.describe(nn.Dropout(0.3)) == "Dropout(rate=0.3)"
    assert nn.describe(nn.Dropout(0.3, broadcast_dims=(1, 2))) == \
        "Dropout(rate=0.3, broadcast_dims=(1, 2))"
    assert nn.describe(nn.DropPath(0.1)) == "DropPath(rate=0.1)"
