"""optim.describe: every optimizer funcnet builds records the call that built it (every
hyperparameter, nested optimizers and schedules included), stably; fit refuses to resume
a run with another description and still resumes a checkpoint written before funcnet
recorded it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import checkpoint, optim, train
from funcnet.train import loop
from tests.optim._contrib_calls import CALLS as ROUND4_CALLS, namespace
from tests.optim._optax_calls import CALLS
from tests.optim._round5_calls import CALLS as ROUND5_CALLS
from tests.train._setup import KEY, MLP, init, subset

X, Y = subset(64)
FIT = dict(batch_size=32, key=KEY, progress=False)


def _build(call):
    return eval(call, namespace(optim))


def test_every_typical_call_is_described_by_its_own_name_and_arguments():
    texts = {}
    for call in CALLS + ROUND4_CALLS + ROUND5_CALLS:
        text = optim.describe(_build(call))
        name = call.split("(")[0]
        name = {"partition": "multi_transform"}.get(name, name)
        assert text is not None and text.startswith(name + "("), (call, text)
        assert optim.describe(_build(call)) == text, call            # stable
        texts.setdefault(text, []).append(call)
    # calls that spell the same arguments differently share a text; the others do not
    same = [calls for calls in texts.values() if len(calls) > 1]
    assert ["sgd(0.1)", "sgd(learning_rate=0.1)"] in same
    for calls in same:
        assert len({c.split("(")[0] for c in calls}) == 1, calls


def test_description_contents():
    text = optim.describe(optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(
        optim.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 100), weight_decay=0.01,
        mu_dtype=jnp.bfloat16)))
    for part in ("clip_by_global_norm(max_norm=1.0)", "adamw(learning_rate="
                 "warmup_cosine_decay_schedule(init_value=0.0, peak_value=0.001",
                 "weight_decay=0.01", "mu_dtype=bfloat16"):
        assert part in text, (part, text)
    assert optim.describe(optim.MultiSteps(optim.lion(1e-4), 4)).startswith(
        "MultiSteps(opt=lion(learning_rate=0.0001")
    assert optim.describe(optim.inject_hyperparams(optim.adam)(3e-4)).startswith(
        "inject_hyperparams(funcnet.optim.aliases.adam, static_args=[], "
        "hyperparam_dtype=None)(learning_rate=0.0003, b1=0.9")
    assert optim.describe(optim.adam(np.float32(0.5))) == optim.describe(optim.adam(0.5))
    assert "mask=array(bool[2])" in optim.describe(optim.adamw(1e-3, mask=np.ones(2, bool)))
    seen = []
    jax.vmap(lambda lr: seen.append(optim.describe(optim.adam(lr))) or lr)(jnp.ones(2))
    assert seen == [optim.describe(optim.adam(1.0)).replace("learning_rate=1.0",
                                                            "learning_rate=traced")]
    assert optim.describe(lambda g, s, p: None) is None


def test_fit_resumes_a_checkpoint_written_before_the_optimizer_was_recorded(
        tmp_path, monkeypatch):
    params, state = init(MLP)
    manager = checkpoint.CheckpointManager(tmp_path)
    older = loop.fingerprint

    def without_optimizer(**kwargs):
        fp = older(**kwargs)
        del fp["optimizer"]
        return fp

    monkeypatch.setattr(loop, "fingerprint", without_optimizer)
    train.fit(MLP, params, state, optim.adam(1e-2), (X, Y), 1, checkpoint=manager, **FIT)
    monkeypatch.undo()
    _, _, _, history = train.fit(MLP, params, state, optim.adam(1e-2), (X, Y), 2,
                                 checkpoint=manager, **FIT)
    assert history["epoch"] == [1, 2]


def test_an_optax_run_is_not_resumed_with_a_funcnet_optimizer(tmp_path):
    optax = pytest.importorskip("optax")
    params, state = init(MLP)
    manager = checkpoint.CheckpointManager(tmp_path)
    with jax.numpy_dtype_promotion("standard"):     # optax mixes Python floats and int32
        train.fit(MLP, params, state, optax.adam(1e-2), (X, Y), 1, checkpoint=manager,
                  **FIT)
    with pytest.raises(train.RunMismatchError, match="optimizer is .adam.* now but None"):
        train.fit(MLP, params, state, optim.adam(1e-2), (X, Y), 2, checkpoint=manager,
                  **FIT)
    with jax.numpy_dtype_promotion("standard"):
        _, _, _, history = train.fit(MLP, params, state, optax.adam(1e-2), (X, Y), 2,
                                     checkpoint=manager, **FIT)
    assert history["epoch"] == [1, 2]
