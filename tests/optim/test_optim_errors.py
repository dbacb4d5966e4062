"""Bad hyperparameters and mismatched trees raise clear errors; traced values are not checked."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim

jax.config.update("jax_enable_x64", True)

BAD_HYPERPARAMETERS = [
    (lambda: optim.sgd(-0.1), r"sgd: learning_rate must be >= 0, got -0\.1"),
    (lambda: optim.adam(-1e-3), r"adam: learning_rate must be >= 0, got -0\.001"),
    (lambda: optim.adam(1e-3, b1=1.2), r"adam: b1 must be in \[0, 1\), got 1\.2"),
    (lambda: optim.adam(1e-3, b2=1.0), r"adam: b2 must be in \[0, 1\), got 1"),
    (lambda: optim.adam(1e-3, b1=-0.1), r"adam: b1 must be in \[0, 1\), got -0\.1"),
    (lambda: optim.adam(1e-3, eps=-1e-8), r"adam: eps must be >= 0, got -1e-08"),
    (lambda: optim.adam(1e-3, eps_root=-1.0), r"adam: eps_root must be >= 0, got -1"),
    (lambda: optim.adam(1e-3, form="modified"), r"adam: form must be 'standard' or 'folded'"),
    (lambda: optim.adam(np.float64(np.nan)), r"adam: learning_rate must be >= 0, got nan"),
    (lambda: optim.adam(jnp.asarray(-0.5)), r"adam: learning_rate must be >= 0, got -0\.5"),
    (lambda: optim.adamw(1e-3, weight_decay=-0.1), r"adamw: weight_decay must be >= 0, got -0\.1"),
    (lambda: optim.adamw(1e-3, b2=2.0), r"adamw: b2 must be in \[0, 1\), got 2"),
    (lambda: optim.momentum(0.1, beta=1.0), r"momentum: beta must be in \[0, 1\), got 1"),
    (lambda: optim.momentum(0.1, form="heavy"), r"momentum: form must be 'classic' or 'ema'"),
    (lambda: optim.nesterov(0.1, beta=-0.5), r"nesterov: beta must be in \[0, 1\), got -0\.5"),
    (lambda: optim.rmsprop(0.1, decay=1.5), r"rmsprop: decay must be in \[0, 1\), got 1\.5"),
    (lambda: optim.rmsprop(0.1, eps=-1.0), r"rmsprop: eps must be >= 0, got -1"),
    (lambda: optim.adagrad(0.1, eps=-1.0), r"adagrad: eps must be >= 0, got -1"),
    (lambda: optim.adagrad(-0.1), r"adagrad: learning_rate must be >= 0, got -0\.1"),
    (lambda: optim.clip_by_global_norm(0.0), r"clip_by_global_norm: max_norm must be > 0, got 0"),
    (lambda: optim.clip_by_global_norm(-1.0), r"clip_by_global_norm: max_norm must be > 0, got -1"),
    (lambda: optim.add_decayed_weights(-1.0), r"add_decayed_weights: weight_decay must be >= 0"),
    (lambda: optim.accumulate(optim.sgd(0.1), 0), r"accumulate: every_k must be >= 1, got 0"),
    (lambda: optim.exponential_decay(1.0, 0.5, 0),
     r"exponential_decay: transition_steps must be >= 1, got 0"),
    (lambda: optim.cosine_decay(1.0, 100, alpha=1.5), r"cosine_decay: alpha must be in \[0, 1\]"),
    (lambda: optim.warmup_cosine_decay(0.0, 1.0, 10, 10),
     r"warmup_cosine_decay: decay_steps must be > warmup_steps, got decay_steps=10"),
    (lambda: optim.piecewise_constant(1.0, {-1: 0.5}), r"piecewise_constant: boundary must be >= 0"),
    (lambda: optim.scale_by_adam(b1=1.0), r"scale_by_adam: b1 must be in \[0, 1\), got 1"),
]


@pytest.mark.parametrize("make,match", BAD_HYPERPARAMETERS,
                         ids=[m for _, m in BAD_HYPERPARAMETERS])
def test_bad_hyperparameter_raises(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make,match", [
    (lambda: optim.accumulate(optim.sgd(0.1), 1.5), r"accumulate: every_k must be an int, got float"),
    (lambda: optim.adam("0.1"), r"adam: learning_rate must be a number"),
    (lambda: optim.cosine_decay(1.0, 10.0), r"cosine_decay: decay_steps must be an int"),
    (lambda: optim.piecewise_constant(1.0, [(10, 0.5)]), r"piecewise_constant: boundaries_and_scales"),
    (lambda: optim.chain(optim.sgd(0.1), 3), r"chain: argument 1 must be an Optimizer"),
])
def test_bad_types_raise_type_error(make, match):
    with pytest.raises(TypeError, match=match):
        make()


def test_traced_hyperparameters_are_not_validated():
    """Negative or out-of-range *traced* values are the caller's business (no tracer error)."""
    def f(lr, b1):
        opt = optim.adam(lr, b1)
        return opt.update(jnp.ones(2), opt.init(jnp.ones(2)))[0]

    out = jax.jit(f)(-0.1, 0.5)
    assert out.shape == (2,)
    jax.vmap(f)(jnp.array([0.1, -0.1]), jnp.array([0.5, 1.5]))


