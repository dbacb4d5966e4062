"""Round 6's wrappers and blocks: optax 0.2.8's own test cases (inputs and expected
values from optax's ``_conditionality_test``, ``_layouts_test``, ``_monitoring_test``,
``_clipping_test``, ``update_test``, ``numerics_test``, ``base_test``, ``_combining_test``
and ``_masking_test``; the tests written here), jit and vmap, and every argument error
(eagerly; the errors found at ``update`` also under ``jax.jit``).
"""
import collections
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim


def _norm(tree):
    return jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree_util.tree_leaves(tree)))


# ------------------------------------------------------------ conditional updates


def test_conditionally_transform_and_mask_as_optax_tests():
    """optax's cases: scale(2) for 3 steps then passthrough (transform) or zeros (mask);
    zero_nans' state kept at the skipped steps; a condition on a forwarded extra arg."""
    one, nan = jnp.ones([]), jnp.array(float("nan"))
    first3 = lambda step: step < 3  # noqa: E731
    for wrapper, after in ((optim.conditionally_transform, 1.0),
                           (optim.conditionally_mask, 0.0)):
        opt = wrapper(optim.scale(2.0), first3)
        update, state = jax.jit(opt.update), opt.init(jnp.zeros([]))
        got = []
        for _ in range(8):
            u, state = update(one, state)
            got.append(float(u))
        assert got == [2.0] * 3 + [after] * 5
        assert int(state.step) == 8
        opt = wrapper(optim.zero_nans(), first3)
        update, state = jax.jit(opt.update), opt.init(jnp.zeros([]))
        for g, found in ((nan, True), (nan, True), (one, False)):
            u, state = update(g, state)
            assert float(u) == (0.0 if found else 1.0)
            assert bool(state.inner_state.found_nan) is found
        for _ in range(2):
            u, state = update(nan, state)
            assert bool(state.inner_state.found_nan) is False
            assert (np.isnan(u) if after else float(u) == 0.0)
    opt = optim.conditionally_mask(optim.scale(2.0), lambda step, loss, **kw: loss > 0.1,
                                   forward_extra_args=True)
    update, state = jax.jit(opt.update), opt.init(jnp.zeros([]))
    assert float(update(one, state, loss=0.2)[0]) == 2.0
    assert float(update(one, state, loss=0.0)[0]) == 0.0


def test_conditional_state_layout_and_vmap():
    t = optim.conditionally_transform(optim.sgd(0.1, 0.9), lambda s: s > 0).init(jnp.ones(2))
    m = optim.conditionally_mask(optim.sgd(0.1, 0.9), lambda s: s > 0).init(jnp.ones(2))
    assert t._fields == ("inner_state", "step") and m._fields == ("step", "inner_state")
    assert t.step.dtype == m.step.dtype == jnp.int32
    # vmapped over a batch of models: the condition is the same, the gradients differ
    opt = optim.conditionally_mask(optim.sgd(0.5), lambda s: s % 2 == 1)
    g = jnp.arange(6.0).reshape(3, 2)
    states = jax.vmap(opt.init)(g)
    u0, states = jax.vmap(opt.update)(g, states)
    u1, states = jax.vmap(opt.update)(g, states)
    np.testing.assert_array_equal(u0, np.zeros((3, 2)))
    np.testing.assert_allclose(u1, -0.5 * g)
    np.testing.assert_array_equal(states.step, [2, 2, 2])


# ---------------------------------------------------------------- named_chain


def test_named_chain_as_optax_test_and_state_by_name():
    def scale_by_loss():      # optax's test: a block that needs the extra argument loss
        return optim.stateless(lambda u, p: u).__class__(
            optim.init_empty_state,
            lambda u, s, p=None, *, loss, **kw: (jax.tree_util.tree_map(
                lambda x: x / loss, u), s))

    tx = optim.named_chain(("scale", optim.scale(0.1)), ("scale_loss", scale_by_loss()))
    params = {"a": jnp.ones((4,))}
    state = tx.init(params)
    assert isinstance(state, collections.OrderedDict) and list(state) == ["scale",
                                                                         "scale_loss"]
    updates, _ = tx.update(params, state, params, loss=0.1)
    np.testing.assert_allclose(updates["a"], np.ones(4))
    tx = optim.named_chain(("clip", optim.clip_by_global_norm(1.0)), ("adam", optim.adam(0.1)))
    state = tx.init(params)
    assert state["adam"][0].mu["a"].shape == (4,)
    assert float(optim.current_learning_rate(tx, state)) == 0.1


