"""Schedule-free learning: optax's tests ported (optax 0.2.8,
``contrib/_schedule_free_test.py`` and the examples of ``_schedule_free.py``'s
docstrings) and ``schedule_free_eval_params`` on wrapped states. Trajectories and
states against optax are in ``test_optim_contrib.py``."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim


def _run(opt, params, n=5, loss=lambda x: jnp.sum(x ** 2)):
    """``n`` jitted steps; the objective at the evaluation params after each."""
    @jax.jit
    def step(p, s):
        u, s = opt.update(jax.grad(loss)(p), s, p)
        p = optim.apply_updates(p, u)
        return p, s, loss(optim.schedule_free_eval_params(s, p))

    state, out = opt.init(params), []
    for _ in range(n):
        params, state, f = step(params, state)
        out.append(float(f))
    return params, state, out


def test_docstring_examples():
    """optax's printed objectives (3 digits) of its two examples, float32 as there."""
    x0 = jnp.array([1.0, 2.0, 3.0], jnp.float32)
    _, _, sgd = _run(optim.schedule_free_sgd(), x0)
    np.testing.assert_allclose(sgd[2:], [9.96e-01, 8.06e-01, 2.41e-01], rtol=5e-3)
    assert sgd[0] == pytest.approx(14.0) and abs(sgd[1]) < 1e-10
    _, _, adamw = _run(optim.schedule_free_adamw(1.0), x0)
    np.testing.assert_allclose(adamw, [5.00, 3.05, 1.73, 8.94e-01, 4.13e-01], rtol=5e-3)


def test_learning_rate_zero_evaluates_at_the_start():
    x0 = jnp.array([1.0, 2.0])
    opt = optim.schedule_free(optim.sgd(0.0, momentum=0.0), learning_rate=0.0)
    params, state, _ = _run(opt, x0)
    np.testing.assert_allclose(optim.schedule_free_eval_params(state, params), x0)


def test_adamw_shortcut_is_the_wrapper_of_adamw_without_momentum():
    x0 = jnp.array([1.0, 2.0])
    short = _run(optim.schedule_free_adamw(1.0, b1=0.9, weight_decay=1e-4), x0)[0]
    wrapped = _run(optim.schedule_free(optim.adamw(1.0, b1=0.0, weight_decay=1e-4),
                                       learning_rate=1.0, b1=0.9), x0)[0]
    np.testing.assert_allclose(short, wrapped, rtol=1e-6, atol=1e-6)


def test_scalar_params_and_buffer_donation():
    opt = optim.schedule_free_sgd()
    scalar = jnp.ones((), jnp.float32)
    out = optim.schedule_free_eval_params(opt.init(scalar), scalar)
    assert out.shape == () and out.dtype == jnp.float32
    x0 = jnp.array([-1.0, 10.0, 1.0], jnp.float32)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, s):
        u, s = opt.update(2 * (p - 1.0), s, p)
        return optim.apply_updates(p, u), s

    p, s = step(x0, opt.init(x0))     # z is a copy: params and state donate apart
    assert np.all(np.isfinite(p)) and int(s.step_count) == 2


@pytest.mark.parametrize("params_dtype", ["bfloat16", "float32", "complex64", None])
@pytest.mark.parametrize("state_dtype", ["bfloat16", "float32", "complex64", None])
def test_explicit_dtype(params_dtype, state_dtype):
    if (params_dtype == "complex64") and state_dtype in ("bfloat16", "float32"):
        pytest.skip("complex params with a real state: not supported (as optax)")
    opt = optim.schedule_free(optim.sgd(1.0, momentum=0.0), learning_rate=1.0,
                              state_dtype=state_dtype)
    state = opt.init(jnp.zeros(2, params_dtype))
    want = state_dtype or params_dtype or jnp.result_type(float)
    assert state.z.dtype == jnp.dtype(want)


def test_eval_params_find_the_state_inside_wrappers():
    """funcnet's extension: a chain / apply_if_finite state holding a ScheduleFreeState
    works (optax needs the ScheduleFreeState itself)."""
    x0 = jnp.array([1.0, 2.0, 3.0])
    inner = optim.schedule_free_sgd(0.1)
    params, state, _ = _run(inner, x0, n=2)
    want = optim.schedule_free_eval_params(state, params)
    np.testing.assert_allclose(want, (params - 0.1 * state.z) / 0.9, rtol=1e-12)
    for wrapped in (optim.chain(optim.clip_by_global_norm(10.0), inner),
                    optim.apply_if_finite(inner, 2)):
        p, s, _ = _run(wrapped, x0, n=2)
        np.testing.assert_allclose(optim.schedule_free_eval_params(s, p), want, rtol=1e-12)
    with pytest.raises(ValueError, match=r"schedule_free_eval_params: state holds no "
                                         r"ScheduleFreeState"):
        optim.schedule_free_eval_params(optim.adam(0.1).init(x0), x0)
    with pytest.raises(ValueError, match=r"schedule_free_eval_params: grads tree structure"):
        optim.schedule_free_eval_params(state, {"x": x0})


def test_learning_rate_and_the_average_weights():
    """The base optimizer's rate is reported; weight_lr_power=0 gives the uniform
    average of the z iterates (c_t = 1/t)."""
    opt = optim.schedule_free_sgd(0.5, warmup_steps=4)
    state = opt.init(jnp.ones(2))
    assert float(optim.current_learning_rate(opt, state)) == 0.0
    x0 = jnp.array([3.0])
    opt = optim.schedule_free(optim.sgd(0.25), 0.25, b1=0.5, weight_lr_power=0.0)
    s, p, zs = opt.init(x0), x0, []
    for _ in range(3):
        u, s = opt.update(2 * p, s, p)
        p = p + u
        zs.append(s.z)
    np.testing.assert_allclose(optim.schedule_free_eval_params(s, p),
                               np.mean(zs, axis=0), rtol=1e-12)


def test_update_needs_params():
    opt = optim.schedule_free_adamw()
    x = jnp.ones(2)
    for update in (opt.update, jax.jit(opt.update)):
        with pytest.raises(ValueError, match=r"schedule_free: update needs params"):
            update(x, opt.init(x))


@pytest.mark.parametrize("lib", ["funcnet", "optax"])
def test_fit_evaluates_at_the_eval_params_and_returns_the_training_iterate(lib):
    """``fit``'s eval_data metrics are those of ``schedule_free_eval_params`` (funcnet's
    or optax's optimizer); the params it returns stay the iterate ``y`` that resumes, and
    ``eval_params`` of another optimizer's state is the params themselves."""
    from funcnet import train
    from tests.train._setup import KEY, MLP, init, subset
    x, y = subset(64)
    params, state = init(MLP)
    if lib == "optax":
        optax = pytest.importorskip("optax")
        opt = optax.contrib.schedule_free_adamw(1e-2)
    else:
        opt = optim.schedule_free_adamw(1e-2)
    with jax.numpy_dtype_promotion("standard"):
        params, state, opt_state, history = train.fit(
            MLP, params, state, opt, (x, y), 2, batch_size=32, key=KEY, progress=False,
            eval_data=(x, y))
        at_x = train.evaluate(MLP, optim.eval_params(opt_state, params), state, x, y)
        at_y = train.evaluate(MLP, params, state, x, y)
    np.testing.assert_allclose(history["eval_loss"][-1], at_x["loss"], rtol=1e-6)
    assert abs(at_x["loss"] - at_y["loss"]) > 1e-4
    adam_state = optim.adam(0.1).init(params)
    assert optim.eval_params(adam_state, params) is params
