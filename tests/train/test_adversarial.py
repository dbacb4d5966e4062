"""Bad inputs to fit, evaluate, train_step and make_train_step, as one table.

Each row: the call, the exception type and the message. fit's rows are also checked to
fail BEFORE any training (issue 13 item 11: a bad eval_data or checkpoint manager used to
be found only after an epoch).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn, ops, optim, train
from tests.train._setup import ADAM, KEY, MLP, X_TEST, X_TRAIN, Y_TEST, Y_TRAIN, init

PARAMS, STATE = init(MLP)
X, Y = X_TRAIN[:64], Y_TRAIN[:64]
OUT_OF_RANGE = Y.copy()
OUT_OF_RANGE[5] = 10


class _Manager:
    """A manager-like object: records whether anything was saved."""

    def __init__(self, keep=3, missing=()):
        self.keep, self.saved = keep, []
        for name in missing:
            setattr(self, name, None)

    def save(self, step, tree, *, metadata=None):
        self.saved.append(step)

    def restore(self, step=None, like=None):
        raise AssertionError("nothing to restore")

    def latest_step(self):
        return None

    def metadata(self, step=None):
        return {}

    def clear(self):
        return []


def PER_EXAMPLE(logits, labels):     # optax's habit: one loss per example
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)[:, 0]


def PER_CLASS(logits, labels):
    return {"per_class": jnp.mean(logits, axis=0)}


def _fit(**changes):
    """fit on a data CALLABLE that counts its epochs, so a row can prove no training ran."""
    calls = []

    def data(epoch):
        calls.append(epoch)
        return [(X[:32], Y[:32])]

    args = dict(model=MLP, params=PARAMS, state=STATE, opt=ADAM, data=(X, Y), epochs=1)
    kwargs = dict(batch_size=32, key=KEY, progress=False)
    for k, v in changes.items():
        (args if k in args else kwargs)[k] = data if isinstance(v, str) and v == "callable" \
            else v
    if args["data"] is data and "batch_size" not in changes:
        kwargs.pop("batch_size")
    return lambda: (train.fit(*args.values(), **kwargs), calls)[1]


FIT_ROWS = [
    (dict(model=lambda x: x), TypeError, "fit: model must be a Layer"),
    (dict(opt="adam"), TypeError, "fit: opt must be an optimizer"),
    (dict(loss_fn=3), TypeError, "fit: loss_fn must be callable"),
    (dict(metrics_fn="accuracy"), TypeError, "fit: metrics_fn must be callable"),
    (dict(data=X_TRAIN), TypeError, r"fit: data must be a pair \(x, y\) of arrays.*got one "
                                    r"array of shape \(1438, 64\)"),
    (dict(data=(X, Y[:63])), ValueError, r"fit: data x has shape \(64, 64\) but data y has shape "
                                         r"\(63,\), expected the same leading \(batch\) size"),
    (dict(data=(X[:0], Y[:0])), ValueError, "fit: data is empty"),
    (dict(data=(X, OUT_OF_RANGE)), ValueError, r"fit: the labels in data y hold 10 \(at index "
                                               r"\(5,\)\), expected class indices in \[0, 10\) "
                                               r"for a model with 10 outputs"),
    (dict(data=(X[:, :10], Y)), ValueError,
     r"fit: data: serial\[0\] \(Dense\(32\)\): .*x has shape \(64, 10\)"),
    (dict(data=42), TypeError, "fit: data must be a pair .* got int"),
    (dict(epochs=-1), ValueError, "fit: epochs must be >= 0, got -1"),
    (dict(epochs=1.5), TypeError, "fit: epochs must be an int"),
    (dict(batch_size=0), ValueError, r"fit: batch_size must be in \[1, 64\] \(the number "
                                     r"of examples\), got 0"),
    (dict(batch_size=65), ValueError, r"fit: batch_size must be in \[1, 64\] \(the number "
                                      r"of examples\), got 65"),
    (dict(batch_size=32.0), TypeError, "fit: batch_size must be an int"),
    (dict(batch_size=None), TypeError, "fit: batch_size is required with"),
    (dict(data="callable", batch_size=32), TypeError, "fit: batch_size is for .* arrays"),
    (dict(data="callable", scan=True), ValueError, "fit: scan=True needs"),
    (dict(key="seed"), TypeError, "fit: key must be a PRNG key"),
    (dict(key=jax.random.split(KEY, 3)), ValueError, "fit: key must be a single PRNG key"),
    (dict(eval_data=(X_TEST[:10], Y_TEST[:9])), ValueError,
     r"fit: eval_data x has shape \(10, 64\) but eval_data y has shape \(9,\)"),
    (dict(eval_data=(X_TEST[:10, :3], Y_TEST[:10])), ValueError, r"fit: eval_data: serial\[0\] \(Dense\(32\)\)"),
    (dict(eval_data=(X, OUT_OF_RANGE)), ValueError, "fit: the labels in eval_data y hold 10"),
    (dict(eval_data=[X]), TypeError, r"fit: eval_data must be a pair \(x, y\)"),
    (dict(checkpoint=_Manager(missing=("metadata", "clear"))), TypeError,
     "fit: checkpoint must be a checkpoint manager.*lacks metadata, clear"),
    (dict(checkpoint=_Manager(keep=0)), ValueError, "fit: checkpoint.keep must be >= 1"),
    (dict(checkpoint_every=0), ValueError, "fit: checkpoint_every must be >= 1"),
    (dict(eval_batch_size=0), ValueError, "fit: eval_batch_size must be >= 1"),
    (dict(prefetch=-1), ValueError, "fit: prefetch must be >= 0"),
    (dict(resume="yes"), TypeError, "fit: resume must be a bool"),
    (dict(overwrite=1), TypeError, "fit: overwrite must be a bool"),
    (dict(callbacks=[3]), TypeError, r"fit: callbacks\[0\] must be callable"),
    (dict(mesh="all"), TypeError, "fit: mesh must be None or a jax.sharding.Mesh"),
    (dict(compute_dtype=jnp.int32), TypeError, "fit: compute_dtype must be a floating"),
    # the loss and metrics are traced on the data's shapes before training
    (dict(loss_fn=PER_EXAMPLE), ValueError, r"fit: loss_fn must return a scalar, the mean "
                                            r"over the batch; it returned shape \(64,\)"),
    (dict(loss_fn=PER_EXAMPLE, data="callable"), ValueError,
     r"fit: loss_fn must return a scalar.*shape \(32,\)"),
    (dict(metrics_fn=PER_CLASS), ValueError, r"fit: metrics_fn must return scalars, the means "
                                             r"over the batch; 'per_class' has shape \(10,\)"),
    (dict(metrics_fn=lambda lg, t: {"epoch": jnp.mean(lg)}), ValueError,
     r"fit: metrics_fn returned a metric named 'epoch', a name fit gives its own log entries"),
    (dict(metrics_fn=lambda lg, t: {"eval_top5": jnp.mean(lg)}), ValueError,
     r"fit: metrics_fn returned a metric named 'eval_top5'"),
    (dict(metrics_fn=lambda lg, t: [jnp.mean(lg)]), TypeError,
     r"fit: metrics_fn must return a dict \{name: scalar\} \(or None\), got list"),
    (dict(callbacks=[train.EarlyStopping()]), ValueError,
     r"fit: callbacks\[0\] \(EarlyStopping\) monitors 'eval_loss', which is logged only "
     r"with eval_data"),
    (dict(callbacks=[train.KeepBest("acc")]), ValueError,
     r"fit: callbacks\[0\] \(KeepBest\) monitors 'acc', which fit does not log; the logs "
     r"hold accuracy, epoch_time, learning_rate, loss"),
    (dict(callbacks=train.EarlyStopping("loss")), TypeError,
     r"fit: callbacks must be a list of callbacks, got one EarlyStopping: pass "
     r"callbacks=\[it\]"),
    (dict(callbacks=lambda epoch, logs: False), TypeError,
     r"fit: callbacks must be a list of callbacks, got one function"),
    (dict(callbacks={"stop": train.EarlyStopping("loss")}), TypeError,
     r"fit: callbacks must be a list or tuple of callbacks, got dict"),
    (dict(scan="no"), TypeError, r"fit: scan must be a bool, got str 'no'"),
    (dict(progress=0), TypeError, r"fit: progress must be a bool, got int 0"),
    (dict(data="callable", epochs=1), None, None),         # control row: this one trains
]


@pytest.mark.parametrize("changes, exc, match", FIT_ROWS,
                         ids=[",".join(r[0]) + f"-{i}" for i, r in enumerate(FIT_ROWS)])
def test_fit_rejects_bad_input_before_training(changes, exc, match):
    run = _fit(**changes)
    if exc is None:
        assert run() == [0]                                   # the counter does count
        return
    calls_seen = []
    with pytest.raises(exc, match=match):
        calls_seen = run()
    assert calls_seen == []


@pytest.mark.parametrize("source", ["loader", "list"])
def test_a_misspelt_monitor_is_refused_at_the_first_batch_of_an_iterable(source):
    """With batches from an iterable the metric names are known at its first batch: a
    monitor fit does not log is refused there, before any step (it was a KeyError from
    the callback after a whole epoch)."""
    from funcnet import data
    batches = (data.Loader(X, Y, 32, key=0) if source == "loader"
               else [(X[:32], Y[:32]), (X[32:], Y[32:])])
    seen = []
    with pytest.raises(ValueError, match=r"fit: callbacks\[1\] \(EarlyStopping\) monitors "
                                         r"'accuarcy', which fit does not log; the logs hold "
                                         r"accuracy, epoch_time, learning_rate, loss"):
        train.fit(MLP, PARAMS, STATE, ADAM, batches, 2, key=KEY, progress=False,
                  callbacks=[lambda e, logs: seen.append(e), train.EarlyStopping("accuarcy")])
    assert seen == []
    *_, hist = train.fit(MLP, PARAMS, STATE, ADAM, batches, 1, key=KEY, progress=False,
                         callbacks=[train.EarlyStopping("accuracy")])
    assert hist["epoch"] == [1]


def test_a_loaders_last_batch_the_model_refuses_is_found_before_training(tmp_path):
    """A Loader with drop_last=False whose last batch has one row: batch norm refuses it
    in training mode. fit used to train the whole epoch first and then lose it."""
    from funcnet import checkpoint, data
    from tests.train._setup import BN_MLP

    params, state = init(BN_MLP)
    loader = data.Loader(X[:33], Y[:33], 32, key=KEY, drop_last=False)
    manager = checkpoint.CheckpointManager(tmp_path)
    with pytest.raises(ValueError, match=r"fit: data: the Loader's last batch \(drop_last="
                                         r"False, 1 row\): serial\[1\] \(BatchNorm"):
        train.fit(BN_MLP, params, state, ADAM, loader, 1, key=KEY, progress=False,
                  checkpoint=manager)
    assert manager.latest_step() is None


def test_fit_with_a_bad_callable_eval_data_trains_nothing():
    """The callable's counter stays empty: eval_data is checked before the first epoch."""
    calls = []

    def data(epoch):
        calls.append(epoch)
        return [(X[:32], Y[:32])]

    with pytest.raises(ValueError, match=r"eval_data x has shape \(10, 64\) but eval_data y"):
        train.fit(MLP, PARAMS, STATE, ADAM, data, 1, key=KEY, progress=False,
                  eval_data=(X_TEST[:10], Y_TEST[:9]))
    assert calls == []