# ---------------------------------------------------------------------- flatten


def test_flatten_as_optax_test_and_mixed_dtypes():
    params = (jnp.array(2.0), jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0]))
    grads = (jnp.array(1.0), jnp.array([500.0, 5.0]), jnp.array([300.0, 3.0]))
    inner = optim.sgd(1e-2, 0.0)
    flat = optim.flatten(inner)
    u_flat, _ = flat.update(grads, flat.init(params), params)
    u, _ = inner.update(grads, inner.init(params), params)
    np.testing.assert_allclose(np.concatenate([np.ravel(x) for x in u_flat]),
                               np.concatenate([np.ravel(x) for x in u]), rtol=1e-14)
    assert [x.shape for x in u_flat] == [(), (2,), (2,)]
    mixed = {"a": jnp.ones((2, 2), jnp.float32), "b": jnp.ones(3)}
    opt = optim.flatten(optim.adam(0.1))
    u, s = jax.jit(opt.update)(mixed, opt.init(mixed), mixed)
    assert s[0].mu.dtype == jnp.float64 and s[0].mu.shape == (7,)
    assert u["a"].shape == (2, 2)
    assert optim.apply_updates(mixed, u)["a"].dtype == jnp.float32


# ------------------------------------------------------------------- monitors


def test_snapshot_and_monitor_as_optax_tests():
    """The measured norm is that of the updates before the clip; the EMA debiased."""
    f = lambda x: jnp.sum(x ** 2)  # noqa: E731
    before = optim.chain(optim.sgd(0.1, 0.9), optim.monitor({
        "norm": _norm, "norm_ema": optim.measure_with_ema(_norm, 0.9, True)}))
    opt = optim.chain(before, optim.snapshot("snap", _norm), optim.clip_by_global_norm(0.05))
    params = jnp.array([1.0, 2.0, 3.0])
    state_aux, state = before.init(params), opt.init(params)
    assert state[0][1].measurements == {} and state[1].measurement["snap"] == _norm(params)
    ema = 0.0
    update = jax.jit(opt.update)
    for step in range(1, 4):
        g = jax.grad(f)(params)
        u_before, state_aux = before.update(g, state_aux)
        u, state = update(g, state)
        params = optim.apply_updates(params, u)
        norm = _norm(u_before)
        ema = 0.9 * ema + 0.1 * norm
        np.testing.assert_allclose(state[0][1].measurements["norm"], norm, rtol=1e-14)
        np.testing.assert_allclose(state[0][1].measurements["norm_ema"],
                                   ema / (1 - 0.9 ** step), rtol=1e-14)
        np.testing.assert_allclose(state[1].measurement["snap"], norm, rtol=1e-14)
    # a bool measurement is averaged as a float from init on
    clipped = optim.measure_with_ema(lambda u: _norm(u) > 1.0, 0.5, debias=False)
    s = clipped.init(params)
    assert s[1].ema.dtype == jnp.float64
    m, s = clipped.update(jnp.array([3.0, 4.0, 0.0]), s)
    assert float(m) == 0.5


# ---------------------------------------------------------- per-example clipping


