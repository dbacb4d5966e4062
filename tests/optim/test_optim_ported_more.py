"""optax's tests of Lion, AdaMax, AMSGrad, AdaBelief, RAdam, LAMB, LARS, Adafactor and
the trust ratio, ported (optax 0.2.8: ``_src/transform_test.py``, ``_src/float64_test.py`` and the
examples of the ``alias.py`` docstrings), plus properties of these blocks checked by hand.
Their trajectories against optax are in ``test_optim_optax.py`` (``_optax_calls.CALLS``),
against the papers' formulas in ``test_optim_trajectories.py`` (``_cases.OPTIMIZERS``).
"""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim

from tests.optim._ported import INIT, PER_STEP

# ------------------------------------------------------------------- transform_test

SCALERS = {"adamax": optim.scale_by_adamax, "lion": optim.scale_by_lion,
           "amsgrad": optim.scale_by_amsgrad, "belief": optim.scale_by_belief,
           "radam": optim.scale_by_radam, "trust_ratio": optim.scale_by_trust_ratio,
           "param_block_rms": optim.scale_by_param_block_rms,
           "block_rms_clip": lambda: optim.clip_by_block_rms(1.0)}


@pytest.mark.parametrize("name", list(SCALERS))
def test_scalers(name):
    scaler = SCALERS[name]()
    state = jax.jit(scaler.init)(INIT)
    updates, state = jax.jit(scaler.update)(PER_STEP, state, INIT)
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves((updates, state)))
    assert [u.shape for u in updates] == [p.shape for p in INIT]


def test_lion_modes_variants():
    updates = jnp.array([0.2, -2.0, 0.5, -0.8])
    b1, smooth_beta = 0.5, 2.0
    for mode in ("hard", "smooth", "refined"):
        opt = optim.scale_by_lion(b1=b1, b2=0.9, mode=mode, smooth_beta=smooth_beta)
        state = opt.init(updates)
        out, _ = opt.update(updates, state)
        x = (1.0 - b1) * updates + b1 * state.mu
        expected = {"hard": jnp.sign(x), "smooth": jnp.tanh(smooth_beta * x),
                    "refined": jnp.where(jnp.abs(x) < 1.0, x, jnp.sign(x))}[mode]
        np.testing.assert_allclose(out, expected, rtol=1e-12)


@pytest.mark.parametrize("under_jit", [False, True], ids=["eager", "jit"])
def test_lion_invalid_mode_raises(under_jit):
    """optax raises at the first update; funcnet at construction, naming the choices."""
    make = lambda: optim.scale_by_lion(mode="invalid_mode")  # noqa: E731
    with pytest.raises(ValueError, match=r"scale_by_lion: mode must be one of 'hard', "
                                         r"'smooth', 'refined', got 'invalid_mode'"):
        jax.jit(make)() if under_jit else make()


# -------------------------------------------------------------------- float64_test


@pytest.mark.parametrize("make", [lambda: optim.scale_by_trust_ratio(),
                                  lambda: optim.lamb(0.1), lambda: optim.lars(0.1),
                                  lambda: optim.radam(0.1), lambda: optim.adabelief(0.1)],
                         ids=["scale_by_trust_ratio", "lamb", "lars", "radam", "adabelief"])
def test_float64_updates_and_state_stay_float64(make):
    opt = make()
    params = {"a": jnp.array([1.0, -2.0], jnp.float64), "b": jnp.array([[0.5]], jnp.float64)}
    grads = jax.tree_util.tree_map(lambda p: 0.3 * p + 0.1, params)
    state = opt.init(params)
    for _ in range(2):
        updates, state = jax.jit(opt.update)(grads, state, params)
    for x in jax.tree_util.tree_leaves((updates, state)):
        assert x.dtype in (jnp.float64, jnp.int32)


# ------------------------------------------------------- alias.py docstring examples

