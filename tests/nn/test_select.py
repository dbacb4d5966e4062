"""nn.Select: picks entries of a tuple input (init shapes and apply values); with
KeepRest it gives a decoder block both a target padding mask and a source padding mask,
and padded tokens then change nothing at the real positions (values and gradients)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from tests.nn._models import numpy_init, randn

KEY = jax.random.PRNGKey(0)
N, T, S, F = 2, 5, 6, 8
X_LEN, C_LEN = np.array([5, 3]), np.array([2, 6])


def test_select_picks_shapes_and_values():
    shapes = ((-1, 4), (-1, 1, 1, 4), None, (-1, 7, 3))
    layer = nn.Select(0, 3)
    out, params, state = layer.init(KEY, shapes)
    assert out == ((-1, 4), (-1, 7, 3)) and params == () and state == ()
    assert nn.Select(2).init(KEY, shapes)[0] is None               # one index: the entry
    a, b = jnp.ones((2, 4)), jnp.zeros((2, 7, 3))
    y, _ = jax.jit(lambda t: nn.Select(1, 0, 1).apply((), (), t))((a, b))
    assert len(y) == 3 and y[0] is not y[1]
    np.testing.assert_array_equal(y[0], b)
    np.testing.assert_array_equal(y[1], a)
    assert nn.Select(0).apply((), (), [a, b])[0] is a


def decoder(use_masks: bool):
    """A pre-LN decoder block over (x, x_mask, context, context_mask)."""
    pick_self, pick_cross = ((0, 1), (0, 2, 3)) if use_masks else ((0,), (0, 2))
    self_attn = nn.KeepRest(nn.serial(nn.Select(*pick_self), nn.OnFirst(nn.LayerNorm())
                                      if use_masks else nn.LayerNorm(),
                                      nn.MultiHeadAttention(2)), residual=True)
    cross = nn.KeepRest(nn.serial(nn.Select(*pick_cross), nn.OnFirst(nn.LayerNorm()),
                                  nn.CrossAttention(2)), residual=True)
    ffn = nn.serial(nn.LayerNorm(), nn.Dense(16), nn.GELU(), nn.Dense(F))
    return nn.serial(self_attn, cross, nn.OnFirst(nn.Residual(ffn)), nn.DropRest)


@functools.lru_cache(maxsize=None)
def _model(use_masks):
    model = decoder(use_masks)
    shapes = ((-1, T, F), (-1, 1, 1, T), (-1, S, F), (-1, 1, 1, S))
    _, params, state = numpy_init(model, shapes)

    @jax.jit
    def run(params, x, c):
        xm = (jnp.arange(T)[None, :] < X_LEN[:, None])[:, None, None, :]
        cm = (jnp.arange(S)[None, :] < C_LEN[:, None])[:, None, None, :]

        def real_sum(p):
            y, _ = model.apply(p, state, (x, xm, c, cm))
            keep = (jnp.arange(T)[None, :] < X_LEN[:, None])[..., None]
            return jnp.sum(jnp.where(keep, jnp.sin(y), 0.0)), y
        (_, y), g = jax.value_and_grad(real_sum, has_aux=True)(params)
        return y, g
    return params, run


def _padded_changed(a, lengths, seed):
    """``a`` with its padded positions (axis 1 at or past ``lengths``) redrawn."""
    pad = (np.arange(a.shape[1])[None, :] >= lengths[:, None])[..., None]
    return jnp.where(pad, randn(a.shape, seed=seed, scale=5.0), a)


def test_decoder_with_target_and_source_masks_ignores_the_padding():
    params, run = _model(True)
    x, c = randn((N, T, F), seed=1), randn((N, S, F), seed=2)
    y1, g1 = run(params, x, c)
    y2, g2 = run(params, _padded_changed(x, X_LEN, 3), _padded_changed(c, C_LEN, 4))
    real = (np.arange(T) < X_LEN[:, None])[..., None]
    np.testing.assert_allclose(np.where(real, y1, 0), np.where(real, y2, 0), atol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_allclose(a, b, atol=1e-12)
    # without the masks the padding leaks into the real positions
    p_plain, run_plain = _model(False)
    y3, _ = run_plain(p_plain, x, c)
    y4, _ = run_plain(p_plain, _padded_changed(x, X_LEN, 3), _padded_changed(c, C_LEN, 4))
    assert np.abs(np.where(real, y3 - y4, 0)).max() > 1e-3


def test_errors():
    with pytest.raises(ValueError, match="Select: expected at least one index"):
        nn.Select()
    with pytest.raises(ValueError, match="Select: index 1"):
        nn.Select(0, -1)
    with pytest.raises(TypeError, match="Select: index 0"):
        nn.Select(1.0)
    with pytest.raises(ValueError, match=r"Select\(0, 2\): input_shape has 2 entries, "
                                         r"expected at least 3"):
        nn.Select(0, 2).init(KEY, ((-1, 3), (-1, 3)))
    with pytest.raises(TypeError, match=r"Select\(0\): input_shape must be a tuple"):
        nn.Select(0).init(KEY, (-1, 3))
    for f in (nn.Select(1).apply, jax.jit(nn.Select(1).apply)):
        with pytest.raises(TypeError, match=r"Select\(1\): the input must be a tuple with "
                                            r"at least 2 entries, got an array of shape"):
            f((), (), jnp.ones((2, 3)))
