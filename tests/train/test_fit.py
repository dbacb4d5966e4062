"""fit: accuracy on digits, scan == per-step == Loader, metrics, learning rate, NaN guards."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import checkpoint, data, nn, ops, optim, train
from tests.train._setup import (ADAM, BN_MLP, FIT, KEY, MLP, X_TEST, X_TRAIN, Y_TEST,
                                Y_TRAIN, assert_trees_equal, init, subset)


def test_fit_reaches_accuracy_on_digits():
    params, state = init(MLP)
    params, state, _, hist = train.fit(MLP, params, state, ADAM, (X_TRAIN, Y_TRAIN), 3,
                                       eval_data=(X_TEST, Y_TEST), **FIT)
    assert hist["epoch"] == [1, 2, 3]
    assert list(hist) == ["epoch", "loss", "accuracy", "eval_loss", "eval_accuracy",
                          "learning_rate", "epoch_time"]
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["eval_accuracy"][-1] >= 0.93  # measured 0.96-0.97 for this 2k-param MLP
    assert hist["learning_rate"] == pytest.approx([1e-2] * 3)
    assert train.evaluate(MLP, params, state, X_TEST, Y_TEST)["accuracy"] == pytest.approx(
        hist["eval_accuracy"][-1])


def test_scan_per_step_and_loader_paths_agree():
    """The three feeds run the same steps on the same batches with the same keys."""
    x, y = subset(192)
    params, state = init(BN_MLP)
    out = {scan: train.fit(BN_MLP, params, state, ADAM, (x, y), 2, scan=scan, **FIT)
           for scan in (True, False)}
    loader = train.fit(BN_MLP, params, state, ADAM, data.Loader(x, y, 32, key=KEY), 2,
                       key=KEY, progress=False)
    assert_trees_equal(out[False][:3], loader[:3])                 # same program: bitwise
    assert out[False][3]["loss"] == loader[3]["loss"]
    for a, b in zip(jax.tree_util.tree_leaves(out[True][:3]),
                    jax.tree_util.tree_leaves(out[False][:3])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[True][3]["loss"], out[False][3]["loss"], rtol=1e-6)
    assert np.isfinite(np.asarray(params[0]["w"])).all()  # the caller's arrays are intact


@pytest.mark.parametrize("count", [2, 3])
def test_a_tuple_of_batches_trains_as_the_list_of_them(count):
    """A tuple of (x, y) batches is a re-iterable like a list (a pair's y is never a
    tuple, so two batches are not read as one pair): the same steps, bit for bit."""
    x, y = subset(96)
    batches = [(x[i::count], y[i::count]) for i in range(count)]
    params, state = init(MLP)
    runs = [train.fit(MLP, params, state, ADAM, kind(batches), 2, key=KEY, progress=False)
            for kind in (list, tuple)]
    assert_trees_equal(runs[0][:3], runs[1][:3])
    assert runs[0][3]["loss"] == runs[1][3]["loss"] and runs[1][3]["epoch"] == [1, 2]


def test_regression_reports_no_accuracy(capsys):
    """Issue 16: a regression with mean_squared_error printed accuracy 1.0000."""
    model = nn.serial(nn.Dense(1, dtype=np.float32))
    _, params, state = model.init(jax.random.PRNGKey(0), (-1, 64))
    x, _ = subset(192)
    target = x[:, :1] * 2.0 - 1.0
    *_, hist = train.fit(model, params, state, optim.sgd(0.05), (x, target), 2,
                         batch_size=32, key=KEY, loss_fn=ops.mean_squared_error,
                         eval_data=(x, target))
    out = capsys.readouterr().out
    assert "accuracy" not in out and "accuracy" not in hist and "eval_accuracy" not in hist
    assert hist["loss"][1] < hist["loss"][0]


def test_custom_metrics_and_schedule_learning_rate_in_history():
    x, y = subset(192)
    params, state = init(MLP)
    sched = optim.exponential_decay(1e-2, transition_steps=6, decay_rate=0.5)
    top2 = lambda lg, t: {"top2": jnp.mean(jnp.any(  # noqa: E731
        jnp.argsort(lg, -1)[:, -2:].astype(t.dtype) == t[:, None], -1).astype(jnp.float32))}
    *_, hist = train.fit(MLP, params, state, optim.adam(sched), (x, y), 3, metrics_fn=top2,
                         eval_data=(x, y), **FIT)
    assert {"top2", "eval_top2"} <= set(hist) and "accuracy" not in hist
    assert all(0.0 <= v <= 1.0 for v in hist["top2"] + hist["eval_top2"])
    # 6 steps per epoch: epoch e starts at step 6e, the rate its first update uses
    assert hist["learning_rate"] == pytest.approx([float(sched(6 * e)) for e in range(3)])


def test_learning_rate_is_the_rate_of_each_epochs_first_update():
    """history["learning_rate"][e] is current_learning_rate(opt, opt_state) read before epoch
    e + 1: the rate its first update uses. Through optim.accumulate(., 2) a 6-step epoch
    makes 3 updates of the schedule; per-step path here (the scan path is tested above)."""
    x, y = subset(192)
    params, state = init(MLP)
    sched = optim.exponential_decay(1e-2, transition_steps=1, decay_rate=0.8)
    *_, hist = train.fit(MLP, params, state, optim.accumulate(optim.sgd(sched), 2), (x, y),
                         3, scan=False, **FIT)
    assert hist["learning_rate"] == pytest.approx([float(sched(3 * e)) for e in range(3)])


def test_progress_log_lines_and_silence(capsys):
    x, y = subset(192)
    params, state = init(MLP)
    train.fit(MLP, params, state, ADAM, (x, y), 2, batch_size=32, key=KEY,
              eval_data=(x, y))
    lines = capsys.readouterr().out.strip().splitlines()  # not a tty: plain lines
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2  loss ")
    assert "eval_accuracy" in lines[1] and "learning_rate 0.01" in lines[1]
    train.fit(MLP, params, state, ADAM, (x, y), 2, **FIT)
    assert capsys.readouterr().out == ""


def _poison_position(bad_row, n=192):
    """Where fit's epoch-0 permutation puts ``bad_row`` (see funcnet.data.epoch_keys)."""
    shuffle_key, _ = data.epoch_keys(KEY, 0)
    order = np.asarray(jax.random.permutation(shuffle_key, n))
    return int(np.flatnonzero(order == bad_row)[0])


