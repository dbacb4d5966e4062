"""optax's tests of blocks and combinators, ported to funcnet's shared names.

Sources (optax 0.2.8): ``_src/transform_test.py``, ``_src/update_test.py``,
``_src/base_test.py``, ``transforms/_combining_test.py``, ``_masking_test.py``. Same
inputs and expected values; cases that funcnet answers differently on purpose are in
``test_optim_differences.py``; the wrappers' tests in ``test_optim_ported_wrappers.py``.
"""
import copy
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim

from tests.optim._ported import BUILDERS, INIT, LR, PER_STEP, STEPS, close


# ------------------------------------------------------------------- transform_test


@pytest.mark.parametrize("make", [optim.scale_by_adam, optim.scale_by_rms,
                                  optim.scale_by_stddev], ids=["adam", "rms", "stddev"])
def test_scalers(make):
    scaler = make()
    state = jax.jit(scaler.init)(INIT)
    updates, state = jax.jit(scaler.update)(PER_STEP, state, INIT)
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves((updates, state)))
    assert [u.shape for u in updates] == [p.shape for p in INIT]


def test_scale():
    for i in range(1, STEPS + 1):
        factor = 0.1 ** i
        scaled, _ = optim.scale(factor).update(PER_STEP, {})
        close(scaled, jax.tree_util.tree_map(lambda t, f=factor: t * f, PER_STEP))


def test_rms_match_adam():
    fun = lambda x: sum(jnp.sum(t ** 2) for t in x)  # noqa: E731
    rms = optim.scale_by_rms(decay=0.999, eps_in_sqrt=False, bias_correction=True)
    adam = optim.scale_by_adam(b1=0)
    pr = pa = INIT
    sr, sa = rms.init(INIT), adam.init(INIT)
    for _ in range(5):
        ur, sr = rms.update(jax.grad(fun)(pr), sr)
        pr = optim.apply_updates(pr, ur)
        ua, sa = adam.update(jax.grad(fun)(pa), sa)
        pa = optim.apply_updates(pa, ua)
    close(pa, pr)


# ---------------------------------------------------------- update_test, base_test


def test_apply_updates():
    params = ({"a": jnp.ones((3, 2))}, jnp.ones((1,)))
    new = jax.jit(optim.apply_updates)(params, jax.tree_util.tree_map(lambda t: 2 * t, params))
    close(new, jax.tree_util.tree_map(lambda t: 3 * t, params), rtol=1e-5, atol=1e-10)


def test_apply_updates_mixed_precision():
    params = ({"a": jnp.ones((3, 2), jnp.bfloat16)}, jnp.ones((1,), jnp.bfloat16))
    grads = jax.tree_util.tree_map(lambda t: (2 * t).astype(jnp.float32), params)
    assert all(x.dtype == jnp.bfloat16 for x in
               jax.tree_util.tree_leaves(jax.jit(optim.apply_updates)(params, grads)))


def test_incremental_update():
    p1 = ({"a": jnp.ones((3, 2))}, jnp.ones((1,)))
    p2 = jax.tree_util.tree_map(lambda t: 2 * t, p1)
    close(jax.jit(optim.incremental_update)(p2, p1, 0.5),
          jax.tree_util.tree_map(lambda t: 1.5 * t, p1), rtol=1e-5, atol=1e-10)


def test_set_to_zero_returns_tree_of_correct_zero_arrays():
    grads = ({"a": np.ones((3, 4)), "b": 1.0}, np.ones((1, 2, 3)))
    updates, _ = jax.jit(optim.set_to_zero().update)(grads, optim.EmptyState())
    close(updates, ({"a": np.zeros((3, 4)), "b": 0.0}, np.zeros((1, 2, 3))), rtol=0)


def test_set_to_zero_is_stateless():
    assert jax.jit(optim.set_to_zero().init)(None) == optim.EmptyState()


# ------------------------------------------------------------------ _combining_test


def test_chain():
    blocks = [optim.scale_by_adam(), optim.trace(decay=0, nesterov=False), optim.scale(-LR)]
    chained = optim.chain(*blocks)
    state = chained.init(INIT)
    assert isinstance(state, tuple)
    update = jax.jit(lambda u, s: chained.update(u, s))
    params = INIT
    for _ in range(STEPS):
        updates, state = update(PER_STEP, state)
        assert isinstance(state, tuple)
        params = optim.apply_updates(params, updates)
    manual, states = INIT, [t.init(INIT) for t in blocks]
    for _ in range(STEPS):
        updates, new = PER_STEP, []
        for t, s in zip(blocks, states):
            updates, s = t.update(updates, s)
            new.append(s)
        manual, states = optim.apply_updates(manual, updates), new
    close(manual, params, rtol=1e-4)


def test_extra_args_chaining():
    t1 = optim.Optimizer(lambda p: {}, lambda u, s, p=None: (u, s))  # no **extra_args
    t2 = optim.chain(t1, t1)
    params = {"a": jnp.ones(2)}
    out, _ = t2.update(params, t2.init(params), params, ignored_kwarg="hi")
    close(out, params)


