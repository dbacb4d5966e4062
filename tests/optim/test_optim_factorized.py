"""Adafactor (``scale_by_factored_rms``, ``adafactor``) against optax on leaves that are
factored (ranks 2 and 3, ties between axes, leaves too small to factor), states in both
directions, optax's ``factorized_test.py`` ported, and the rank-1 property by hand.

The unfactored trajectories are also in ``test_optim_optax.py`` (drop-in calls) and
against the paper's formula in ``test_optim_trajectories.py``.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim

from tests.optim._ported import INIT, PER_STEP

optax = pytest.importorskip("optax")

_rng = np.random.default_rng(0)
PARAMS = {"k": jnp.asarray(_rng.normal(size=(4, 3))), "t": jnp.asarray(_rng.normal(size=(2, 5, 3))),
          "b": jnp.asarray(_rng.normal(size=3)), "sq": jnp.asarray(_rng.normal(size=(3, 3)))}
TARGET = jax.tree_util.tree_map(lambda x: 0.3 * x + 0.1, PARAMS)
STEPS = 20


def loss(p):
    return sum(jnp.sum((x - t) ** 2 * (1 + jnp.arange(x.size).reshape(x.shape) / x.size))
               for x, t in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(TARGET)))


_DECAY = "lambda i, e: 1.0 - (jnp.abs(i).astype(jnp.float64) + 1.0) ** (-e)"
CALLS = [  # min_dim_size_to_factor <= 3 factors "k", "t" (axes 1 and 2 of 3) and "sq"
    "adafactor()",
    "adafactor(0.05, min_dim_size_to_factor=2)",
    "adafactor(0.05, 3, 0.7, 0, False, None, 0.9, jnp.float64, 1e-3, 1e-20, True,"
    " {'k': True, 't': False, 'b': True, 'sq': False})",
    "adafactor(cosine_decay_schedule(0.05, 30), min_dim_size_to_factor=3, momentum=0.5)",
    "adafactor(0.05, min_dim_size_to_factor=2, factored=False)",
    f"chain(scale_by_factored_rms(True, 0.5, 2, 3, 1e-10, {_DECAY}), scale(-0.01))",
    "chain(clip_by_block_rms(0.1), scale_by_param_block_rms(0.5), scale(-0.1))",
]

SWAPPED = CALLS[1:3]


def _build(lib, call):
    return eval(call, {"jnp": jnp, **{k: getattr(lib, k) for k in dir(lib)
                                      if not k.startswith("_")}})


def _steps(opt, p, s, n):
    """``n`` steps; the first outside the scan (optax's update returns its own state
    classes for a funcnet state, so the carry settles after one step)."""
    def step(carry, _=None):
        p, s = carry
        u, s = opt.update(jax.grad(loss)(p), s, p)
        return (jax.tree_util.tree_map(lambda a, b: a + b, p, u), s), None
    return jax.lax.scan(step, step((p, s))[0], None, length=n - 1)[0]


@functools.lru_cache(maxsize=None)
def _runs():
    """Per call: funcnet alone, optax alone, and (SWAPPED) each library continuing the
    other's state after STEPS // 2 steps; all in one compiled program."""
    def all_runs():
        out = {}
        with jax.numpy_dtype_promotion("standard"):  # optax is not strict-clean
            for call in CALLS:
                f, o = _build(optim, call), _build(optax, call)
                half = STEPS // 2
                pf, sf = _steps(f, PARAMS, f.init(PARAMS), half)
                po, so = _steps(o, PARAMS, o.init(PARAMS), half)
                out[call] = {"funcnet": _steps(f, pf, sf, half), "optax": _steps(o, po, so, half)}
                if call in SWAPPED:
                    out[call].update({"funcnet->optax": _steps(o, pf, sf, half),
                                      "optax->funcnet": _steps(f, po, so, half)})
        return out
    return jax.jit(all_runs)()


@pytest.mark.parametrize("call", CALLS)
def test_factored_trajectories_and_states_match_optax(call):
    runs = _runs()[call]
    want, want_state = runs["optax"]
    assert not np.allclose(want["k"], PARAMS["k"])  # it moved
    for name, (p, s) in runs.items():
        for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=name)
        assert ([x.shape for x in jax.tree_util.tree_leaves(s)]
                == [x.shape for x in jax.tree_util.tree_leaves(want_state)]), name


