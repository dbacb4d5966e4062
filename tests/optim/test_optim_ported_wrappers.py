"""optax's tests of wrappers, clipping and weight decay, ported to funcnet's shared names.

Sources (optax 0.2.8): ``transforms/_conditionality_test.py`` (apply_if_finite),
``_accumulation_test.py`` (ema, MultiSteps, skip functions), ``_clipping_test.py``,
``_adding_test.py``. Same inputs and expected values.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim
from tests.optim._ported import BUILDERS, PER_STEP, STEPS, _norm, close


# --------------------------------------------------------------- _conditionality_test


def _sgd_extra_args():
    def update(grads, state, params=None, *, foo=None, **extra_args):
        return grads, state
    return optim.chain(optim.sgd(1.0), optim.Optimizer(lambda p: {"foo": 1}, update))


@pytest.mark.parametrize("builder", [*BUILDERS.values(), _sgd_extra_args],
                         ids=[*BUILDERS, "sgd_extra_args"])
def test_apply_if_finite(builder):
    one, nan = jnp.array(1.0), jnp.array(jnp.nan)
    grads_fn = jax.grad(jax.jit(lambda p, x: p * x))
    params = jnp.array(0.0)
    opt = optim.apply_if_finite(builder(), 2)
    state = opt.init(params)
    update = jax.jit(opt.update)  # optax runs it eagerly; one compile is cheaper here
    for x, expected, finite, count in ((one, -1.0, True, 0), (nan, -1.0, False, 1),
                                       (nan, -1.0, False, 2), (one, -2.0, True, 0),
                                       (nan, -2.0, False, 1), (nan, -2.0, False, 2)):
        updates, state = update(grads_fn(params, x), state, params)
        params = optim.apply_updates(params, updates)
        assert float(params) == expected
        assert bool(state.last_finite) == finite
        assert int(state.notfinite_count) == count
    updates, state = update(grads_fn(params, nan), state, params)
    assert bool(jnp.isnan(optim.apply_updates(params, updates)))  # 3rd in a row: accepted
    assert int(state.total_notfinite) == 5


def test_apply_if_finite_pmap():
    half, two = jnp.ones([1]) / 2.0, jnp.ones([1]) * 2.0  # arctanh(2) is NaN
    opt = optim.apply_if_finite(optim.sgd(1.0), 2)

    def fn_update(params, opt_state, x):
        grads = jax.lax.psum(jax.grad(lambda p, x: jnp.arctanh(x) * p)(params, x), "i")
        updates, opt_state = opt.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), opt_state

    fn_update = jax.pmap(fn_update, axis_name="i")
    params = jnp.array(0.0)[None]
    state = jax.tree_util.tree_map(lambda x: x[None], opt.init(jnp.array(0.0)))
    for x, finite, count in ((half, True, 0), (two, False, 1), (two, False, 2),
                             (half, True, 0), (two, False, 1), (two, False, 2)):
        params, state = fn_update(params, state, x)
        assert bool(state.last_finite[0]) == finite
        assert int(state.notfinite_count[0]) == count
    _, state = fn_update(params, state, two)
    assert int(state.total_notfinite[0]) == 5


# ----------------------------------------------------------------- _accumulation_test


def test_ema():
    values, d = jnp.array([5.0, 7.0]), 0.9
    ema = optim.ema(decay=d, debias=False)
    update = jax.jit(ema.update)
    mean, state = update(values[0], ema.init(values[0]))
    np.testing.assert_allclose(mean, (1 - d) * values[0], atol=1e-4)
    mean, _ = update(values[1], state)
    np.testing.assert_allclose(mean, (1 - d) * (values[1] + d * values[0]), atol=1e-2)


def test_ema_debias():
    values, d = jnp.array([5.0, 7.0]), 0.9
    ema = optim.ema(decay=d)
    update = jax.jit(ema.update)
    mean, state = update(values[0], ema.init(values[0]))
    np.testing.assert_allclose(mean, values[0], atol=1e-4)
    mean, state = update(values[1], state)
    biased = (1 - d) * values[1] + d * (1 - d) * values[0]
    np.testing.assert_allclose(mean, biased / (1 - d ** 2), atol=1e-2)
    np.testing.assert_allclose(state.ema, biased, atol=1e-2)  # the state is not debiased


@pytest.mark.parametrize("value,skip", [(float("inf"), True), (-float("inf"), True),
                                        (float("nan"), True), (11.0, False)])
def test_skip_not_finite(value, skip):
    should_skip, state = optim.skip_not_finite([jnp.array(value), jnp.zeros([])],
                                               jnp.zeros([], jnp.int32), None)
    assert bool(should_skip) == skip and bool(state["should_skip"]) == skip
    assert int(state["num_not_finite"]) == int(skip)


@pytest.mark.parametrize("value,skip,norm_sq", [(float("inf"), True, float("inf")),
                                                (float("nan"), True, None),
                                                (11.0, True, 121.0), (0.0, False, 0.0)])
def test_skip_large_updates(value, skip, norm_sq):
    should_skip, state = optim.skip_large_updates([jnp.array(value), jnp.zeros([])],
                                                  jnp.zeros([], jnp.int32), None, 100.0)
    assert bool(should_skip) == skip and bool(state["should_skip"]) == skip
    got = float(state["norm_squared"])
    assert np.isnan(got) if norm_sq is None else got == norm_sq


def _mlp_loss(params, data):  # stands for optax's small flax model
    return jnp.mean((jnp.tanh(data @ params["w1"]) @ params["w2"]) ** 2)


def test_multi_steps():
    k_steps, data = 4, jnp.ones([32, 7])
    params = {"w1": jax.random.normal(jax.random.key(0), (7, 4)) / 3,
              "w2": jax.random.normal(jax.random.key(1), (4, 1))}
    ms = optim.MultiSteps(optim.chain(optim.scale_by_adam(), optim.add_decayed_weights(1e-2),
                                      optim.scale(-1e-4)), k_steps)
    init, update = ms.gradient_transformation()
    step = jax.jit(lambda s, p: update(jax.grad(_mlp_loss)(p, data), s, p))
    state, prev = init(params), _mlp_loss(params, data)
    for idx in range(5 * k_steps):
        updates, state = step(state, params)
        new_params = optim.apply_updates(params, updates)
        new_loss = _mlp_loss(new_params, data)
        if idx % k_steps < k_steps - 1:
            close(new_params, params, rtol=0)
            assert new_loss == prev and not ms.has_updated(state)
        else:
            assert new_loss < prev and ms.has_updated(state)
            prev = new_loss
        params = new_params


def test_multi_steps_every_k_schedule():
    ms = optim.MultiSteps(optim.sgd(1e-4), lambda step: jnp.where(step < 2, 1, 3))
    init, update = ms.gradient_transformation()
    params = grad = {"a": jnp.zeros([])}
    update = jax.jit(update)
    state = init(params)
    assert not ms.has_updated(state)
    for _ in range(2):
        _, state = update(grad, state, params)
        assert ms.has_updated(state)
    for _ in range(5):
        for _ in range(2):
            _, state = update(grad, state, params)
            assert not ms.has_updated(state)
        _, state = update(grad, state, params)
        assert ms.has_updated(state)


def test_multi_steps_scan_dtype_stability():
    ms = optim.MultiSteps(optim.sgd(1e-4), 2, accumulator_dtype=jnp.float32)
    init, update = ms.gradient_transformation()
    params = {"a": jnp.zeros([], jnp.bfloat16)}
    final, _ = jax.lax.scan(
        lambda s, _: update({"a": jnp.ones([], jnp.bfloat16)}, s, params)[::-1],
        init(params), jnp.arange(4))
    assert final.acc_grads["a"].dtype == jnp.float32


def test_multi_steps_computes_mean():
    ms = optim.MultiSteps(optim.scale(1.0), 4, use_grad_mean=True)
    init, update = ms.gradient_transformation()
    params = {"a": jnp.zeros([])}
    state = init(params)
    update = jax.jit(update)
    for g in (1.0, 2.0, 3.0):
        _, state = update({"a": jnp.array(g)}, state, params)
        assert not ms.has_updated(state)
    new, state = update({"a": jnp.array(4.0)}, state, params)
    assert ms.has_updated(state)
    np.testing.assert_array_equal(new["a"], 2.5)


def test_multi_steps_skip_not_finite():
    ms = optim.MultiSteps(optim.sgd(1.0), 2, should_skip_update_fn=optim.skip_not_finite)
    init, update = ms.gradient_transformation()
    init, update = jax.jit(init), jax.jit(update)
    params = {"a": jnp.zeros([])}
    state = init(params)
    for g, mini, expected in ((1.0, 1, 0.0), (1.0, 0, -1.0), (float("inf"), 0, -1.0),
                              (float("nan"), 0, -1.0), (1.0, 1, -1.0), (1.0, 0, -2.0)):
        updates, state = update({"a": jnp.array(g)}, state, params)
        assert int(state.mini_step) == mini
        params = optim.apply_updates(params, updates)
        np.testing.assert_array_equal(params["a"], expected)


MIXED = {"adam": {"learning_rate": 0.1}, "adam_mu_f32": {"learning_rate": 0.1,
                                                         "mu_dtype": jnp.float32}}
MIXED_DTYPES = [jnp.float32, jnp.float16, jnp.bfloat16]


@functools.lru_cache(maxsize=None)
def _mixed_precision_runs():
    """Every (optimizer, update dtype, param dtype): the plain and the MultiSteps updates'
    dtypes and the new params' dtypes over 2 steps (optax runs k + 1 = 5; the first two
    reach both branches), traced as one program."""
    data = jnp.ones([32, 7])

    @jax.jit
    def all_runs():
        out = {}
        for name, kwargs in MIXED.items():
            opt = optim.adam(**kwargs)
            ms = optim.MultiSteps(opt, 4)
            for upd_dtype in MIXED_DTYPES:
                for param_dtype in MIXED_DTYPES:
                    params = {"w1": jnp.full((7, 4), 0.1, param_dtype),
                              "w2": jnp.full((4, 1), 0.1, param_dtype)}
                    state, ms_state, seen = opt.init(params), ms.init(params), []
                    for _ in range(2):
                        grad = jax.tree_util.tree_map(
                            lambda x, d=upd_dtype: x.astype(d),
                            jax.grad(_mlp_loss)(params, data.astype(param_dtype)))
                        updates, state = opt.update(grad, state, params)
                        ms_updates, ms_state = ms.update(grad, ms_state, params)
                        new = optim.apply_updates(params, ms_updates)
                        seen.append((updates, ms_updates, params, new))
                        params = new
                    out[name, upd_dtype.__name__, param_dtype.__name__] = seen
        return out
    return jax.eval_shape(all_runs)  # dtypes are what is checked: no need to compile


@pytest.mark.parametrize("name", list(MIXED))
def test_multi_steps_mixed_precision(name):
    dtypes = lambda t: jax.tree_util.tree_map(lambda x: x.dtype, t)  # noqa: E731
    for key, seen in _mixed_precision_runs().items():
        if key[0] != name:
            continue
        for updates, ms_updates, params, new in seen:
            assert dtypes(updates) == dtypes(ms_updates), key
            assert dtypes(new) == dtypes(params), key


# ------------------------------------------------------- _clipping_test, _adding_test


def test_clip():
    close(optim.clip(1e6).update(PER_STEP, None)[0], PER_STEP)
    close(optim.clip(1.0).update(PER_STEP, None)[0],
          jax.tree_util.tree_map(jnp.ones_like, PER_STEP))


def test_clip_by_global_norm():
    updates = PER_STEP
    for i in range(1, STEPS + 1):
        clipper = optim.clip_by_global_norm(1.0 / i)
        updates, _ = clipper.update(updates, None)
        np.testing.assert_allclose(_norm(updates), 1.0 / i, rtol=0, atol=1e-6)
        close(updates, clipper.update(PER_STEP, None)[0])


def test_add_decayed_weights():
    mask = (True, {"a": True, "b": False})
    tx = optim.add_decayed_weights(0.1, mask=mask)
    zeros = lambda: jnp.zeros((2,), jnp.float32)  # noqa: E731
    ones = lambda: jnp.ones((2,), jnp.float32)  # noqa: E731
    updates = (zeros(), {"a": zeros(), "b": zeros()})
    weights = (ones(), {"a": ones(), "b": ones()})
    new, _ = jax.jit(tx.update)(updates, tx.init(weights), weights)
    close(new, (0.1 * ones(), {"a": 0.1 * ones(), "b": zeros()}))