def _map_keys_fn(fn):
    def map_fn(nested):
        return {k: map_fn(v) if isinstance(v, dict) else fn(k, v) for k, v in nested.items()}
    return map_fn


@pytest.mark.parametrize("use_fn", [True, False])
def test_partition(use_fn):
    params = jax.tree_util.tree_map(jnp.asarray, {"a1": 1.0, "b1": 2.0,
                                                  "z1": {"a2": 3.0, "z2": {"c1": 4.0}}})
    updates_in = jax.tree_util.tree_map(lambda x: x / 10.0, params)
    txs = {"a": optim.scale(-1.0), "b": optim.ema(0.0), "c": optim.scale(2.0)}
    labels = _map_keys_fn(lambda k, _: k[0])
    tx = optim.multi_transform(txs, labels if use_fn else labels(params))
    update = jax.jit(tx.update)
    state = jax.jit(tx.init)(params)
    correct = _map_keys_fn(lambda k, v: {"a": -v, "b": v, "c": 2.0 * v}[k[0]])
    updates, state = update(updates_in, state, params)
    close(updates, correct(updates_in))
    updates, _ = update(updates, state)
    close(updates, correct(correct(updates_in)))


def test_partition_extra_args():
    class ArgNotEqual1Error(ValueError):
        pass

    def update_with_arg(updates, state, params=None, *, arg, **extra_args):
        if arg != 1:
            raise ArgNotEqual1Error()
        return updates, state

    opt = optim.multi_transform(
        {"a": optim.Optimizer(lambda p: {"mu": p}, lambda u, s, p=None: (u, s)),
         "b": optim.Optimizer(lambda p: {"mu": p}, update_with_arg)}, ("a", "b"))
    fake = ({"u": jnp.array([1])}, {"v": jnp.array([1])})
    state = opt.init(fake)
    with pytest.raises(TypeError):
        opt.update(fake, state)
    with pytest.raises(ArgNotEqual1Error):
        opt.update(fake, state, arg=2, ignored_kwarg="hi")
    opt.update(fake, state, arg=1, ignored_kwarg="hi")


@pytest.mark.parametrize("container", [list, tuple, dict])
def test_partition_empty(container):
    init, update = optim.multi_transform({0: optim.sgd(1.0)}, lambda _: 0)
    updates, _ = update(container(), init(container()))
    assert updates == container()


@pytest.mark.parametrize("use_extra_label", [False, True])
@pytest.mark.parametrize("use_fn", [False, True])
def test_partition_labels_mismatch(use_extra_label, use_fn):
    params = jax.tree_util.tree_map(jnp.asarray, {"a": 1.0, "b": [2.0, 3.0],
                                                  "c": {"d": 4.0, "e": (5.0, 6.0)}})
    label_tree = {"a": 0, "b": [1, 0], "c": 1}  # a prefix of params
    if use_extra_label:
        label_tree["a"] = 3
    txs = {0: optim.sgd(1.0), 1: optim.adam(1.0, b1=0.0, b2=0.0), 2: optim.trace(1.0)}
    init, update = optim.multi_transform(txs, (lambda _: label_tree) if use_fn else label_tree)
    if use_extra_label:
        with pytest.raises(ValueError, match=r"multi_transform: labels \['3'\] have no"):
            jax.jit(init)(params)
    else:
        jax.jit(update)(jax.tree_util.tree_map(lambda x: x / 10.0, params), jax.jit(init)(params))


# ------------------------------------------------------------------- _masking_test

MASK = {"a": True, "b": [False, True], "c": {"d": True, "e": (False, True)}}
MASK_PARAMS = {"a": 1.0, "b": [2.0, 3.0], "c": {"d": 4.0, "e": (5.0, 6.0)}}


@pytest.mark.parametrize("use_fn", [False, True])
@pytest.mark.parametrize("builder", list(BUILDERS))
def test_masked(builder, use_fn):
    params = jax.tree_util.tree_map(jnp.asarray, MASK_PARAMS)
    updates_in = jax.tree_util.tree_map(lambda x: x / 10.0, params)
    negate = lambda u: jax.tree_util.tree_map(lambda x, m: -x if m else x, u, MASK)  # noqa: E731
    init, update = optim.masked(BUILDERS[builder](), (lambda _: MASK) if use_fn else MASK)
    update = jax.jit(update)
    state = jax.jit(init)(params)
    updates, state = update(updates_in, state, params)
    close(updates, negate(updates_in))
    updates, _ = update(updates, state)
    close(updates, negate(negate(updates_in)))


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_prefix_mask(builder):
    mask = {"a": True, "b": False, "c": {"d": False, "e": True}}
    params = jax.tree_util.tree_map(jnp.asarray, {"a": 1.0, "b": {"f": 2.0},
                                                  "c": {"d": 3.0, "e": ([4.0, 5.0], 6.0)}})
    updates_in = jax.tree_util.tree_map(lambda x: x / 10.0, params)
    flip = lambda m, u: jax.tree_util.tree_map(lambda x: -x, u) if m else u  # noqa: E731
    init, update = optim.masked(BUILDERS[builder](), mask)
    update = jax.jit(update)
    state = jax.jit(init)(params)
    updates, state = update(updates_in, state, params)
    correct = jax.tree_util.tree_map(flip, mask, updates_in)
    close(updates, correct)
    updates, _ = update(updates, state)
    close(updates, jax.tree_util.tree_map(flip, mask, correct))


