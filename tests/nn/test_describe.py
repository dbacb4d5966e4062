"""nn.describe: every layer funcnet builds records the call that built it, sub-layers
included; fit's fingerprint holds it, so a run is not resumed with another setting that
leaves the params' tree unchanged (rope=True, a dropout rate, causal)."""
import inspect
import shutil

import jax
import jax.numpy as jnp
import pytest

from funcnet import checkpoint, nn, optim, train
from funcnet._describe import call_text, describe_value, described
from tests.train._setup import KEY, init, subset

X, Y = subset(64)
FIT = dict(batch_size=32, key=KEY, progress=False)

LAYERS = {  # every public layer factory with arguments
    "Dense": lambda: nn.Dense(3, use_bias=False), "Conv2D": lambda: nn.Conv2D(4, 3, stride=2),
    "Conv1D": lambda: nn.Conv1D(4, 3), "MaxPool2D": lambda: nn.MaxPool2D(2),
    "AvgPool2D": lambda: nn.AvgPool2D(2), "GlobalAvgPool2D": nn.GlobalAvgPool2D,
    "Flatten": nn.Flatten, "ReLU": nn.ReLU, "GELU": lambda: nn.GELU(approximate=False),
    "LeakyReLU": lambda: nn.LeakyReLU(0.2), "BatchNorm": lambda: nn.BatchNorm(0.8),
    "Dropout": lambda: nn.Dropout(0.3), "LayerNorm": lambda: nn.LayerNorm(eps=1e-3),
    "RMSNorm": nn.RMSNorm, "Embedding": lambda: nn.Embedding(10, 4),
    "GroupNorm": lambda: nn.GroupNorm(None, group_size=2), "InstanceNorm": nn.InstanceNorm,
    "RNN": lambda: nn.RNN(5), "LSTM": lambda: nn.LSTM(5), "GRU": lambda: nn.GRU(5),
    "MultiHeadAttention": lambda: nn.MultiHeadAttention(2, rope=True),
    "CrossAttention": lambda: nn.CrossAttention(2), "PositionEmbedding":
    lambda: nn.PositionEmbedding(8), "Reshape": lambda: nn.Reshape((2, -1)),
    "SwapAxes": lambda: nn.SwapAxes(0, 1), "Select": lambda: nn.Select(0, 2),
    "serial": lambda: nn.serial(nn.Dense(2), nn.Tanh()),
    "Residual": lambda: nn.Residual(nn.Dense(2)), "Repeat": lambda: nn.Repeat(nn.Dense(2), 3),
    "Remat": lambda: nn.Remat(nn.Dense(2)), "OnFirst": lambda: nn.OnFirst(nn.Dense(2)),
    "KeepRest": lambda: nn.KeepRest(nn.Dense(2), residual=True),
    "TiedEmbedding": lambda: nn.TiedEmbedding(10, 4, nn.LayerNorm()),
    "Bidirectional": lambda: nn.Bidirectional(nn.LSTM(3), nn.GRU(3)),
    "parallel": lambda: nn.parallel(nn.Dense(2), nn.Dense(3)),
    "FanOut": lambda: nn.FanOut(2), "FanInConcat": lambda: nn.FanInConcat(-1),
    "ELU": lambda: nn.ELU(0.5), "CELU": lambda: nn.CELU(2.0),
    "Squareplus": lambda: nn.Squareplus(1.0), "GLU": lambda: nn.GLU(axis=1),
    "SinusoidalPositions": lambda: nn.SinusoidalPositions(100.0, decode=True),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_every_layer_is_described_by_its_call(name):
    text = nn.describe(LAYERS[name]())
    assert text is not None and text.startswith(name + "("), text
    assert nn.describe(LAYERS[name]()) == text


def test_settings_and_sub_layers_are_in_the_text():
    attn = lambda **kw: nn.Residual(nn.MultiHeadAttention(2, causal=True, **kw))  # noqa: E731
    assert nn.describe(attn(rope=True)) != nn.describe(attn())
    assert "rope=True" in nn.describe(nn.serial(nn.Dense(4), attn(rope=True)))
    assert nn.describe(nn.Dropout(0.1)) != nn.describe(nn.Dropout(0.2))
    own = nn.Layer(lambda k, s: (s, (), ()), lambda p, s, x, **kw: (x, s), "Mine")
    assert nn.describe(own) is None
    assert "Mine" in nn.describe(nn.serial(own, nn.ReLU()))


# arguments a layer gained after its text first went into run fingerprints, each group
# of settings valid together (position_bias and window exclude each other)
ADDED = {"Conv2D": ((4, 3), [{"dilation": 2, "groups": 2}]),
         "Conv1D": ((4, 3), [{"dilation": 2, "groups": 2}]),
         "MultiHeadAttention": ((4,), [{"window": 2, "logit_soft_cap": 50.0, "scale": 1.0,
                                        "qk_norm": True},
                                       {"position_bias": "t5",
                                        "position_bias_buckets": (16, 64), "packed": True}]),
         "CrossAttention": ((4,), [{"decode": True, "logit_soft_cap": 30.0,
                                    "scale": 0.125, "qk_norm": True}, {"packed": True}]),
         "PositionEmbedding": ((8,), [{"packed": True}]),
         "SinusoidalPositions": ((), [{"packed": True}])}


@pytest.mark.parametrize("name", list(ADDED))
def test_arguments_added_later_keep_old_runs_resumable(name):
    """At their defaults, new arguments are not in the text: a run checkpointed before they
    existed has the same fingerprint; another value is in it and refuses the resume."""
    (args, groups), factory = ADDED[name], getattr(nn, name)
    signature = inspect.signature(factory)
    old = signature.replace(parameters=[p for p in signature.parameters.values()
                                        if not any(p.name in values for values in groups)])
    assert nn.describe(factory(*args)) == call_text(name, old, args, {})
    for values in groups:
        text = nn.describe(factory(*args, **values))
        for arg, value in values.items():
            assert f"{arg}={describe_value(value)}" in text
    with pytest.raises(TypeError, match="no argument 'nope'"):
        described(added=("nope",))(lambda a=1: None)


def _model(rate, rope):
    return nn.serial(nn.Dense(32, dtype=jnp.float32), nn.ReLU(), nn.Dropout(rate),
                     nn.Reshape((4, 8)), nn.MultiHeadAttention(2, rope=rope),
                     nn.Flatten(), nn.Dense(10, dtype=jnp.float32))


@pytest.fixture(scope="module")
def first_epoch(tmp_path_factory):
    """A run of _model(0.1, True) checkpointed after epoch 1 (trained once for both cases
    below; each resumes from its own copy)."""
    first = _model(0.1, True)
    params, state = init(first)
    path = tmp_path_factory.mktemp("first_epoch")
    train.fit(first, params, state, optim.adam(1e-2), (X, Y), 1,
              checkpoint=checkpoint.CheckpointManager(path), **FIT)
    return path, params, state


@pytest.mark.parametrize("then, why", [((0.1, False), "rope=False"),
                                       ((0.2, True), "rate=0.2")], ids=["rope", "dropout"])
def test_fit_refuses_a_model_with_another_setting_and_the_same_params(tmp_path, first_epoch,
                                                                       then, why):
    path, params, state = first_epoch
    shutil.copytree(path, tmp_path / "run")
    manager = checkpoint.CheckpointManager(tmp_path / "run")
    assert manager.all_steps() == [1]
    with pytest.raises(train.RunMismatchError, match=f"model_config is .*{why}"):
        train.fit(_model(*then), params, state, optim.adam(1e-2), (X, Y), 2,
                  checkpoint=manager, **FIT)
    _, _, _, history = train.fit(_model(0.1, True), params, state, optim.adam(1e-2), (X, Y),
                                 2, checkpoint=manager, **FIT)
    assert history["epoch"] == [1, 2]
