"""The optimizers of round 3 (lion, adamax(w), amsgrad, adabelief, radam, lamb, lars,
adafactor), round 4 (muon, ...) and round 5 (sam, prodigy) inside ``train.fit``, as an optax user would use them: training, bit-identical
resume from a checkpoint (their optax state classes, e.g. ``FactoredState`` with factors
of other shapes than the params, are saved and restored), the learning rate in the
history, the run fingerprint and the non-finite guard.

Small and fast: the MLP, digits subset and batch size of ``tests/train/_setup.py`` (2
steps per epoch), 2 epochs.
"""
import jax
import numpy as np
import pytest

from funcnet import checkpoint, optim, train
from tests.train._setup import KEY, MLP, assert_trees_equal, init, subset

X, Y = subset(64)
FIT = dict(batch_size=32, key=KEY, progress=False)

# (optimizer, learning rate of the history: None when it has none)
CASES = {
    "lion": (optim.lion(1e-3), 1e-3),
    "adamax": (optim.adamax(1e-2), 1e-2),
    "adamaxw": (optim.adamaxw(1e-2), 1e-2),
    "amsgrad": (optim.amsgrad(1e-2), 1e-2),
    "adabelief": (optim.adabelief(1e-2), 1e-2),
    "radam": (optim.radam(1e-2), 1e-2),
    "lamb": (optim.lamb(1e-2, weight_decay=1e-4), 1e-2),
    "lars": (optim.lars(1.0), 1.0),
    # the 64x32 kernel factored: v_row (32,), v_col (64,), v a (1,) placeholder
    "adafactor": (optim.adafactor(1e-2, min_dim_size_to_factor=8, momentum=0.9), 1e-2),
    "adafactor_no_lr": (optim.adafactor(clipping_threshold=0.1), None),  # relative steps
    "inject_lion": (optim.inject_hyperparams(optim.lion)(learning_rate=1e-3), 1e-3),
    "schedule_lion": (optim.lion(optim.linear_schedule(1e-3, 1e-4, 4)), 1e-3),
    "multisteps_lion": (optim.MultiSteps(optim.lion(1e-3), 2), 1e-3),
    # round 4: kernels by Newton-Schulz, biases by AdamW (a PartitionState of MaskedState-s
    # holding MaskedNode-s; MuonState keeps its ns_coeffs array); the Muon group's rate
    "muon": (optim.muon(optim.linear_schedule(1e-2, 1e-3, 4), weight_decay=1e-3), 1e-2),
    # z (a copy of the params) in the state; fit trains and evaluates y (see the report)
    "schedule_free_adamw": (optim.schedule_free_adamw(1e-2, warmup_steps=2), 0.0),
    "novograd": (optim.novograd(1e-2, weight_decay=1e-4), 1e-2),   # a scalar nu per leaf
    # a typed PRNG key in the state (AddNoiseState.rng_key) is saved and restored
    "noisy_sgd": (optim.noisy_sgd(1e-2, key=jax.random.key(0)), 1e-2),
    # round 5: a copy of the params in the state (SAM's cache, Prodigy's params0), the
    # inner states of both SAM optimizers, Prodigy's scalar estimates; 2 steps per epoch
    # = one ascent and one outer step, so each epoch ends at the outer params
    "sam": (optim.sam(optim.adam(1e-2), optim.chain(optim.normalize(), optim.sgd(0.05))),
            None),
    "prodigy": (optim.prodigy(estim_lr0=1e-3), 1.0),
}


def _key_data(tree):
    """Typed PRNG keys (noisy_sgd's state, as optax's) as their uint32 data."""
    return jax.tree_util.tree_map(
        lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(
            getattr(x, "dtype", None), jax.dtypes.prng_key) else x, tree)


@pytest.mark.parametrize("name", list(CASES))
def test_fit_trains_resumes_bit_identically_and_logs_the_rate(name, tmp_path):
    """multisteps_lion: MultiSteps (optax's class interface) gave no learning rate
    (current_learning_rate returned None), so fit logged none and left it out of the
    run fingerprint."""
    opt, lr = CASES[name]
    params, state = init(MLP)
    full = train.fit(MLP, params, state, opt, (X, Y), 2, **FIT)
    manager = checkpoint.CheckpointManager(tmp_path)
    train.fit(MLP, params, state, opt, (X, Y), 1, checkpoint=manager, **FIT)
    other = init(MLP, seed=1)            # everything must come from the checkpoint
    resumed = train.fit(MLP, *other, opt, (X, Y), 2, checkpoint=manager, **FIT)
    assert_trees_equal(*map(_key_data, (full[:3], resumed[:3])))
    assert resumed[3]["loss"] == full[3]["loss"]
    assert full[3]["loss"][1] < full[3]["loss"][0]
    if lr is None:
        assert "learning_rate" not in full[3]
    else:
        np.testing.assert_allclose(full[3]["learning_rate"][0], lr, rtol=1e-6)
        assert len(full[3]["learning_rate"]) == 2