@pytest.mark.parametrize("scan", [True, False])
def test_nan_loss_stops_naming_epoch_and_step(scan, tmp_path):
    x, labels = subset(192)
    y = np.eye(10, dtype=np.float32)[labels]  # one-hot targets; one of them poisoned
    y[50, 0] = np.nan
    step = _poison_position(50) // 32 + 1
    params, state = init(MLP)
    manager = checkpoint.CheckpointManager(tmp_path)
    with pytest.raises(train.NonFiniteError,
                       match=f"loss is nan at epoch 1/2, step {step}/6") as err:
        train.fit(MLP, params, state, ADAM, (x, y), 2, scan=scan, checkpoint=manager, **FIT)
    assert isinstance(err.value, FloatingPointError)
    assert (err.value.epoch, err.value.step) == (1, step)
    assert manager.latest_step() is None                          # nothing saved
    # the error carries the last finite params (before the failing step)
    assert all(np.isfinite(np.asarray(a)).all()
               for a in jax.tree_util.tree_leaves((err.value.params, err.value.opt_state)))
    if step == 1:
        assert_trees_equal(err.value.params, params)


def _explode_at(count):
    """SGD whose update number ``count`` (0-based) is infinite: the loss stays finite until
    the NEXT step, so only a check of the params catches the last update of an epoch."""
    def init_fn(params):
        return jnp.zeros((), jnp.int32)

    def update(grads, n, params=None):
        scale = jnp.where(n == count, jnp.inf, 0.05)
        return jax.tree_util.tree_map(lambda g: -scale * g, grads), n + 1

    return optim.Optimizer(init_fn, update)