# optax's Examples: solver(learning_rate=0.003) on f(x) = sum(x^2) from [1, 2, 3], five
# steps, the objective printed with '{:.2E}' (values copied from optax 0.2.8's docstrings)
DOC_EXAMPLES = {
    "lion": ["1.40E+01", "1.39E+01", "1.39E+01", "1.39E+01", "1.38E+01"],
    "adamax": ["1.40E+01", "1.39E+01", "1.39E+01", "1.39E+01", "1.38E+01"],
    "adamaxw": ["1.40E+01", "1.39E+01", "1.39E+01", "1.39E+01", "1.38E+01"],
    "amsgrad": ["1.40E+01", "1.39E+01", "1.39E+01", "1.39E+01", "1.38E+01"],
    "adabelief": ["1.40E+01", "1.39E+01", "1.39E+01", "1.38E+01", "1.38E+01"],
    "radam": ["1.38E+01", "1.37E+01", "1.35E+01", "1.33E+01", "1.32E+01"],
    "lamb": ["1.39E+01", "1.38E+01", "1.38E+01", "1.37E+01", "1.36E+01"],
    "lars": ["1.40E+01", "1.40E+01", "1.40E+01", "1.40E+01", "1.40E+01"],
    "adafactor": ["1.39E+01", "1.38E+01", "1.38E+01", "1.37E+01", "1.36E+01"],
    # round 4 (their own learning rates, DOC_KWARGS)
    "adan": ["1.28E+01", "1.17E+01", "1.07E+01", "9.68E+00", "8.76E+00"],
    "yogi": ["1.40E+01", "1.40E+01", "1.39E+01", "1.39E+01", "1.39E+01"],
    "adadelta": ["1.36E+01", "1.32E+01", "1.29E+01", "1.25E+01", "1.21E+01"],
    "novograd": ["1.40E+01", "1.39E+01", "1.39E+01", "1.38E+01", "1.37E+01"],
    "sign_sgd": ["1.40E+01", "1.39E+01", "1.39E+01", "1.39E+01", "1.38E+01"],
    "noisy_sgd": ["1.38E+01", "1.37E+01", "1.35E+01", "1.33E+01", "1.32E+01"],
    # round 5 (adopt, ademamix, simplified_ademamix: optax.contrib)
    "adopt": ["1.40E+01"] * 5,
    "ademamix": ["1.39E+01", "1.38E+01", "1.36E+01", "1.35E+01", "1.34E+01"],
    "simplified_ademamix": ["1.39E+01", "1.36E+01", "1.33E+01", "1.28E+01", "1.23E+01"],
    "rprop": ["1.40E+01", "1.40E+01", "1.39E+01", "1.39E+01", "1.38E+01"],
    "fromage": ["1.39E+01", "1.38E+01", "1.37E+01", "1.37E+01", "1.36E+01"],
    "sm3": ["1.40E+01"] * 5,
    "optimistic_gradient_descent": ["1.38E+01", "1.37E+01", "1.35E+01", "1.33E+01",
                                    "1.32E+01"],
}
DOC_KWARGS = {"adan": {"learning_rate": 0.1}, "yogi": {"learning_rate": 0.002},
              "adadelta": {"learning_rate": 10.0},
              "noisy_sgd": {"learning_rate": 0.003, "key": 0},
              "ademamix": {"learning_rate": 0.01},
              "simplified_ademamix": {"learning_rate": 0.01}}


@pytest.mark.parametrize("name", list(DOC_EXAMPLES))
def test_docstring_example_of_optax(name):
    f = lambda x: jnp.sum(x ** 2)  # noqa: E731
    solver = getattr(optim, name)(**DOC_KWARGS.get(name, {"learning_rate": 0.003}))
    params = jnp.array([1.0, 2.0, 3.0], jnp.float32)
    state = solver.init(params)
    printed = []
    for _ in range(5):
        updates, state = solver.update(jax.grad(f)(params), state, params)
        params = optim.apply_updates(params, updates)
        printed.append(f"{float(f(params)):.2E}")
    assert printed == DOC_EXAMPLES[name]


# ------------------------------------------------------------------ by-hand checks