def test_masked_update_requires_params():
    wd = 0.1
    params = jax.tree_util.tree_map(jnp.asarray, MASK_PARAMS)
    updates_in = jax.tree_util.tree_map(lambda x: x / 10.0, params)
    expect = lambda u, p: jax.tree_util.tree_map(  # noqa: E731
        lambda m, uu, pp: uu + wd * pp if m else uu, MASK, u, p)
    init, update = optim.masked(optim.add_decayed_weights(wd), MASK)
    update = jax.jit(update)
    state = jax.jit(init)(params)
    updates, state = update(updates_in, state, params)
    close(updates, expect(updates_in, params))
    params = optim.apply_updates(params, updates)
    new, _ = update(updates, state, params)
    close(new, expect(updates, params))


@pytest.mark.parametrize("container", [list, tuple, dict])
def test_masked_empty(container):
    init, update = optim.masked(optim.sgd(1.0), container())
    update(container(), init(container()))


@pytest.mark.parametrize("extra_key_in_mask", [False, True])
@pytest.mark.parametrize("use_fn", [False, True])
def test_masked_tree_mismatch_fails(extra_key_in_mask, use_fn):
    mask = copy.deepcopy(MASK)
    params = jax.tree_util.tree_map(jnp.asarray, MASK_PARAMS)
    if extra_key_in_mask:
        mask["c"]["extra"] = True
    else:
        params["c"]["extra"] = 7
    init = optim.masked(optim.sgd(1.0), (lambda _: mask) if use_fn else mask)[0]
    with pytest.raises(ValueError, match=r"masked: mask tree structure is not a prefix"):
        init(params)


def test_mask_fn():
    params = {"a": jnp.ones((1, 2)), "b": (jnp.ones((1,)), np.ones((1, 2, 3)))}
    init, update = optim.masked(optim.add_decayed_weights(0.1),
                                lambda p: jax.tree_util.tree_map(lambda x: x.ndim > 1, p))
    grads = jax.tree_util.tree_map(lambda x: x * 2, params)
    updates, _ = jax.jit(update)(grads, jax.jit(init)(params), params)
    np.testing.assert_allclose(updates["a"], grads["a"] + 0.1 * params["a"])
    np.testing.assert_allclose(updates["b"][0], grads["b"][0])
    np.testing.assert_allclose(updates["b"][1], grads["b"][1] + 0.1 * params["b"][1])


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_nested_mask(builder):
    params = {f"linear_{i}": {"w": jnp.zeros(s), "b": jnp.zeros(s[-1])}
              for i, s in ((1, (1, 1)), (2, (1, 2)), (3, (2, 3)))}
    inner_mask = jax.tree_util.tree_map(lambda _: True, params)
    inner_mask["linear_2"] = False
    inner = optim.masked(BUILDERS[builder](), inner_mask)
    init, update = optim.masked(inner, lambda p: jax.tree_util.tree_map(lambda x: x.ndim > 1, p))
    updates_in = jax.tree_util.tree_map(jnp.ones_like, params)
    correct = copy.deepcopy(updates_in)
    correct["linear_1"]["w"] *= -1.0
    correct["linear_3"]["w"] *= -1.0
    updates, _ = jax.jit(update)(updates_in, jax.jit(init)(params), params)
    close(updates, correct)


def test_masked_state_structure():
    params = {"a": [jnp.ones(1), (jnp.ones(2), jnp.ones(3))], "b": {"c": jnp.ones(4),
                                                                   "d": jnp.ones(5)}}
    tx = optim.masked(optim.sgd(1.0, momentum=0.0), {"a": [True, (True, False)], "b": False})
    trace = jax.jit(tx.init)(params).inner_state[0].trace
    expected = {"a": [jnp.zeros(1), (jnp.zeros(2), optim.MaskedNode())], "b": optim.MaskedNode()}
    assert jax.tree_util.tree_structure(trace) == jax.tree_util.tree_structure(expected)


def test_mask_compatible_callable_pytree():
    @dataclasses.dataclass
    class Module:
        w: jax.Array

        def __call__(self, x):
            return self.w.dot(x)

    jax.tree_util.register_pytree_node(Module, lambda m: ((m.w,), None),
                                       lambda _, c: Module(*c))
    module = Module(jnp.array([1.0, 2.0, 3.0]))
    opt = optim.masked(optim.sgd(1.0), Module(False))
    new, _ = opt.update(module, opt.init(module))
    close(new, module, rtol=0)
