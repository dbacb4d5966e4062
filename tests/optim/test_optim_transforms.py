"""Blocks against their formulas: clip_by_global_norm, clip, add_decayed_weights (and
masks, schedules), trace, ema (also of parameters), NAdam, accumulate (in a scan), chain,
the ema/classic momentum relation, apply_updates."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim


G = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}  # global norm 5


@pytest.mark.parametrize("max_norm", [1.0, 2.5, 5.0, 7.0])
def test_clip_by_global_norm(max_norm):
    clip = optim.clip_by_global_norm(max_norm)
    out, state = jax.jit(clip.update)(G, clip.init(G))
    scale = 1.0 if 5.0 < max_norm else max_norm / 5.0  # formula: g * min(1, c / ||g||)
    for k in G:
        np.testing.assert_allclose(out[k], np.asarray(G[k]) * scale, rtol=1e-14)
    np.testing.assert_allclose(optim.global_norm(out), min(5.0, max_norm), rtol=1e-14)
    np.testing.assert_allclose(optim.global_norm(updates=out), min(5.0, max_norm),
                               rtol=1e-14)   # optax's argument name
    assert state == optim.EmptyState()


def test_clip_by_global_norm_traced_max_norm_and_zero_grads():
    f = jax.jit(lambda c, g: optim.clip_by_global_norm(c).update(g, optim.EmptyState())[0])
    np.testing.assert_allclose(f(2.5, G)["b"], [[2.0]], rtol=1e-14)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, G)
    assert all(np.all(x == 0) for x in jax.tree_util.tree_leaves(f(1.0, zeros)))


def test_add_decayed_weights_is_the_l2_gradient_and_respects_mask():
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
    grads = {"w": jnp.array([0.1, 0.2]), "b": jnp.array([0.3])}
    wd = 0.3
    out, _ = optim.add_decayed_weights(wd).update(grads, optim.EmptyState(), params)
    l2 = jax.grad(lambda p: 0.5 * wd * sum(jnp.sum(x ** 2) for x in jax.tree_util.tree_leaves(p)))
    for k in params:
        np.testing.assert_allclose(out[k], grads[k] + l2(params)[k], rtol=1e-14)
    for mask in ({"w": True, "b": False}, lambda p: {"w": True, "b": False}):
        block = optim.add_decayed_weights(wd, mask)
        out, _ = block.update(grads, block.init(params), params)
        np.testing.assert_allclose(out["w"], grads["w"] + wd * params["w"], rtol=1e-14)
        np.testing.assert_array_equal(out["b"], grads["b"])


def test_note001_l2_without_strength_is_weight_decay_2():
    """Note 001: L = data + sum W^2 (no lambda): GD on it == add_decayed_weights(2) + sgd."""
    w = jnp.array([1.0, -2.0, 0.5])
    data_loss = lambda w: jnp.sum(jnp.sin(w))
    direct = w - 0.1 * jax.grad(lambda w: data_loss(w) + jnp.sum(w ** 2))(w)
    opt = optim.chain(optim.add_decayed_weights(2.0), optim.sgd(0.1))
    u, _ = opt.update(jax.grad(data_loss)(w), opt.init(w), w)
    np.testing.assert_allclose(optim.apply_updates(w, u), direct, rtol=1e-14)


def test_adamw_mask_leaves_unmasked_leaf_on_plain_adam():
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
    grads = {"w": jnp.array([0.1, 0.2]), "b": jnp.array([0.3])}
    w_opt = optim.adamw(0.1, weight_decay=0.5, mask={"w": True, "b": False})
    a_opt = optim.adam(0.1)
    uw, _ = w_opt.update(grads, w_opt.init(params), params)
    ua, _ = a_opt.update(grads, a_opt.init(params), params)
    np.testing.assert_allclose(uw["b"], ua["b"], rtol=1e-14)
    np.testing.assert_allclose(uw["w"], ua["w"] - 0.1 * 0.5 * params["w"], rtol=1e-14)


def test_ema_momentum_is_classic_with_scaled_learning_rate():
    """v_ema = (1 - beta) * trace, so ema(lr) == classic((1 - beta) lr) step by step."""
    beta, lr = 0.8, 0.5
    rng = np.random.default_rng(0)
    ema, cls = optim.momentum(lr, beta, form="ema"), optim.momentum((1 - beta) * lr, beta)
    se, sc = ema.init(jnp.zeros(4)), cls.init(jnp.zeros(4))
    for _ in range(5):
        g = jnp.asarray(rng.normal(size=4))
        ue, se = ema.update(g, se)
        uc, sc = cls.update(g, sc)
        np.testing.assert_allclose(ue, uc, rtol=1e-13)


def _grad_stream(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"a": jnp.asarray(rng.normal(size=3)), "b": jnp.asarray(rng.normal(size=(2, 2)))}
            for _ in range(n)]


@pytest.mark.parametrize("k", [1, 3])
def test_accumulate_equals_one_step_on_the_mean(k):
    """k calls of accumulate(opt, k) == one opt step on the mean gradient; zeros between."""
    grads = _grad_stream(2 * k)
    params = jax.tree_util.tree_map(jnp.zeros_like, grads[0])
    inner, acc = optim.adam(0.1), optim.accumulate(optim.adam(0.1), every_k=k)
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *grads)

    def body(s, g):
        u, s = acc.update(g, s, params)
        return s, u

    state, updates = jax.jit(lambda: jax.lax.scan(body, acc.init(params), stacked))()
    s_in = inner.init(params)
    for cycle in range(2):
        chunk = grads[cycle * k:(cycle + 1) * k]
        mean = jax.tree_util.tree_map(lambda *x: sum(x) / len(x), *chunk)
        want, s_in = inner.update(mean, s_in, params)
        for i in range(k):
            got = jax.tree_util.tree_map(lambda x: x[cycle * k + i], updates)
            for name in got:
                if i < k - 1:
                    np.testing.assert_array_equal(got[name], np.zeros_like(want[name]))
                else:
                    np.testing.assert_allclose(got[name], want[name], rtol=1e-12)
    assert int(state.gradient_step) == 2 and int(state.mini_step) == 0
    assert state.mini_step.dtype == jnp.int32
    for a, b in zip(jax.tree_util.tree_leaves(state.inner_opt_state),
                    jax.tree_util.tree_leaves(s_in)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_accumulate_vmaps_over_learning_rate():
    params, grads = jnp.zeros(2), _grad_stream(4)

    def run(lr):
        opt = optim.accumulate(optim.sgd(lr), every_k=2)
        s, total = opt.init(params), jnp.zeros(2)
        for g in grads:
            u, s = opt.update(g["a"][:2], s, params)
            total = total + u
        return total

    lrs = jnp.array([0.1, 1.0])
    got = jax.jit(jax.vmap(run))(lrs)
    mean_sum = (grads[0]["a"][:2] + grads[1]["a"][:2]) / 2 + (grads[2]["a"][:2] + grads[3]["a"][:2]) / 2
    np.testing.assert_allclose(got, -lrs[:, None] * mean_sum[None, :], rtol=1e-12)


def test_chain_applies_in_order():
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.scale(-2.0))
    u, s = opt.update(G, opt.init(G))
    np.testing.assert_allclose(u["a"], [-1.2, 0.0], rtol=1e-14)
    opt2 = optim.chain(optim.scale(-2.0), optim.clip_by_global_norm(1.0))
    u2, _ = opt2.update(G, opt2.init(G))
    np.testing.assert_allclose(u2["a"], [-0.6, 0.0], rtol=1e-14)
    assert s == (optim.EmptyState(), optim.EmptyState())


def test_apply_updates_keeps_param_dtype():
    p = {"w": jnp.ones(3, jnp.float32)}
    out = optim.apply_updates(p, {"w": jnp.full(3, 0.5, jnp.float64)})
    assert out["w"].dtype == jnp.float32
    np.testing.assert_allclose(out["w"], 1.5)


def test_trace_and_ema_formulas():
    rng = np.random.default_rng(2)
    gs = [jnp.asarray(rng.normal(size=3)) for _ in range(4)]
    tr, em, nv = optim.trace(0.7), optim.ema(0.7), optim.trace(0.7, nesterov=True)
    st, se, sn = tr.init(gs[0]), em.init(gs[0]), nv.init(gs[0])
    t = e = np.zeros(3)
    for k, g in enumerate(gs, start=1):
        ut, st = tr.update(g, st)
        ue, se = em.update(g, se)
        un, sn = nv.update(g, sn)
        t = 0.7 * t + np.asarray(g)
        e = 0.7 * e + 0.3 * np.asarray(g)
        np.testing.assert_allclose(ut, t, rtol=1e-14)
        np.testing.assert_allclose(un, np.asarray(g) + 0.7 * t, rtol=1e-14)
        np.testing.assert_allclose(ue, e / (1 - 0.7 ** k), rtol=1e-14)
        np.testing.assert_allclose(se.ema, e, rtol=1e-14)
    assert int(se.count) == 4 and se.count.dtype == jnp.int32


def test_ema_of_parameters_is_the_debiased_running_average():
    """ema(decay) applied to the parameters after each step: Polyak averaging."""
    opt, averager = optim.sgd(0.1), optim.ema(0.9)
    p = {"w": jnp.array([1.0, -1.0])}
    s, avg_state, seen = opt.init(p), averager.init(p), []
    for _ in range(5):
        u, s = opt.update(jax.tree_util.tree_map(lambda x: 2 * x, p), s, p)
        p = optim.apply_updates(p, u)
        seen.append(np.asarray(p["w"]))
        avg, avg_state = averager.update(p, avg_state)
    w = np.array([0.9 ** (4 - i) * 0.1 for i in range(5)])
    np.testing.assert_allclose(avg["w"], (w[:, None] * np.stack(seen)).sum(0) / (1 - 0.9 ** 5),
                               rtol=1e-13)
    np.testing.assert_allclose(optim.incremental_update(p, {"w": jnp.zeros(2)}, 0.25)["w"],
                               0.25 * p["w"], rtol=1e-15)


def test_nadam_formula():
    """Dozat 2016 as optax: m_hat = b1 m_t/(1-b1^(t+1)) + (1-b1) g_t/(1-b1^t)."""
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.1
    rng = np.random.default_rng(3)
    gs = [rng.normal(size=4) for _ in range(3)]
    opt, p = optim.nadam(lr), jnp.zeros(4)
    s, m, v = opt.init(p), 0.0, 0.0
    for t, g in enumerate(gs, start=1):
        u, s = opt.update(jnp.asarray(g), s, p)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        m_hat = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1 ** t)
        np.testing.assert_allclose(u, -lr * m_hat / (np.sqrt(v / (1 - b2 ** t)) + eps),
                                   rtol=1e-12)


def test_weight_decay_schedule_and_clip():
    params, grads = jnp.array([1.0, -2.0]), jnp.array([0.5, 0.5])
    block = optim.add_decayed_weights(optim.piecewise_constant_schedule(0.1, {1: 0.0}))
    s = block.init(params)
    assert isinstance(s, optim.WeightDecaySchedule)
    out = []
    for _ in range(2):
        u, s = block.update(grads, s, params)
        out.append(np.asarray(u))
    np.testing.assert_allclose(out, [[0.6, 0.3], [0.5, 0.5]], rtol=1e-14)
    u, _ = optim.clip(0.4).update(jnp.array([-1.0, 0.1, 3.0]), optim.EmptyState())
    np.testing.assert_array_equal(u, [-0.4, 0.1, 0.4])


def test_accumulate_micro_batches_inside_a_scan():
    """accumulate(opt, k).init/update inside lax.scan over k micro-batches == one step on
    the mean gradient (how train uses it for in-step micro-batching)."""
    k, params = 4, {"w": jnp.array([0.5, -1.0])}
    xs = jnp.asarray(np.random.default_rng(4).normal(size=(k, 2)))
    loss = lambda p, x: jnp.sum((p["w"] * x) ** 2)  # noqa: E731
    inner = optim.adam(0.1)
    acc = optim.accumulate(inner, k)

    @jax.jit
    def micro(params, inner_state):
        state = acc.init(params)._replace(inner_opt_state=inner_state)

        def body(s, x):
            u, s = acc.update(jax.grad(loss)(params, x), s, params)
            return s, u
        state, updates = jax.lax.scan(body, state, xs)
        return jax.tree_util.tree_map(lambda u: u[-1], updates), state.inner_opt_state

    u, inner_state = micro(params, inner.init(params))
    mean = jax.tree_util.tree_map(lambda *g: sum(g) / k,
                                  *[jax.grad(loss)(params, x) for x in xs])
    want, want_state = inner.update(mean, inner.init(params), params)
    np.testing.assert_allclose(u["w"], want["w"], rtol=1e-12)
    assert int(inner_state[0].count) == 1
    assert optim.AccumulateState is optim.MultiStepsState
    assert optim.AccumulateState._fields[:4] == ("mini_step", "gradient_step",
                                                 "inner_opt_state", "acc_grads")