def test_factored_state_shapes_are_optax_placeholders():
    """Factored leaves keep two vectors (the largest axis removed from v_row, the second
    largest from v_col) and a (1,) v; the others the reverse."""
    ours = optim.scale_by_factored_rms(min_dim_size_to_factor=3).init(PARAMS)
    theirs = optax.scale_by_factored_rms(min_dim_size_to_factor=3).init(PARAMS)
    assert type(ours).__name__ == type(theirs).__name__ == "FactoredState"
    assert ours._fields == theirs._fields
    shapes = lambda s: jax.tree_util.tree_map(lambda x: x.shape, tuple(s)[1:])  # noqa: E731
    assert shapes(ours) == shapes(theirs)
    assert ours.v_row["t"].shape == (2, 3) and ours.v_col["t"].shape == (2, 5)


def test_rank_one_squared_gradient_is_estimated_exactly():
    """With |g|^2 = a b^T (rank 1) and eps = 0, the factored estimate R C / mean(R) is
    |g|^2 itself: the first factored update equals the unfactored one, g / |g| = sign(g)."""
    a, b = jnp.array([1.0, 4.0, 0.25, 9.0]), jnp.array([2.0, 0.5, 1.0])
    g = jnp.sqrt(a[:, None] * b[None, :]) * jnp.array([[1.0, -1.0, 1.0]])
    for factored in (True, False):
        opt = optim.scale_by_factored_rms(factored, min_dim_size_to_factor=2, epsilon=0.0)
        u, s = opt.update(g, opt.init(g), g)
        np.testing.assert_allclose(u, jnp.sign(g), rtol=1e-12)
        assert (s.v.shape == (1,)) == factored


# ------------------------------------------------------------- factorized_test.py


def test_scale_by_factored_rms():
    scaler = optim.scale_by_factored_rms()
    state = jax.jit(scaler.init)(INIT)
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(state))
    updates, state = jax.jit(scaler.update)(PER_STEP, state, INIT)
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves((updates, state)))
    assert [u.shape for u in updates] == [p.shape for p in INIT]


@functools.lru_cache(maxsize=None)
def _dtype_runs():
    @jax.jit
    def all_runs():
        out = {}
        for factored in (True, False):
            for dtype in ("bfloat16", "float32"):
                # factored only when both axes reach min_dim_size_to_factor (128)
                params = (jnp.ones((129, 129), dtype) if factored
                          else jnp.array([1.0, 2.0], dtype))
                grads = jax.grad(lambda x: jnp.sum(x ** 2))(params)
                opt = optim.scale_by_factored_rms()
                multi = optim.MultiSteps(opt, every_k_schedule=4)
                out[factored, dtype] = (
                    grads, opt.update(grads, opt.init(params), params)[0],
                    multi.update(grads, multi.init(params), params)[0])
        return out
    return all_runs()


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("factored", [True, False])
def test_preserve_dtype(factored, dtype):
    grads, updates, _ = _dtype_runs()[factored, dtype]
    assert updates.dtype == jnp.dtype(dtype)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("factored", [True, False])
def test_gradient_accumulation(factored, dtype):
    grads, _, multi_updates = _dtype_runs()[factored, dtype]
    np.testing.assert_array_equal(multi_updates, jnp.zeros_like(grads))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("under_jit", [False, True], ids=["eager", "jit"])
def test_update_needs_params_and_the_state_of_these_params(under_jit):
    wrap = jax.jit if under_jit else (lambda f: f)
    opt = optim.adafactor(0.1, min_dim_size_to_factor=2)
    state = opt.init(PARAMS)
    with pytest.raises(ValueError, match=r"adafactor: scale_by_factored_rms: update needs "
                                         r"params \(got params=None\)"):
        wrap(opt.update)(PARAMS, state)
    # a state built for unfactored leaves does not fit factored ones
    other = optim.adafactor(0.1).init(PARAMS)
    with pytest.raises(ValueError, match=r"adafactor: scale_by_factored_rms: "
                                         r"state\.v_row\['k'\] has shape \(1,\), expected "
                                         r"\(3,\) as in init\(params\)\.v_row\['k'\]"):
        wrap(opt.update)(PARAMS, other, PARAMS)