EVAL_ROWS = [
    (dict(model="m"), TypeError, "evaluate: model must be a Layer"),
    (dict(x=X_TEST[:10], y=Y_TEST[:9]), ValueError,
     r"evaluate: data x has shape \(10, 64\) but data y has shape \(9,\)"),
    (dict(batch_size=0), ValueError, "evaluate: batch_size must be >= 1"),
    (dict(batch_size="all"), TypeError, "evaluate: batch_size must be an int"),
    (dict(loss_fn=None), TypeError, "evaluate: loss_fn must be callable"),
    (dict(y=OUT_OF_RANGE), ValueError, r"evaluate: the labels in y hold 10 \(at index \(5,\)\)"),
    (dict(x=X[:, :3]), ValueError, r"evaluate: x: serial\[0\] \(Dense\(32\)\)"),
    (dict(mesh=object()), TypeError, "evaluate: mesh must be None or a jax.sharding.Mesh"),
    (dict(compute_dtype="int8"), TypeError, "evaluate: compute_dtype must be a floating"),
    # a per-example loss used to be summed silently (650.5 for a mean of 2.5)
    (dict(loss_fn=PER_EXAMPLE), ValueError, r"evaluate: loss_fn must return a scalar.*shape "
                                            r"\(64,\)"),
    (dict(metrics_fn=PER_CLASS), ValueError, r"evaluate: metrics_fn must return scalars"),
    (dict(metrics_fn=lambda lg, t: {"loss": jnp.mean(lg)}), ValueError,
     r"evaluate: metrics_fn returned a metric named 'loss'"),
]