def test_trust_ratio_by_hand():
    """r = c ||w|| / (||u|| + eps) per leaf; 1 where a norm is 0; min_norm clips both."""
    w = {"k": jnp.array([[3.0, 4.0]]), "z": jnp.zeros(2), "s": jnp.array([0.01])}
    u = {"k": jnp.array([[0.0, 2.0]]), "z": jnp.array([1.0, 1.0]), "s": jnp.array([0.02])}
    out, _ = optim.scale_by_trust_ratio(trust_coefficient=0.5, eps=0.5).update(u, (), w)
    np.testing.assert_allclose(out["k"], [[0.0, 2.0 * 0.5 * 5.0 / 2.5]], rtol=1e-12)
    np.testing.assert_allclose(out["z"], [1.0, 1.0], rtol=1e-12)  # ||w|| = 0: unchanged
    np.testing.assert_allclose(out["s"], [0.02 * 0.5 * 0.01 / 0.52], rtol=1e-12)
    out, _ = optim.scale_by_trust_ratio(min_norm=0.1).update(u, (), w)
    np.testing.assert_allclose(out["s"], [0.02], rtol=1e-12)  # both norms clipped to 0.1
    np.testing.assert_allclose(out["z"], [1.0 * 0.1 / np.sqrt(2), 1.0 * 0.1 / np.sqrt(2)],
                               rtol=1e-12)  # ||w|| = 0 clipped to 0.1


def test_amsgrad_second_moment_never_decreases():
    opt = optim.scale_by_amsgrad()
    g = [jnp.array([10.0, 1.0]), jnp.array([0.1, 2.0]), jnp.array([0.0, 0.5])]
    state, previous = opt.init(g[0]), np.zeros(2)
    for gi in g:
        _, state = opt.update(gi, state)
        assert np.all(np.asarray(state.nu_max) >= previous)
        previous = np.asarray(state.nu_max)
    # the first step's v_hat = g^2 is still the maximum of the first coordinate
    np.testing.assert_allclose(state.nu_max[0], 100.0, rtol=1e-12)


def test_radam_is_momentum_sgd_until_rho_reaches_threshold():
    """rho_t = 1, 2, ... (about t) for b2 = 0.999: the first 5 steps are m_hat exactly,
    the 6th is rectified (r_6 < 1) and divided by sqrt(v_hat)."""
    opt = optim.scale_by_radam()
    rng = np.random.default_rng(0)
    state, m = opt.init(jnp.zeros(3)), np.zeros(3)
    for t in range(1, 7):
        g = rng.normal(size=3)
        out, state = opt.update(jnp.asarray(g), state)
        m = 0.9 * m + 0.1 * g
        if t <= 5:
            np.testing.assert_allclose(out, m / (1 - 0.9 ** t), rtol=1e-12)
        else:
            assert not np.allclose(out, m / (1 - 0.9 ** t), rtol=1e-3)


def test_lion_steps_have_unit_size_per_coordinate():
    opt = optim.lion(0.1, weight_decay=0.0)
    p = jnp.array([1.0, -2.0, 3.0, 0.5])
    g = jnp.array([1e-6, -1e3, 2.0, -0.3])
    u, _ = opt.update(g, opt.init(p), p)
    np.testing.assert_allclose(u, -0.1 * np.sign(np.asarray(g)), rtol=1e-12)


def test_adabelief_state_carries_eps_root():
    """The stored s_t includes eps_root (added at every step, as optax): after two zero
    gradients from zero moments, s = b2 eps_root + eps_root."""
    opt = optim.scale_by_belief(eps_root=1e-3)
    state = opt.init(jnp.zeros(2))
    for _ in range(2):
        _, state = opt.update(jnp.zeros(2), state)
    np.testing.assert_allclose(state.nu, [0.999e-3 + 1e-3] * 2, rtol=1e-12)