def test_per_example_clipping_as_optax_tests():
    grads = [jnp.array([[0, -0.5], [3, 4], [5, 6], [0, 0]]), jnp.array([[0], [5], [-3], [0]])]
    total, n = jax.jit(optim.per_example_global_norm_clip)(grads, l2_norm_clip=1.0)
    answer = [np.array([0, -0.5]) + np.array([3, 4]) / np.sqrt(50)
              + np.array([5, 6]) / np.sqrt(70),
              np.array([5]) / np.sqrt(50) + np.array([-3]) / np.sqrt(70)]
    for a, b in zip(total, answer):
        np.testing.assert_allclose(a, b, rtol=1e-14)
    assert int(n) == 2
    doc = [jnp.array([[0, 0, 0], [0, 3, 4], [4, 0, 3], [3, 4, 0]])]   # optax's docstring
    for fn in (optim.per_example_global_norm_clip, optim.per_example_layer_norm_clip):
        for clip, expected, count in ((jnp.inf, 7.0, 0), (0.0, 0.0, 3), (1.25, 1.75, 3)):
            total, n = fn(doc, clip)
            np.testing.assert_allclose(total[0], np.full(3, expected), rtol=1e-14)
            assert int(jax.tree_util.tree_leaves(n)[0]) == count
    layers = [jnp.array([[0.5], [1.5], [-2.0], [3.0]]), jnp.ones([4, 3, 3, 2])]
    for clip, uniform, second, counts in ((jnp.sqrt(2.0), True, 4 / np.sqrt(18), [3, 4]),
                                          (jnp.sqrt(19.0), False, 4.0, [3, 0])):
        total, n = optim.per_example_layer_norm_clip(layers, clip, uniform)
        np.testing.assert_allclose(total[0], [1.5], rtol=1e-14)
        np.testing.assert_allclose(total[1], np.full((3, 3, 2), second), rtol=1e-14)
        assert [int(c) for c in n] == counts


# ----------------------------------------------------------- norm scalings


