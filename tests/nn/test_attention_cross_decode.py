"""nn.CrossAttention(decode=True): the context's keys and values projected once and cached.

An encoder-decoder decoder (Repeat of pre-LN blocks: causal grouped-query self-attention
with its decode cache, grouped-query cross-attention over a padded context, MLP) decoded
token by token — the first call with the context primes the cache, later calls pass
``None`` in its place — gives the logits of one full pass (float64, 1e-10), also in a
jitted ``lax.scan`` and under ``vmap`` over per-example caches; padded context rows change
nothing; the compiled per-token step holds no projection of the context; errors eagerly
and under jit (an unprimed cache is NaN under jit)."""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from funcnet import nn
from funcnet.gradcheck import assert_close
from tests.nn._models import abstract_init, numpy_init, randn
from tests.nn.test_attention_decode import _raises

KEY = jax.random.PRNGKey(0)
N, L, S, F, FC, V = 2, 5, 6, 8, 3, 11     # FC = 3: no other size of the model is 3
LENGTHS = jnp.array([S, 4])
MASK = (jnp.arange(S)[None, :] < LENGTHS[:, None])[:, None, None, :]       # (N, 1, 1, S)


def decoder(decode, cross_decode=None):
    """Decoder over ``(x, context, mask)``: x ``(N, T, F)`` embeddings, context ``(N, S,
    FC)``; ``cross_decode``: the cross-attention's own ``decode`` (default ``decode``)."""
    self_attn = nn.OnFirst(nn.Residual(nn.serial(nn.LayerNorm(), nn.MultiHeadAttention(
        4, num_kv_heads=2, causal=True, decode=decode))))
    cross = nn.KeepRest(nn.serial(nn.OnFirst(nn.LayerNorm()), nn.CrossAttention(
        4, num_kv_heads=2, decode=decode if cross_decode is None else cross_decode)),
        residual=True)
    mlp = nn.OnFirst(nn.Residual(nn.serial(nn.LayerNorm(), nn.Dense(16), nn.GELU(),
                                           nn.Dense(F))))
    return nn.serial(nn.Repeat(nn.serial(self_attn, cross, mlp), 2), nn.DropRest,
                     nn.LayerNorm(), nn.Dense(V))


SHAPES = ((N, L, F), (N, S, FC), (N, 1, 1, S))


def empty_state(model, shapes):
    """The state ``model.init`` gives, without drawing params: zeros (not primed)."""
    return jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype),
                                  abstract_init(model, shapes)[2])


@functools.lru_cache(maxsize=None)
def models():
    """params, the empty decode cache (batch and one sequence), and one jitted function:
    the full pass, the cached decoding in a lax.scan, per-example caches under vmap."""
    model, dec = decoder(False), decoder(True)
    _, params, state = numpy_init(model, ((-1, L, F), (-1, S, FC), (-1, 1, 1, S)))
    cache = empty_state(dec, SHAPES)
    one = empty_state(dec, tuple(s[1:] for s in SHAPES))      # one sequence: no N

    def decode(p, c, x, ctx, mask, prompt):
        """Prime with the first ``prompt`` positions and the context, then scan the other
        positions one token at a time (``x`` ``(N, L, F)``, or ``(L, F)`` for one sequence
        with its own cache)."""
        t = x.ndim - 2                                  # the time axis
        y0, c = dec.apply(p, c, (lax.slice_in_dim(x, 0, prompt, axis=t), ctx, mask))

        def step(c, xt):
            y, c = dec.apply(p, c, (jnp.expand_dims(xt, t), None, mask))
            return c, jnp.squeeze(y, t)
        c, ys = lax.scan(step, c, jnp.moveaxis(x, t, 0)[prompt:])
        return jnp.concatenate([y0, jnp.moveaxis(ys, 0, t)], axis=t), c

    @jax.jit
    def run(p, x, ctx, mask):
        full = model.apply(p, state, (x, ctx, mask))[0]
        scanned, end = decode(p, cache, x, ctx, mask, 2)
        caches = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (N,) + a.shape), one)
        per_example = jax.vmap(lambda c, xi, ci, mi: decode(p, c, xi, ci, mi, 1)[0])(
            caches, x, ctx, mask)                        # mask (1, 1, S) per example
        return full, scanned, end, per_example
    return params, dec, cache, one, run