def test_block_rms_clip_and_param_scale_by_hand():
    u = {"a": jnp.array([3.0, -4.0]), "b": jnp.array([0.1, 0.1])}  # RMS sqrt(12.5), 0.1
    out, _ = optim.clip_by_block_rms(1.0).update(u, ())
    np.testing.assert_allclose(out["a"], np.array([3.0, -4.0]) / np.sqrt(12.5), rtol=1e-12)
    np.testing.assert_allclose(out["b"], [0.1, 0.1], rtol=1e-12)  # RMS below: unchanged
    w = {"a": jnp.array([1.0, -7.0]), "b": jnp.zeros(2)}  # RMS 5, 0 -> min_scale
    out, _ = optim.scale_by_param_block_rms(0.01).update(u, (), w)
    np.testing.assert_allclose(out["a"], [15.0, -20.0], rtol=1e-12)
    np.testing.assert_allclose(out["b"], [1e-3, 1e-3], rtol=1e-12)


# ------------------------------------------------------------------ optax's signatures

NEW_NAMES = ["lion", "adamax", "adamaxw", "amsgrad", "adabelief", "radam", "lamb", "lars",
             "adafactor", "scale_by_lion", "scale_by_adamax", "scale_by_amsgrad",
             "scale_by_belief", "scale_by_radam", "scale_by_trust_ratio",
             "scale_by_factored_rms", "scale_by_param_block_rms", "clip_by_block_rms",
             # round 4 (muon, schedule_free*: optax.contrib)
             "muon", "scale_by_muon", "schedule_free", "schedule_free_sgd",
             "schedule_free_adamw", "schedule_free_eval_params", "adan", "yogi",
             "adadelta", "novograd", "scale_by_adan", "scale_by_yogi", "scale_by_adadelta",
             "scale_by_novograd", "zero_nans", "adaptive_grad_clip", "centralize",
             "scale_by_sign", "sign_sgd", "signum", "add_noise", "noisy_sgd",
             # round 5
             "reduce_on_plateau", "lookahead", "apply_every", "freeze",
             "selective_transform", "scale_gradient", "keep_params_nonnegative", "adopt",
             "scale_by_adopt", "ademamix", "scale_by_ademamix", "simplified_ademamix",
             "scale_by_simplified_ademamix", "prodigy", "rprop", "scale_by_rprop",
             "optimistic_gradient_descent", "optimistic_adam", "optimistic_adam_v2",
             "scale_by_optimistic_gradient", "polyak_sgd", "scale_by_polyak", "sm3",
             "scale_by_sm3", "fromage", "sam", "normalize"]
NEW_STATES = ["ScaleByLionState", "ScaleByAmsgradState", "ScaleByBeliefState",
              "ScaleByTrustRatioState", "FactoredState", "MuonState", "MuonDimensionNumbers",
              "ScheduleFreeState", "ScaleByAdanState", "ScaleByAdaDeltaState",
              "ScaleByNovogradState", "ZeroNansState", "AdaptiveGradClipState", "AddNoiseState",
              # round 5
              "ReduceLROnPlateauState", "LookaheadState", "LookaheadParams", "ApplyEvery",
              "NonNegativeParamsState", "ScaleByAdemamixState",
              "ScaleBySimplifiedAdEMAMixState", "ProdigyState", "ScaleByRpropState",
              "ScaleByOptimisticGradientState", "ScaleBySM3State", "NormalizeState",
              "SAMState"]


def _optax_name(name):
    optax = pytest.importorskip("optax")
    import optax.contrib
    from optax._src import transform      # ScaleByOptimisticGradientState is not exported
    for where in (optax, optax.contrib, transform):
        if hasattr(where, name):
            return getattr(where, name)
    raise AttributeError(f"optax has no {name}")


@pytest.mark.parametrize("name", NEW_NAMES)
def test_signature_is_optax(name):
    """Same parameters, order, kinds and defaults (a function default by its name)."""
    def sig(f):
        return [(p.name, p.kind, getattr(p.default, "__name__", p.default))
                for p in inspect.signature(f).parameters.values()]
    assert sig(getattr(optim, name)) == sig(_optax_name(name))
    assert name in optim.__all__


@pytest.mark.parametrize("name", NEW_STATES)
def test_state_class_fields_are_optax(name):
    ours, theirs = getattr(optim, name), _optax_name(name)
    assert (ours._fields, ours._field_defaults) == (theirs._fields, theirs._field_defaults)
    assert name in optim.__all__