def test_normalize_by_update_norm_and_scale_by_param_block_norm():
    """optax's docstring run of normalize_by_update_norm(-1) on sum(x^2), and the
    formulas; vmapped over the scale factor."""
    solver, params = optim.normalize_by_update_norm(scale_factor=-1.0), jnp.array([1., 2., 3.])
    state, seen = solver.init(params), []
    for _ in range(5):
        u, state = solver.update(jax.grad(lambda x: jnp.sum(x ** 2))(params), state, params)
        params = optim.apply_updates(params, u)
        seen.append(f"{float(jnp.sum(params ** 2)):.2E}")
    assert seen == ["7.52E+00", "3.03E+00", "5.50E-01", "6.67E-02", "5.50E-01"]
    g = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}
    out = jax.vmap(lambda s: optim.normalize_by_update_norm(s, 0.0).update(
        g, optim.EmptyState())[0])(jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(out["a"], [[0.6, 0.0], [1.2, 0.0]], rtol=1e-14)
    p = {"a": jnp.array([0.0, 0.0]), "b": jnp.array([[-2.0]])}
    u, _ = optim.scale_by_param_block_norm(0.5).update(g, optim.EmptyState(), p)
    np.testing.assert_allclose(u["a"], [1.5, 0.0])
    np.testing.assert_allclose(u["b"], [[8.0]])


# ----------------------------------------------------------- protocol helpers


def test_stateless_helpers_as_optax_tests():
    params = {"a": jnp.zeros((1, 2)), "b": jnp.ones((1,))}
    updates = {"a": jnp.ones((1, 2)), "b": jnp.full((1,), 2.0)}
    for opt in (optim.stateless(lambda g, p: jax.tree_util.tree_map(
            lambda g_, p_: g_ + 0.1 * p_, g, p)),
                optim.stateless_with_tree_map(lambda g, p: g + 0.1 * p)):
        assert isinstance(opt.init(None), optim.EmptyState)
        new, _ = jax.jit(opt.update)(updates, opt.init(params), params)
        np.testing.assert_allclose(new["b"], [2.1])
        np.testing.assert_allclose(new["a"], np.ones((1, 2)))
    for opt in (optim.stateless(lambda g, _: jax.tree_util.tree_map(lambda x: x * 2, g)),
                optim.stateless_with_tree_map(lambda g, _: g * 2.0)):
        new, _ = opt.update({"linear": jnp.full((5, 3), 3.0)}, opt.init(None))
        np.testing.assert_allclose(new["linear"], np.full((5, 3), 6.0))
    assert optim.init_empty_state({"a": jnp.ones(2)}) == optim.EmptyState()


def test_with_extra_args_support_and_inject_stateful_hyperparams():
    adam = optim.adam(0.1)
    assert optim.with_extra_args_support(adam) is adam
    plain = optim.GradientTransformation(optim.init_empty_state,
                                         lambda u, s, p=None: (u, s))
    wrapped = optim.with_extra_args_support(plain)
    assert wrapped.update(jnp.ones(2), wrapped.init(None), None, loss=1.0)[0].shape == (2,)
    with pytest.warns(DeprecationWarning, match="inject_hyperparams"):
        factory = optim.inject_stateful_hyperparams(optim.sgd)
    opt = factory(learning_rate=optim.linear_schedule(1.0, 0.0, 4))
    state = opt.init(jnp.ones(2))
    assert isinstance(state, optim.InjectStatefulHyperparamsState)
    u, state = opt.update(jnp.ones(2), state)
    np.testing.assert_allclose(u, [-1.0, -1.0])


def test_tree_map_params_as_optax_test():
    params = {"a": {"b": (jnp.zeros((1, 2)), jnp.zeros((2, 2)))},
              "c": {"d": jnp.zeros((1, 2)), "e": (jnp.zeros((1, 2)), jnp.zeros((1, 2)))}}
    expected = jax.tree_util.tree_map(lambda v: v + 1 if v.shape[0] == 1 else v, params)
    inner = optim.GradientTransformation(
        lambda p: {"count": 1, "params": p, "params_copy": p}, lambda u, s, p=None: (u, s))
    result = optim.tree_map_params(inner, lambda v: v + 1 if v.shape[0] == 1 else v,
                                   inner.init(params))
    for a, b in zip(jax.tree_util.tree_leaves(result),
                    jax.tree_util.tree_leaves(inner.init(expected))):
        np.testing.assert_array_equal(a, b)
    opt = optim.adam(0.1)
    specs = optim.tree_map_params(opt.init, lambda p, s: s, opt.init(params),
                                  jax.tree_util.tree_map(lambda p: "spec", params),
                                  transform_non_params=lambda v: None)
    assert specs[0].count is None and specs[0].mu["c"]["d"] == "spec"


def test_periodic_update_as_optax_test_jit_and_vmap():
    old = ({"a": jnp.ones((3, 2))}, jnp.ones((1,)))
    new = jax.tree_util.tree_map(lambda t: 2 * t, old)
    fn = jax.jit(optim.periodic_update)
    for j in range(3):
        for i in range(1, 5):
            assert float(fn(new, old, j * 5 + i, 5)[1][0]) == 1.0
        assert float(fn(new, old, (j + 1) * 5, 5)[1][0]) == 2.0
    picked = jax.vmap(lambda s: optim.periodic_update(new, old, s, 2))(jnp.arange(4))
    np.testing.assert_array_equal(picked[1][:, 0], [2.0, 1.0, 2.0, 1.0])


# --------------------------------------------------------------- tree helpers


def test_safe_increment_as_optax_test():
    for dtype in ("int8", "int32", "uint8", "float16", "float64"):
        dt = jnp.dtype(dtype)
        top = jnp.iinfo(dt).max if jnp.issubdtype(dt, jnp.integer) else jnp.finfo(dt).max
        out = optim.safe_increment(jnp.asarray([3, top], dt))
        assert out.dtype == dt
        np.testing.assert_array_equal(out, np.asarray([4, top], dt))
    assert optim.safe_int32_increment is optim.safe_increment
    for dtype in ("bool", "complex64"):
        with pytest.raises(ValueError, match="safe_increment: count must have an integer"):
            optim.safe_increment(jnp.asarray(1, dtype))


# ---------------------------------------------------------------------- errors

_ADAM = optim.adam(0.1)
CONSTRUCTION_ERRORS = [
    (lambda: optim.conditionally_mask("adam", lambda s: True), TypeError,
     "conditionally_mask: inner must be an optimizer"),
    (lambda: optim.conditionally_transform(_ADAM, 3), TypeError,
     "conditionally_transform: should_transform_fn must be callable"),
    (lambda: optim.conditionally_transform(_ADAM, lambda s: True, 1), TypeError,
     "conditionally_transform: forward_extra_args must be a bool"),
    (lambda: optim.named_chain(("a", _ADAM), ("a", _ADAM)), ValueError,
     "named_chain: names must be unique"),
    (lambda: optim.named_chain(_ADAM), TypeError,
     "named_chain: argument 0 must be a \\(name, transformation\\) pair"),
    (lambda: optim.named_chain(("a", 3)), TypeError,
     "named_chain: argument 0 \\('a'\\) must be an optimizer"),
    (lambda: optim.flatten(None), TypeError, "flatten: inner must be an optimizer"),
    (lambda: optim.with_extra_args_support(3), TypeError,
     "with_extra_args_support: tx must be an optimizer"),
    (lambda: optim.stateless(3), TypeError, "stateless: f must be callable"),
    (lambda: optim.stateless_with_tree_map(None), TypeError,
     "stateless_with_tree_map: f must be callable"),
    (lambda: optim.tree_map_params(3, lambda x: x, {}), TypeError,
     "tree_map_params: initable must be callable"),
    (lambda: optim.tree_map_params(optim.adam(0.1), lambda x: x, {"a": 1}), ValueError,
     "tree_map_params: state does not have the structure initable's init builds"),
    (lambda: optim.normalize_by_update_norm(0.0), ValueError,
     "normalize_by_update_norm: scale_factor must be non-zero"),
    (lambda: optim.normalize_by_update_norm(1.0, -1.0), ValueError,
     "normalize_by_update_norm: eps must be in"),
    (lambda: optim.scale_by_param_block_norm(-1.0), ValueError,
     "scale_by_param_block_norm: min_scale must be in"),
    (lambda: optim.snapshot(3, _norm), TypeError, "snapshot: measure_name must be a str"),
    (lambda: optim.snapshot("n", 3), TypeError, "snapshot: measure must be callable"),
    (lambda: optim.measure_with_ema(_norm, 1.5), ValueError, "ema: decay must be in"),
    (lambda: optim.monitor([_norm]), TypeError, "monitor: measures must be a dict"),
    (lambda: optim.monitor({"a": 3}), TypeError, "monitor: measures\\['a'\\] must be an opt"),
    (lambda: optim.per_example_global_norm_clip([jnp.ones((2, 3)), jnp.ones(3)], 1.0),
     ValueError, "per_example_global_norm_clip: every leaf of grads must have the batch"),
    (lambda: optim.per_example_global_norm_clip([jnp.ones((2, 3))], -1.0), ValueError,
     "per_example_global_norm_clip: l2_norm_clip must be >= 0"),
    (lambda: optim.per_example_layer_norm_clip([jnp.ones((2, 3))], "1"), TypeError,
     "per_example_layer_norm_clip: global_l2_norm_clip must be a number"),
    (lambda: optim.per_example_layer_norm_clip([jnp.ones((2, 3))], 1.0, 1), TypeError,
     "per_example_layer_norm_clip: uniform must be a bool"),
    (lambda: optim.periodic_update({"a": jnp.ones(2)}, {"b": jnp.ones(2)}, 1, 2), ValueError,
     "periodic_update: new_tensors tree structure does not match old_tensors"),
    (lambda: optim.periodic_update(jnp.ones(2, jnp.float32), jnp.ones(2), 1, 2), TypeError,
     "periodic_update: new_tensors has dtype float32, expected float64"),
    (lambda: optim.periodic_update(jnp.ones(2), jnp.ones(2), 1.0, 2), TypeError,
     "periodic_update: steps must be an integer scalar"),
    (lambda: optim.periodic_update(jnp.ones(2), jnp.ones(2), 1, 0), ValueError,
     "periodic_update: update_period must be >= 1"),
    (lambda: optim.update_moment(jnp.ones(2), jnp.ones(2), 0.9, "2"), TypeError,
     "update_moment: order must be a Python number"),
    (lambda: optim.update_moment({"a": jnp.ones(2)}, {"b": jnp.ones(2)}, 0.9, 2), ValueError,
     "update_moment: moments tree structure does not match updates"),
    (lambda: optim.safe_norm(jnp.ones(2), "0"), TypeError,
     "safe_norm: min_norm must be a number"),
    (lambda: optim.safe_root_mean_squares(jnp.ones(2), jnp.ones(2)), ValueError,
     "safe_root_mean_squares: min_rms must be a scalar"),
    (lambda: optim.microbatch(3, 0, 2), TypeError, "microbatch: fun must be callable"),
    (lambda: optim.microbatch(jnp.sum, 0, 2.0), TypeError,
     "microbatch: microbatch_size must be an int"),
    (lambda: optim.microbatch(jnp.sum, 0, 2, in_axes=(0, 1)), ValueError,
     "microbatch: in_axes has 2 entries, expected one per argnums"),
    (lambda: optim.microbatch(jnp.sum, 0, 3)(jnp.ones(4)), ValueError,
     "microbatch: microbatch_size 3 does not divide the batch size 4"),
    (lambda: optim.microbatch(lambda a, b: a, (0, 1), 2)(jnp.ones(4), jnp.ones(6)), ValueError,
     "microbatch: the batch arguments have batch axes of sizes \\[4, 6\\]"),
    (lambda: optim.microbatch(jnp.sum, 0, 2, optim.microbatching.AccumulationType.MEAN)(
        jnp.ones(4, jnp.int32)), ValueError, "microbatch: MEAN and RUNNING_MEAN accumulate"),
    (lambda: optim.microbatch(jnp.sum, 0, 2, "sum")(jnp.ones(4)), ValueError,
     "microbatch: unknown accumulator 'sum'"),
]


@pytest.mark.parametrize("make, error, match", CONSTRUCTION_ERRORS,
                         ids=[m.split(":")[0] + str(i) for i, (_, _, m) in
                              enumerate(CONSTRUCTION_ERRORS)])
def test_argument_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_update_errors_eagerly_and_under_jit():
    g = {"a": jnp.ones(2)}
    cases = [
        (optim.conditionally_mask(optim.sgd(0.1), lambda s: jnp.ones(2) > 0), ValueError,
         "conditionally_mask: should_transform_fn must return a scalar, got shape \\(2,\\)"),
        (optim.named_chain(("a", optim.sgd(0.1))), optim.StateMismatchError,
         "named_chain: opt_state must be a dict with keys \\['a'\\]"),
        (optim.stateless_with_tree_map(lambda u, p: u), ValueError,
         "stateless_with_tree_map: updates tree structure does not match params"),
        (optim.scale_by_param_block_norm(), ValueError,
         "scale_by_param_block_norm: update needs params"),
        (optim.snapshot("n", _norm), optim.StateMismatchError,
         "snapshot: opt_state is .*expected SnapshotState"),
        (optim.monitor({"n": _norm}), optim.StateMismatchError,
         "monitor: opt_state is .*expected MonitorState"),
        (optim.conditionally_transform(optim.sgd(0.1), lambda s: True),
         optim.StateMismatchError, "conditionally_transform: opt_state is"),
    ]
    for opt, error, match in cases:
        state = opt.init(g)
        if "opt_state" in match:
            state = ({"b": state} if "named_chain" in match else optim.EmptyState())
        params = {"b": jnp.ones(2)} if "stateless_with" in match else None
        for run in (opt.update, jax.jit(opt.update)):
            with pytest.raises(error, match=match):
                run(g, state, params)
    with pytest.raises(ValueError, match=re.escape("periodic_update: update_period must")):
        jax.jit(lambda s: optim.periodic_update(g, g, s, 0))(1)