@pytest.mark.parametrize("scan", [True, False])
def test_last_update_of_an_epoch_is_checked_and_never_saved(scan, tmp_path):
    """Issue 13 item 2: the old check looked only at the losses computed BEFORE each
    update, so a non-finite last update was saved and every resume failed forever."""
    x, y = subset(192)
    params, state = init(MLP)
    opt = _explode_at(5)                                           # step 6/6 of epoch 1
    manager = checkpoint.CheckpointManager(tmp_path)
    with pytest.raises(train.NonFiniteError, match=r"the update of epoch 1/3, step 6/6 made "
                                                   r"the params, state or optimizer state "
                                                   r"non-finite") as err:
        train.fit(MLP, params, state, opt, (x, y), 3, scan=scan, checkpoint=manager, **FIT)
    assert manager.latest_step() is None
    # the last good params are those after 5 finite steps: the same run on 5 batches
    order = np.asarray(jax.random.permutation(data.epoch_keys(KEY, 0)[0], 192))
    step = jax.jit(train.train_step(MLP, opt))
    p, s, o = params, state, opt.init(params)
    for i in range(5):
        idx = order[32 * i:32 * (i + 1)]
        p, s, o, _ = step(p, s, o, x[idx], y[idx])
    for a, b in zip(jax.tree_util.tree_leaves(err.value.params), jax.tree_util.tree_leaves(p)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert int(err.value.opt_state) == 5


@pytest.mark.parametrize("scan", [True, False])
def test_a_nan_gradient_in_an_accumulator_is_caught_at_its_step(scan, tmp_path):
    """A NaN gradient with a finite loss, on a step of optim.accumulate that leaves the
    params unchanged, used to poison the accumulator unseen: the guard blamed the later
    update, and a checkpoint taken in between held the NaN state (every resume re-failed)."""
    def loss(logits, labels):   # finite value, NaN gradient: 0 * d sqrt(s)/ds at s = 0
        return ops.softmax_cross_entropy(logits, labels) + 0.0 * jnp.sqrt(
            jnp.sum(logits * 0.0))

    x, y = subset(192)
    params, state = init(MLP)
    opt = optim.accumulate(optim.sgd(0.05), 4)
    manager = checkpoint.CheckpointManager(tmp_path)
    with pytest.raises(train.NonFiniteError, match=r"the update of epoch 1/3, step 1/6 made "
                                                   r"the params, state or optimizer state "
                                                   r"non-finite") as err:
        train.fit(MLP, params, state, opt, (x, y), 3, scan=scan, checkpoint=manager,
                  loss_fn=loss, **FIT)
    assert manager.latest_step() is None
    assert bool(jnp.all(jnp.array([jnp.all(jnp.isfinite(a)) for a in
                                   jax.tree_util.tree_leaves(err.value.opt_state)])))
    assert_trees_equal(err.value.params, params)                  # no update was applied


def test_non_finite_input_params_are_refused():
    params, state = init(MLP)
    params = jax.tree_util.tree_map(lambda a: a, params)
    params[0]["w"] = params[0]["w"].at[0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="fit: params or state hold NaN or infinite"):
        train.fit(MLP, params, state, ADAM, subset(64), 1, **FIT)


def test_all_finite_finds_every_non_finite_value():
    """The guard's check, on leaves of several dtypes (never cast: a float32 1e38 next to
    a bfloat16 leaf stays finite), a scalar and an integer leaf (ignored)."""
    from funcnet.train import epochs

    check = jax.jit(epochs.all_finite)
    tree = {"w": jnp.full((3, 4), 1e38, jnp.float32), "h": jnp.ones((5,), jnp.bfloat16),
            "c": jnp.ones((2,), jnp.complex64), "i": jnp.arange(3), "s": jnp.float32(2.0)}
    assert bool(check(tree))
    for leaf, bad in [("w", np.nan), ("w", -np.inf), ("h", np.inf), ("c", np.nan),
                      ("s", np.inf)]:
        broken = dict(tree, **{leaf: tree[leaf].at[..., 0].set(bad) if tree[leaf].ndim
                               else jnp.asarray(bad, tree[leaf].dtype)})
        assert not bool(check(broken)), (leaf, bad)


class _FakeDevice:
    def __init__(self, platform):
        self.platform = platform


class _FakeArray:
    def __init__(self, platform, addressable=True):
        self.is_fully_addressable, self._platform = addressable, platform

    def devices(self):
        return {_FakeDevice(self._platform)}


def test_per_step_metric_copies_start_early_on_accelerators_only():
    """fit's per-step path starts each step's device-to-host metric copies as it goes on
    an accelerator (the epoch's end then reads values already on the host), never on the
    CPU (where a read is a view) nor for values this process does not hold whole."""
    from funcnet.train.loop import _copies_ahead
    on_cpu = {"loss": jnp.ones(()), "accuracy": jnp.zeros(())}
    assert not _copies_ahead(on_cpu)
    assert _copies_ahead({"loss": _FakeArray("gpu"), "accuracy": _FakeArray("gpu")})
    assert _copies_ahead({"loss": _FakeArray("tpu")})
    assert not _copies_ahead({"loss": _FakeArray("gpu", addressable=False)})
    assert not _copies_ahead({"loss": _FakeArray("gpu"), "n": _FakeArray("cpu")})
    assert not _copies_ahead({})
