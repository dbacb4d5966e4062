"""``reduce_on_plateau`` inside ``funcnet.train.fit``: the step passes ``value=`` the
batch loss; a plateau halves the learning rate that ``fit`` logs, the run equals the
same run with optax's ``optax.contrib.reduce_on_plateau``, and it resumes from a
checkpoint bit for bit (``ReduceLROnPlateauState`` saved and restored).

With ``accumulation_size`` = the steps of an epoch the rule compares epoch losses; the
state's best value is ``inf`` (optax's) until the first comparison, which ``fit``'s
non-finite guard lets stay (a scalar of the optimizer state already non-finite), while a
scalar that becomes non-finite still stops the run.

Small: the MLP and digits subset of ``tests/train/_setup.py`` (2 steps per epoch).
"""
import jax
import numpy as np
import pytest

from funcnet import checkpoint, optim, train
from tests.train._setup import KEY, MLP, assert_trees_equal, init, subset

X, Y = subset(64)
FIT = dict(batch_size=32, key=KEY, progress=False)
LR = 0.05
# rtol 0.5: a step must halve the loss to count as an improvement, so every step after
# the first is a plateau (patience 1) and halves the scale: 1, 1/2, then /4 per epoch
PLATEAU = dict(factor=0.5, patience=1, rtol=0.5)


def _opt(lib, **kwargs):
    contrib = getattr(lib, "contrib", lib)
    return lib.chain(lib.sgd(LR), contrib.reduce_on_plateau(**PLATEAU, **kwargs))


def test_a_plateau_halves_the_logged_learning_rate_and_resumes(tmp_path):
    params, state = init(MLP)
    opt = _opt(optim)
    full = train.fit(MLP, params, state, opt, (X, Y), 4, **FIT)
    hist = full[3]
    np.testing.assert_allclose(hist["learning_rate"], [LR, LR / 2, LR / 8, LR / 32],
                               rtol=1e-12)
    assert hist["loss"][1] < hist["loss"][0]                  # it trains, slowly
    plateau = full[2][1]
    assert float(plateau.scale) == 2.0 ** -7 and int(plateau.plateau_count) == 0
    assert np.isfinite(plateau.best_value) and plateau.best_value > hist["loss"][-1]
    manager = checkpoint.CheckpointManager(tmp_path)
    train.fit(MLP, params, state, opt, (X, Y), 2, checkpoint=manager, **FIT)
    other = init(MLP, seed=1)          # everything must come from the checkpoint
    resumed = train.fit(MLP, *other, opt, (X, Y), 4, checkpoint=manager, **FIT)
    assert_trees_equal(full[:3], resumed[:3])
    assert resumed[3]["learning_rate"] == hist["learning_rate"]


def test_fit_with_optax_reduce_on_plateau_gives_the_same_run():
    optax = pytest.importorskip("optax")
    import optax.contrib  # noqa: F401
    params, state = init(MLP)
    ours = train.fit(MLP, params, state, _opt(optim), (X, Y), 4, **FIT)
    with jax.numpy_dtype_promotion("standard"):     # optax's rule mixes dtypes
        theirs = train.fit(MLP, params, state, _opt(optax), (X, Y), 4, **FIT)
    for a, b in zip(jax.tree_util.tree_leaves(ours[:3]), jax.tree_util.tree_leaves(theirs[:3])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert float(theirs[2][1].scale) == 2.0 ** -7
    assert ours[3]["loss"] == pytest.approx(theirs[3]["loss"], rel=1e-6)


def test_epoch_losses_compared_with_accumulation_size_equal_to_the_steps_per_epoch():
    """The state's best value is ``inf`` until the first comparison (optax's layout):
    ``fit``'s guard lets a value that was non-finite stay so and stops only at values
    that become non-finite."""
    opt = _opt(optim, accumulation_size=2)              # 2 steps per epoch
    *_, hist = train.fit(MLP, *init(MLP), opt, (X, Y), 3, **FIT)
    np.testing.assert_allclose(hist["learning_rate"], [LR, LR, LR / 2], rtol=1e-12)


def test_a_state_scalar_that_becomes_non_finite_still_stops_fit():
    """The guard's allowance is for values already non-finite: a scalar of the optimizer
    state that turns infinite at the third step is caught there, and the run keeps the
    last finite state."""
    import jax.numpy as jnp

    sgd = optim.sgd(LR)

    def init_state(params):
        return (sgd.init(params), jnp.zeros((), jnp.int32), jnp.ones(()))

    def update(grads, state, params=None, **extra):
        inner, count, s = state
        updates, inner = sgd.update(grads, inner, params)
        return updates, (inner, count + 1, jnp.where(count >= 2, jnp.inf, s))

    opt = optim.base.optimizer(init_state, update)
    with pytest.raises(train.NonFiniteError, match=r"epoch 2/3, step 1/2") as err:
        train.fit(MLP, *init(MLP), opt, (X, Y), 3, **FIT)
    assert float(err.value.opt_state[2]) == 1.0 and int(err.value.opt_state[1]) == 2