PARAMS = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}


@pytest.mark.parametrize("make", [optim.adam, optim.sgd, optim.momentum, optim.rmsprop,
                                  optim.adagrad, optim.adamw])
def test_grads_tree_mismatch_with_params_shows_both_structures(make):
    opt = make(0.1)
    state = opt.init(PARAMS)
    with pytest.raises(ValueError, match=r"grads tree structure does not match params:\n"
                                         r"  grads: PyTreeDef\(\{'c': \*, 'w': \*\}\)\n"
                                         r"  params: PyTreeDef\(\{'b': \*, 'w': \*\}\)"):
        opt.update({"w": jnp.ones((2, 3)), "c": jnp.zeros(3)}, state, PARAMS)


@pytest.mark.parametrize("make,state_name", [
    (optim.adam, "state.mu"), (optim.momentum, "state.velocity"), (optim.rmsprop, "state.nu"),
    (optim.adagrad, "state.sum_of_squares"),
])
def test_grads_tree_mismatch_with_state_without_params(make, state_name):
    opt = make(0.1)
    state = opt.init(PARAMS)
    with pytest.raises(ValueError, match=rf"grads tree structure does not match {state_name}"
                                         r":\n  grads: PyTreeDef\(\[\*, \*\]\)"):
        jax.jit(opt.update)([jnp.ones((2, 3)), jnp.zeros(3)], state)


def test_leaf_shape_mismatch_is_caught():
    opt = optim.adam(0.1)
    with pytest.raises(ValueError, match=r"adam: grads\['b'\] has shape \(1,\), expected \(3,\)"):
        opt.update({"w": jnp.ones((2, 3)), "b": jnp.zeros(1)}, opt.init(PARAMS), PARAMS)
    with pytest.raises(ValueError, match=r"scale_by_adam: grads\['b'\] has shape \(1,\)"):
        opt.update({"w": jnp.ones((2, 3)), "b": jnp.zeros(1)}, opt.init(PARAMS))


def test_integer_grads_raise_type_error():
    opt = optim.sgd(0.1)
    with pytest.raises(TypeError, match=r"sgd: grads\['b'\] must have a floating dtype, got int32"):
        opt.update({"w": jnp.ones((2, 3)), "b": jnp.zeros(3, jnp.int32)}, opt.init(PARAMS))


def test_accumulate_and_apply_updates_mismatch():
    acc = optim.accumulate(optim.sgd(0.1), 2)
    with pytest.raises(ValueError, match=r"accumulate: grads tree structure does not match "
                                         r"state\.acc_grads"):
        acc.update({"w": jnp.ones((2, 3))}, acc.init(PARAMS))
    with pytest.raises(ValueError, match=r"apply_updates: updates tree structure does not "
                                         r"match params:\n  updates: PyTreeDef"):
        optim.apply_updates(PARAMS, {"w": jnp.ones((2, 3))})


def test_add_decayed_weights_needs_params_and_matching_mask():
    wd = optim.add_decayed_weights(0.1, mask={"w": True})
    with pytest.raises(ValueError, match=r"add_decayed_weights: update needs params"):
        wd.update(PARAMS, optim.EmptyState())
    with pytest.raises(ValueError, match=r"add_decayed_weights: mask tree structure does not "
                                         r"match params:\n  mask: PyTreeDef\(\{'w': \*\}\)"):
        wd.update(PARAMS, optim.EmptyState(), PARAMS)