@functools.lru_cache(maxsize=None)
def compiled_step():
    """The compiled per-token step of the decode model: ``(x, None, mask)``, one token."""
    params, dec, cache, _, _ = models()
    return jax.jit(dec.apply).lower(params, cache, (_inputs()[0][:, :1], None, MASK)).compile()


def _inputs(seed=1):
    return randn((N, L, F), seed), randn((N, S, FC), seed + 1)


def test_cache_layout_and_the_params_of_the_training_model():
    params, dec, cache, one, _ = models()
    cross = cache[0][1][1]               # Repeat: block[1] = KeepRest(serial[1] = CrossAttention)
    assert cross["k"].shape == cross["v"].shape == (2, N, S, 2, 2)   # (layers, N, S, K, dh)
    assert cross["primed"].shape == (2,) and cross["primed"].dtype == jnp.bool_
    assert not np.any(cross["primed"]) and not np.any(cross["k"])
    assert one[0][1][1]["k"].shape == (2, S, 2, 2)                 # one sequence: no N
    dparams = jax.eval_shape(lambda k: dec.init(k, SHAPES), KEY)[1]
    assert jax.tree_util.tree_structure(dparams) == jax.tree_util.tree_structure(params)


def test_cached_decoding_equals_the_full_pass_and_honours_the_context_mask():
    """Token by token (the first call primes the cache), in a jitted lax.scan, and with
    per-example caches under vmap: the full pass's logits to 1e-10 in float64."""
    params, dec, cache, _, run = models()
    x, ctx = _inputs()
    full, scanned, end, per_example = run(params, x, ctx, MASK)
    assert_close(scanned, full, 1e-10, "prime with 2 positions, then lax.scan")
    assert_close(per_example, full, 1e-10, "per-example caches under vmap")
    cross = end[0][1][1]
    assert np.all(cross["primed"])
    ys, c = [], cache
    for t in range(L):                         # eagerly chosen inputs, token by token
        step = compiled_step() if t else jax.jit(dec.apply)         # t = 0 primes
        y, c = step(params, c, (x[:, t:t + 1], ctx if t == 0 else None, MASK))
        ys.append(y)
    assert_close(jnp.concatenate(ys, axis=1), full, 1e-10, "token by token")
    np.testing.assert_array_equal(c[0][1][1]["k"], cross["k"])   # the context's keys
    # padded context rows change nothing; without the mask they do
    junk = jnp.where(MASK[:, 0, 0, :, None], ctx, 1e3 * randn(ctx.shape, 9))
    full2, scanned2, _, per_example2 = run(params, x, junk, MASK)
    assert_close(scanned2, scanned, 1e-10, "padded context rows are masked")
    assert_close(per_example2, per_example, 1e-10, "per example too")
    assert not np.allclose(run(params, x, junk, jnp.ones_like(MASK))[1], scanned)


def _context_dots(hlo: str) -> list:
    """The dot instructions of a compiled program that contract an operand over ``FC``, the
    context's width: its k/v projections (no other size of the model is ``FC``)."""
    shapes = dict(re.findall(r"%(\S+) = \w+\[([\d,]*)\]", hlo))   # instruction -> dims
    dots = re.findall(r"dot\(%(\S+), %\S+\),.*?lhs_contracting_dims=\{(\d+)\}", hlo)
    assert dots, "no dot found: has the HLO text changed?"
    return [(lhs, axis) for lhs, axis in dots
            if shapes[lhs].split(",")[int(axis)] == str(FC)]


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]


def test_the_per_token_step_no_longer_projects_the_context():
    """The compiled step reading the cache has no dot over the context's width and fewer
    FLOPs, by at least the two projections, than the step that recomputes them (the
    cross-attention without decode, the self-attention still cached)."""
    params = models()[0]
    x, ctx = _inputs()
    old = decoder(True, cross_decode=False)
    new = compiled_step()
    before = jax.jit(old.apply).lower(params, empty_state(old, SHAPES),
                                      (x[:, :1], ctx, MASK)).compile()
    assert _context_dots(new.as_text()) == []
    assert len(_context_dots(before.as_text())) == 2          # k and v (per layer, in a loop)
    projections = 2 * (2 * N * S * FC * 4)                     # x wk, x wv: (N S, FC) @ (FC, 4)
    assert _flops(before) - _flops(new) >= projections


