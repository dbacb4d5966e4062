"""GaLore (``galore``, ``scale_by_galore``): optax's float64 trajectory (to 1e-12, states
both ways) over left and right projections, projector refreshes, 3-D weights with
dimension numbers (one spec, a tree, a function), weight decay with a mask and another
base optimizer; optax's own cases (``optax/contrib/_galore_test.py``); errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim
from tests.optim._both_ways import close

optax = pytest.importorskip("optax")
contrib = pytest.importorskip("optax.contrib")

_rng = np.random.default_rng(5)
PARAMS = {"left": jnp.asarray(_rng.standard_normal((6, 4))),       # m >= n: P^T G
          "right": jnp.asarray(_rng.standard_normal((3, 7))),      # m < n: G P
          "attn": jnp.asarray(_rng.standard_normal((4, 2, 3))),    # (embed, heads, head_dim)
          "b": jnp.asarray(_rng.standard_normal((5,)))}


def _loss(p):
    return (jnp.sum(jnp.sin(p["left"]) ** 2) + jnp.sum(jnp.tanh(p["right"] - 0.3) ** 2)
            + jnp.sum((p.get("attn", 0.5) - 0.5) ** 4) + jnp.sum(p["b"] ** 2))


_grad = jax.jit(jax.grad(_loss))


def _run(opt, steps=7, params=PARAMS):
    state, update = opt.init(params), jax.jit(opt.update)
    for _ in range(steps):
        u, state = update(_grad(params), state, params)
        params = jax.tree_util.tree_map(lambda p, d: p + d, params, u)
    return params, state


def _attn_dims(m):
    return m.GaLoreDimensionNumbers(0, (1, 2))


CASES = {
    # 2-D leaves only (attn and b go through Adam whole); projector refreshed at 0, 3, 6
    "default": lambda m, o: m.galore(0.05, rank=2, update_proj_gap=3),
    "rank-clipped": lambda m, o: m.galore(0.05, rank=50, update_proj_gap=2),
    # one spec for every leaf of rank >= 2 (run without the 3-D leaf): rows = axis 1
    "one-spec": lambda m, o: m.galore(0.05, rank=2, update_proj_gap=4,
                                      weight_dimension_numbers=m.GaLoreDimensionNumbers(1, 0)),
    "tree-spec": lambda m, o: m.galore(
        0.05, rank=2, update_proj_gap=3, weight_dimension_numbers={
            "left": m.GaLoreDimensionNumbers(1, 0), "right": None, "attn": _attn_dims(m),
            "b": None}),
    "fn-spec-decay-mask": lambda m, o: m.galore(
        0.05, rank=1, update_proj_gap=2, weight_decay=0.1,
        mask=lambda p: {k: k != "b" for k in p},
        weight_dimension_numbers=lambda p: {k: (_attn_dims(m) if k == "attn" else None)
                                            for k in p}),
    "base-rms-scale": lambda m, o: m.galore(0.05, rank=2, update_proj_gap=3, scale=0.5,
                                            base_optimizer=o.scale_by_rms(0.9)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_trajectory_equals_optax_and_states_move_both_ways(case):
    f, o = CASES[case](optim, optim), CASES[case](contrib, optax)
    params = {k: v for k, v in PARAMS.items() if k != "attn" or case != "one-spec"}
    pf, sf = _run(f, params=params)
    with jax.numpy_dtype_promotion("standard"):
        po, so = _run(o, params=params)
        g = _grad(pf)
        to_optax = o.update(g, sf, pf)
    close(pf, po)
    close(sf, so)
    close(f.update(g, so, pf), to_optax)


def test_state_holds_low_rank_moments_and_projectors():
    """The memory claim: Adam's moments of a 64x16 weight at rank 4 are 4x16."""
    params = {"w": jnp.zeros((64, 16)), "v": jnp.zeros((8, 40)), "b": jnp.zeros((16,))}
    gs = optim.galore(0.1, rank=4).init(params)[0]
    assert gs.projector["w"].shape == (64, 4) and gs.base_optimizer_state.mu["w"].shape == (4, 16)
    assert gs.projector["v"].shape == (40, 4) and gs.base_optimizer_state.nu["v"].shape == (8, 4)
    assert gs.projector["b"].shape == (0, 0) and gs.base_optimizer_state.mu["b"].shape == (16,)


# --------------------------------------------------------------- optax's own cases

@pytest.mark.parametrize("shape, left", [((32, 64), False), ((64, 32), True), ((64, 64), True)])
def test_ported_left_vs_right_projection_state_shapes(shape, left):
    gs = optim.galore(0.1, rank=8, update_proj_gap=10).init(jnp.zeros(shape, jnp.float32))[0]
    m, n = shape
    assert gs.projector.shape == ((m, 8) if left else (n, 8))
    assert gs.base_optimizer_state.mu.shape == ((8, n) if left else (m, 8))


def test_ported_projector_is_orthonormal_and_refreshes_by_the_gap():
    w = jax.random.normal(jax.random.key(0), (16, 32), jnp.float32)
    g0 = jnp.arange(w.size, dtype=jnp.float32).reshape(w.shape)
    projectors = {}
    for gap in (1, 1000):
        opt = optim.galore(0.01, rank=4, update_proj_gap=gap)
        _, s1 = opt.update(g0, opt.init(w), w)
        _, s2 = opt.update(jnp.flip(g0, 0), s1, w)
        projectors[gap] = s1[0].projector, s2[0].projector
    p = projectors[1][0]
    np.testing.assert_allclose(p.T @ p, np.eye(4), atol=1e-5)
    assert not np.allclose(*projectors[1])          # refreshed every step
    np.testing.assert_array_equal(*projectors[1000])  # kept until step 1000


def test_ported_converges_on_a_quadratic_under_jit():
    opt = optim.galore(0.1, rank=8, update_proj_gap=1)
    w = jnp.ones((64, 64))
    state = opt.init(w)
    step = jax.jit(lambda w, s: (lambda u, s: (optim.apply_updates(w, u), s))(
        *opt.update(w, s, w)))
    for _ in range(20):
        w, state = step(w, state)
    assert float(jnp.linalg.norm(w)) < 64.0 * 0.8


@pytest.mark.parametrize("call, exc, match", [
    (lambda: optim.galore(0.1, rank=0), ValueError, "rank"),
    (lambda: optim.galore(0.1, rank=2.5), TypeError, "rank"),
    (lambda: optim.galore(0.1, update_proj_gap=0), ValueError, "update_proj_gap"),
    (lambda: optim.scale_by_galore(base_optimizer="adam"), TypeError, "base_optimizer"),
    (lambda: optim.galore(0.1, weight_dimension_numbers={
        "left": None, "right": None, "attn": optim.GaLoreDimensionNumbers(0, 1),
        "b": None}).init(PARAMS), ValueError, r"axes \(2,\) are neither"),
    (lambda: optim.galore(0.1, weight_dimension_numbers={
        "left": None, "right": None, "attn": None,
        "b": optim.GaLoreDimensionNumbers()}).init(PARAMS), ValueError, "rank >= 2"),
])
def test_bad_arguments_raise(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