@pytest.mark.parametrize("changes, exc, match", EVAL_ROWS)
def test_evaluate_rejects_bad_input(changes, exc, match):
    args, changes = dict(model=MLP, params=PARAMS, state=STATE, x=X, y=Y), dict(changes)
    kwargs = {k: changes.pop(k) for k in list(changes) if k not in args}
    args.update(changes)
    with pytest.raises(exc, match=match):
        train.evaluate(*args.values(), **kwargs)


STEP_ROWS = [
    (dict(model=nn.ReLU), TypeError, "train_step: model must be a Layer"),
    (dict(opt=nn.ReLU()), TypeError, "train_step: opt must be an optimizer"),
    (dict(loss_fn="ce"), TypeError, "train_step: loss_fn must be callable"),
    (dict(metrics_fn=3), TypeError, "train_step: metrics_fn must be callable"),
    (dict(accum_steps=0), ValueError, "train_step: accum_steps must be >= 1, got 0"),
    (dict(accum_steps=2.0), TypeError, "train_step: accum_steps must be an int"),
    (dict(compute_dtype=np.int8), TypeError, "train_step: compute_dtype must be a floating"),
]


@pytest.mark.parametrize("factory", [train.train_step, train.make_train_step])
@pytest.mark.parametrize("changes, exc, match", STEP_ROWS)
def test_step_factories_reject_bad_arguments(factory, changes, exc, match):
    args, changes = dict(model=MLP, opt=ADAM, loss_fn=ops.softmax_cross_entropy), dict(changes)
    kwargs = {k: changes.pop(k) for k in list(changes) if k not in args}
    args.update(changes)
    with pytest.raises(exc, match=match):
        factory(*args.values(), **kwargs)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("loss_fn, metrics_fn, match", [
    (PER_EXAMPLE, None, r"train_step: loss_fn must return a scalar.*shape \(8,\)"),
    (ops.softmax_cross_entropy, PER_CLASS, r"train_step: metrics_fn must return scalars"),
    (ops.softmax_cross_entropy, lambda lg, t: {"loss": jnp.mean(lg)},
     r"train_step: metrics_fn returned a metric named 'loss'"),
])
def test_step_checks_the_loss_and_metrics_at_trace_time(jit, loss_fn, metrics_fn, match):
    step = train.train_step(MLP, optim.sgd(0.1), loss_fn, metrics_fn=metrics_fn)
    step = jax.jit(step) if jit else step
    with pytest.raises(ValueError, match=match):
        step(PARAMS, STATE, optim.sgd(0.1).init(PARAMS), X[:8], Y[:8])


def test_make_train_step_rejects_a_bad_donate():
    with pytest.raises(TypeError, match="make_train_step: donate must be a bool"):
        train.make_train_step(MLP, ADAM, donate="yes")


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("x, y, accum, match", [
    (X[:8], Y[:6], 1, r"train_step: x has shape \(8, 64\) but y has shape \(6,\), expected "
                      r"the same leading \(batch\) size"),
    (X[:9], Y[:9], 2, r"train_step: x has shape \(9, 64\); its leading size must "
                      r"be divisible by 2 \(accum_steps=2\)"),
    (X[0], Y[0], 1, r"train_step: y has shape \(\), expected a leading \(batch\) axis"),
])
def test_step_rejects_bad_batches_eagerly_and_under_jit(jit, x, y, accum, match):
    step = train.train_step(MLP, optim.sgd(0.1), accum_steps=accum)
    step = jax.jit(step) if jit else step
    with pytest.raises(ValueError, match=match):
        step(PARAMS, STATE, optim.sgd(0.1).init(PARAMS), x, y)