CA = nn.CrossAttention
NAME = r"(?<!\): )CrossAttention\(2\)"     # named once


def test_errors_eagerly_and_under_jit_and_nan_for_an_unprimed_cache_under_jit():
    layer = CA(2, decode=True)
    _, p, _ = numpy_init(CA(2), ((-1, 3, F), (-1, S, FC)))
    c = empty_state(layer, ((N, 1, F), (N, S, FC)))
    x, ctx = randn((N, 3, F), 1), randn((N, S, FC), 2)
    msg = NAME + r": the context's key/value cache is empty \(state\['primed'\] is False\): "
    with pytest.raises(ValueError, match=msg + r"call apply with the context"):
        layer.apply(p, c, (x, None))
    y, c2 = jax.jit(layer.apply)(p, c, (x, None))          # unknown under jit: NaN
    assert np.all(np.isnan(y)) and not c2["primed"]
    y, primed = jax.jit(layer.apply)(p, c, (x, ctx))
    assert np.all(np.isfinite(y)) and primed["primed"]
    assert_close(jax.jit(layer.apply)(p, primed, (x, None))[0], y, 1e-12, "read = primed")
    _raises(layer.apply, ValueError, NAME + r": context has 4 positions, but the key/value "
            r"cache of decode=True holds 6: init the decode model with the context's shape",
            p, c, (x, ctx[:, :4]))
    _raises(layer.apply, ValueError, NAME + r": state\['k'\] has shape \(2, 6, 2, 4\), "
            r"expected \(3, \*, 2, 4\): the key/value cache holds 2 sequences, the input "
            r"3 sequences", p, c, (randn((3, 1, F)), randn((3, S, FC))))
    _raises(layer.apply, ValueError, NAME + r": state\['k'\] has shape \(2, 6, 2, 4\), "
            r"expected \(\*, 2, 4\): the key/value cache holds 2 sequences, the input one "
            r"sequence", p, c, (x[0], None))
    _raises(layer.apply, TypeError, NAME + r": state\['primed'\] must have dtype bool",
            p, dict(c, primed=jnp.zeros((), jnp.int32)), (x, None))
    _raises(layer.apply, ValueError, NAME + r": state must be a dict with keys \['k', "
            r"'primed', 'v'\], got tuple \(\); decode=True keeps", p, (), (x, ctx))
    _raises(CA(2).apply, TypeError, NAME + r": context is None: only CrossAttention\(\.\.\., "
            r"decode=True\) reads", p, (), (x, None))
    _raises(CA(2).apply, ValueError, NAME + r": state must be empty", p, c, (x, ctx))
    _raises(layer.apply, ValueError, NAME + r": dot_product_attention: mask has shape "
            r"\(2, 1, 1, 4\)", p, primed, (x, None, jnp.ones((N, 1, 1, 4), bool)))
    with pytest.raises(ValueError, match=NAME + r": decode=True allocates a key/value cache "
                                              r"of the S context positions for each of the N "
                                              r"sequences: init with known sizes \(N, S, Fc\), "
                                              r"got the context's shape \(-1, 6, 3\)"):
        layer.init(KEY, ((-1, 1, F), (-1, S, FC)))
    with pytest.raises(ValueError, match=NAME + r": input_shape \(\(2, 1, 8\), None\) has no "
                                              r"context shape"):
        layer.init(KEY, ((N, 1, F), None))
    with pytest.raises(TypeError, match=r"CrossAttention\(2\): decode must be a bool"):
        CA(2, decode=1)


def test_decode_is_an_added_argument_of_the_description():
    """Old runs' texts stay the same (decode=False is left out); decode=True is written."""
    assert "decode" not in nn.describe(CA(2))
    assert nn.describe(CA(2)).endswith("num_kv_heads=None)")
    assert "decode=True" in nn.describe(CA(2, decode=True))