def test_a_schedule_is_logged_at_each_epochs_first_update():
    *_, hist = train.fit(MLP, *init(MLP), CASES["schedule_lion"][0], (X, Y), 2, **FIT)
    np.testing.assert_allclose(hist["learning_rate"], [1e-3, 1e-3 - 2 * 9e-4 / 4],
                               rtol=1e-12)


@pytest.mark.parametrize("first, then, why", [
    # the first optimizers are CASES' (compiled already); the refusal comes before any
    # compilation of the second
    (CASES["lion"][0], optim.lion(2e-3), "learning_rate is 0.002 now but 0.001"),
    (CASES["multisteps_lion"][0], optim.MultiSteps(optim.lion(2e-3), 2),
     "learning_rate is 0.002 now but 0.001"),
    (CASES["adafactor"][0], optim.adafactor(1e-2, momentum=0.9),  # 128: not factored
     r"opt_state differs .*v_row.*float32\[1\] now"),
    (CASES["lion"][0], optim.adamw(1e-3), "opt_state differs"),
], ids=["lion_lr", "multisteps_lr", "adafactor_factored", "lion_adamw"])
def test_resuming_with_another_optimizer_is_refused(first, then, why, tmp_path):
    params, state = init(MLP)
    manager = checkpoint.CheckpointManager(tmp_path)
    train.fit(MLP, params, state, first, (X, Y), 1, checkpoint=manager, **FIT)
    with pytest.raises(train.RunMismatchError, match=why):
        train.fit(MLP, params, state, then, (X, Y), 2, checkpoint=manager, **FIT)


@pytest.mark.parametrize("first, then, why", [
    (optim.adam(1e-2), optim.adamax(1e-2), r"optimizer is 'adamax\(learning_rate=0.01"),
    (optim.adamw(1e-2), optim.adamaxw(1e-2), r"but .adamw\(learning_rate=0.01"),
    (optim.adam(1e-2), optim.adam(1e-2, b2=0.99), r"b2=0.99,"),
    (optim.lion(1e-3), optim.lion(1e-3, weight_decay=0.1), r"weight_decay=0.1"),
    (optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-2)),
     optim.chain(optim.clip_by_global_norm(2.0), optim.adam(1e-2)), r"max_norm=2.0"),
], ids=["adam-adamax", "adamw-adamaxw", "adam-b2", "lion-weight_decay", "chain-clip"])
def test_another_optimizer_with_the_same_state_tree_is_refused(tmp_path, first, then, why):
    """The fingerprint records how the optimizer was built (optim.describe), not only its
    state's tree and first learning rate, which these pairs share."""
    params, state = init(MLP)
    manager = checkpoint.CheckpointManager(tmp_path)
    train.fit(MLP, params, state, first, (X, Y), 1, checkpoint=manager, **FIT)
    with pytest.raises(train.RunMismatchError, match=why):
        train.fit(MLP, params, state, then, (X, Y), 2, checkpoint=manager, **FIT)
    # the same call again resumes (a new but equal optimizer object)
    _, _, _, history = train.fit(MLP, params, state, first, (X, Y), 2,
                                 checkpoint=manager, **FIT)
    assert history["epoch"] == [1, 2]


@pytest.mark.parametrize("name", ["adafactor", "lamb", "lion"])
def test_the_non_finite_guard_keeps_the_last_finite_state(name):
    x = X.copy()
    x[40, 3] = np.nan            # 64 rows in batches of 32: a batch of epoch 1 holds it
    opt = CASES[name][0]
    with pytest.raises(train.NonFiniteError) as err:
        train.fit(MLP, *init(MLP), opt, (x, Y), 2, **FIT)
    e = err.value
    leaves = jax.tree_util.tree_leaves((e.params, e.opt_state))
    assert e.epoch == 1 and all(np.isfinite(np.asarray(a)).all() for a in leaves)
    assert (jax.tree_util.tree_structure(e.opt_state)
            == jax.tree_util.tree_structure(opt.init(e.params)))
