"""Round 6's ports of ``optax.contrib`` (DoG, DoWG, LDoG, COCOB, Mechanic, D-Adaptation
AdamW, MoMo, MoMo-Adam, MADGRAD, ACProp, Sophia): errors at construction and at update time
(eagerly and under jit) naming the function and the argument, sweeps over traced
learning rates (vmap), and MoMo / MoMo-Adam inside ``funcnet.train.fit`` (its step
passes ``value=`` the batch loss), equal to the same run with optax's.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim
from funcnet import train
from tests.optim._both_ways import assert_sweep_equals_separate_runs
from tests.train._setup import KEY, MLP, init, subset

P = {"w": jnp.arange(6.0).reshape(2, 3) / 6 - 0.4, "b": jnp.array([0.3, -0.2])}
G = jax.tree_util.tree_map(lambda x: 0.5 * x + 0.1, P)

BUILD_ERRORS = [   # (factory, kwargs, exception, message)
    (optim.dog, dict(init_step=("foo", 1.0)), ValueError,
     r"dog: scale_by_dog: init_step\[0\] must be one of 'distance', 'learning_rate', "
     r"'heuristic', got 'foo'"),
    (optim.dog, dict(init_step=1e-6), TypeError,
     r"dog: scale_by_dog: init_step must be a pair \(tag, value\), got 1e-06"),
    (optim.dog, dict(init_step=("distance", -1.0)), ValueError,
     r"dog: scale_by_dog: init_step\[1\] must be in \[0, inf\), got -1"),
    (optim.dog, dict(learning_rate=-1.0), ValueError,
     r"dog: scale_by_learning_rate: learning_rate must be in \[0, inf\), got -1"),
    (optim.dowg, dict(eps=0.0), ValueError, r"dowg: scale_by_dowg: eps must be in \(0, inf\)"),
    (optim.dowg, dict(init_estim_sq_dist=0.0), ValueError,
     r"dowg: scale_by_dowg: init_estim_sq_dist must be in \(0, inf\), got 0"),
    (optim.scale_by_distance_over_gradients, dict(param_dtype=jnp.int32), TypeError,
     r"scale_by_distance_over_gradients: param_dtype must be a inexact dtype, got int32"),
    (optim.scale_by_distance_over_gradients, dict(global_scale="a"), TypeError,
     r"scale_by_distance_over_gradients: global_scale must be a number"),
    (optim.cocob, dict(alpha=0.0), ValueError,
     r"cocob: scale_by_cocob: alpha must be in \(0, inf\), got 0"),
    (optim.cocob, dict(weight_decay=-1.0), ValueError,
     r"cocob: add_decayed_weights: weight_decay must be in \[0, inf\), got -1"),
    (optim.mechanize, dict(base_optimizer="adam"), TypeError,
     r"mechanize: base_optimizer must be an optimizer"),
    (optim.mechanize, dict(base_optimizer=optim.sgd(1.0), num_betas=0), ValueError,
     r"mechanize: num_betas must be >= 1, got 0"),
    (optim.mechanize, dict(base_optimizer=optim.sgd(1.0), num_betas=2.0), TypeError,
     r"mechanize: num_betas must be an int, got float 2.0"),
    (optim.mechanize, dict(base_optimizer=optim.sgd(1.0), s_init=0.0), ValueError,
     r"mechanize: s_init must be in \(0, inf\), got 0"),
    (optim.dadapt_adamw, dict(betas=0.9), TypeError,
     r"dadapt_adamw: betas must be a pair \(b1, b2\), got 0.9"),
    (optim.dadapt_adamw, dict(betas=(0.9, 1.0)), ValueError,
     r"dadapt_adamw: b2 must be in \[0, 1\), got 1"),
    (optim.dadapt_adamw, dict(estim_lr0=0.0), ValueError,
     r"dadapt_adamw: estim_lr0 must be in \(0, inf\), got 0"),
    (optim.madgrad, dict(learning_rate=0.1, momentum=1.0), ValueError,
     r"madgrad: scale_by_madgrad: momentum must be in \[0, 1\), got 1"),
    (optim.madgrad, dict(learning_rate=None), TypeError,
     r"madgrad: scale_by_madgrad: learning_rate must be a number, a scalar array or a "
     r"schedule"),
    (optim.momo, dict(beta=1.5), ValueError, r"momo: beta must be in \[0, 1\), got 1.5"),
    (optim.momo, dict(adapt_lower_bound=1), TypeError,
     r"momo: adapt_lower_bound must be a bool, got int 1"),
    (optim.momo, dict(lower_bound=float("nan")), ValueError,
     r"momo: lower_bound must be finite, got nan"),
    (optim.momo_adam, dict(b2=-0.1), ValueError, r"momo_adam: b2 must be in \[0, 1\)"),
    (optim.momo_adam, dict(eps=-1.0), ValueError, r"momo_adam: eps must be in \[0, inf\)"),
    (optim.acprop, dict(learning_rate=0.1, b1=1.0), ValueError,
     r"acprop: scale_by_acprop: b1 must be in \[0, 1\), got 1"),
    (optim.acprop, dict(learning_rate=0.1, eps_root=-1.0), ValueError,
     r"acprop: scale_by_acprop: eps_root must be in \[0, inf\), got -1"),
    (optim.sophia, dict(learning_rate=0.1, clip_threshold=0.0), ValueError,
     r"sophia: scale_by_sophia: clip_threshold must be in \(0, inf\), got 0"),
    (optim.sophia, dict(learning_rate=0.1, update_interval=2.5), TypeError,
     r"sophia: scale_by_sophia: update_interval must be an int or an integer scalar array"),
    (optim.sophia, dict(learning_rate=0.1, update_interval=0), ValueError,
     r"sophia: scale_by_sophia: update_interval must be >= 1, got 0"),
    (optim.sophia, dict(learning_rate=0.1, hessian_diagonal_fn="x"), TypeError,
     r"sophia: scale_by_sophia: hessian_diagonal_fn must be an optimizer"),
    (optim.sophia, dict(learning_rate=0.1, verbose=True), ValueError,   # optax: count % 0
     r"sophia: scale_by_sophia: print_win_rate_every_n_steps must be >= 1, got 0"),
    (optim.hutchinson_estimator_diag_hessian, dict(random_seed=3), TypeError,
     r"hutchinson_estimator_diag_hessian: random_seed must be a PRNG key"),
]


def test_construction_errors_name_function_and_argument():
    for factory, kwargs, exc, match in BUILD_ERRORS:
        with pytest.raises(exc, match=match):
            factory(**kwargs)


UPDATE_ERRORS = [   # (optimizer, update's extra arguments, params, exception, message)
    (optim.dog(), {}, None, ValueError, r"dog: scale_by_dog: update needs params"),
    (optim.dowg(), {}, None, ValueError, r"dowg: scale_by_dowg: update needs params"),
    (optim.scale_by_distance_over_gradients(), {}, None, ValueError,
     r"scale_by_distance_over_gradients: update needs params"),
    (optim.cocob(), {}, None, ValueError, r"cocob: scale_by_cocob: update needs params"),
    (optim.mechanize(optim.sgd(0.1)), {}, None, ValueError, r"mechanize: update needs params"),
    (optim.dadapt_adamw(), {}, None, ValueError, r"dadapt_adamw: update needs params"),
    (optim.madgrad(0.1), {}, None, ValueError,
     r"madgrad: scale_by_madgrad: update needs params"),
    (optim.momo(), {}, P, TypeError, r"momo: update needs value="),
    (optim.momo_adam(), {"value": None}, P, TypeError, r"momo_adam: update needs value="),
    (optim.momo(), {"value": 1.0}, None, ValueError, r"momo: update needs params"),
    (optim.sophia(0.1), {}, P, TypeError, r"sophia: scale_by_sophia: "
     r"hutchinson_estimator_diag_hessian: update needs obj_fn= \(params -> loss\)"),
    (optim.sophia(0.1), {"obj_fn": jnp.sum}, None, ValueError,
     r"sophia: scale_by_sophia: update needs params"),
]


@pytest.mark.parametrize("under_jit", [False, True], ids=["eager", "jit"])
def test_update_errors(under_jit):
    for opt, extra, params, exc, match in UPDATE_ERRORS:
        state = opt.init(P)

        def update(g, s, p, opt=opt, extra=extra):    # obj_fn= is not an array
            return opt.update(g, s, p, **extra)

        with pytest.raises(exc, match=match):
            (jax.jit(update) if under_jit else update)(G, state, params)
    # a state of another optimizer (optax's of the same algorithm passes: see _optax)
    with pytest.raises(optim.StateMismatchError,
                       match=r"momo: opt_state is ScaleByAdamState\(count, mu, nu\), expected "
                             r"MomoState\(exp_avg, barf, gamma, lb, count\)"):
        optim.momo().update(G, optim.scale_by_adam().init(P), P, value=1.0)


MAKERS = {   # name: optimizer of a (traced) learning rate
    "dog": lambda lr: optim.dog(lr, ("distance", 0.1)),
    "dowg": lambda lr: optim.dowg(lr),
    "cocob": lambda lr: optim.cocob(alpha=1e3 * lr),    # invariant to the lr's scale
    "mechanize": lambda lr: optim.mechanize(optim.sgd(lr)),
    "dadapt_adamw": lambda lr: optim.dadapt_adamw(lr, estim_lr0=1e-2),
    "madgrad": lambda lr: optim.madgrad(lr),
    "momo": lambda lr: optim.momo(lr),
    "momo_adam": lambda lr: optim.momo_adam(lr),
    "acprop": lambda lr: optim.acprop(lr),
    "sophia": lambda lr: optim.sophia(lr, update_interval=1),
}
LRS = jnp.array([0.01, 0.05, 0.1])


def _run(make, lr):
    def loss(p):
        return jnp.sum(p["w"] ** 2 * jnp.cos(p["w"])) + jnp.sum((p["b"] - 1.0) ** 2) + 0.5

    opt, p = make(lr), P
    state = opt.init(p)
    for _ in range(2):
        v, g = jax.value_and_grad(loss)(p)
        u, state = opt.update(g, state, p, value=v, obj_fn=loss)
        p = optim.apply_updates(p, u)
    return p


def test_vmap_over_learning_rates_equals_separate_runs():
    assert_sweep_equals_separate_runs(_run, MAKERS, LRS)


X, Y = subset(64)
FIT = dict(batch_size=32, key=KEY, progress=False)


def test_momo_adam_trains_in_fit():
    """fit's step passes value= the batch loss (float32 parameters, strict promotion);
    the history logs the learning rate (MoMo's cap). One fit (a compile) only: MoMo
    reads value= the same way; trajectories equal to optax's are in
    test_optim_contrib2_optax.py, float32 and bfloat16 updates in _ported.py."""
    opt = optim.momo_adam(0.05, weight_decay=1e-3)
    _, _, opt_state, hist = train.fit(MLP, *init(MLP), opt, (X, Y), 2, **FIT)
    assert hist["loss"][1] < hist["loss"][0]                        # it trains
    np.testing.assert_allclose(hist["learning_rate"], 0.05)
    assert int(opt_state.count) == 4                                # 2 epochs of 2 steps
    assert opt_state.barf.dtype == jnp.float32 and float(opt_state.barf) > 0


def test_layerwise_dog_keeps_a_scalar_leaf_scalar():
    """optax's LDoG multiplies a (1,) step size into each leaf: a scalar leaf's update
    has shape (1,) there, () here, with the same value; the state is optax's."""
    optax = pytest.importorskip("optax")
    params = {"s": jnp.array(0.7), "v": jnp.array([0.3, -0.2])}
    grads = {"s": jnp.array(0.5), "v": jnp.array([1.0, 2.0])}
    ours = optim.scale_by_distance_over_gradients(1e-2)
    u, s = ours.update(grads, ours.init(params), params)
    theirs = optax.scale_by_distance_over_gradients(1e-2)
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        ut, st = theirs.update(grads, theirs.init(params), params)
    assert u["s"].shape == () and ut["s"].shape == (1,) and u["v"].shape == (2,)
    np.testing.assert_allclose(u["s"], ut["s"][0], rtol=1e-12)
    np.testing.assert_allclose(u["v"], ut["v"], rtol=1e-12)
    assert jax.tree_util.tree_map(jnp.shape, s) == jax.tree_util.tree_map(jnp.shape, st)
