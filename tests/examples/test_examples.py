"""Every script in examples/ runs in --quick mode and writes its (non-empty) PNG plots.

The scripts run in this process (``runpy.run_path`` with ``sys.argv`` patched) so JAX is
imported once; they must also be clean under the suite's strict dtype promotion and
``jax_numpy_rank_promotion="raise"``.
"""
import runpy
import sys
from pathlib import Path

import pytest

from tests.nn._models import numpy_init

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXPECTED = {
    "main": ["main_curves.png"],
    "linear_svm": ["linear_svm.png"],
    "two_layer_net": ["two_layer_net.png"],
    "batchnorm_comparison": ["batchnorm_comparison.png"],
    "weight_init": ["weight_init_activations.png", "weight_init_loss.png"],
    "cnn": ["cnn.png", "cnn_filters.png"],
    "rnn_sequence": ["rnn_sequence.png"],
    "vmap_sweep": ["vmap_sweep.png"],
    "per_example_grads": ["per_example_grads.png"],
    "optimizer_comparison": ["optimizer_trajectories.png", "optimizer_digits_loss.png"],
    "resnet": ["resnet.png"],
    "char_transformer": ["char_transformer.png"],
    "bracket_lstm": ["bracket_lstm.png"],
    "depth_tagger": ["depth_tagger.png"],
    "unet_denoise": ["unet_denoise.png"],
}
SCRIPTS = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_"))


def test_every_script_is_listed():
    assert set(SCRIPTS) == set(EXPECTED), "add new examples to EXPECTED"


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_quick_mode_writes_plots(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--quick", "--out", str(tmp_path)])
    runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    for png in EXPECTED.get(name, []):
        path = tmp_path / png
        assert path.is_file(), f"{name} did not write {png}"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


# option paths a default --quick run does not take
VARIANTS = [("bracket_lstm", ["--cell", "rnn", "--bidirectional"])]


@pytest.mark.parametrize("name, extra", VARIANTS,
                         ids=[f"{name} {' '.join(extra)}" for name, extra in VARIANTS])
def test_example_variants(name, extra, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--quick", "--out", str(tmp_path), *extra])
    runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    assert all((tmp_path / png).is_file() for png in EXPECTED[name])


def test_char_transformer_cached_sampling_equals_full_window_sampling(monkeypatch):
    """The example's sampler (key/value cache, decode=True model) draws the characters a
    sampler re-running the training model on the whole window draws, while they fit."""
    import jax
    import jax.numpy as jnp

    monkeypatch.syspath_prepend(str(EXAMPLES))
    ex = runpy.run_path(str(EXAMPLES / "char_transformer.py"), run_name="example")
    seq_len, prompt = 8, "de"
    model = ex["build_model"](seq_len, 8, 1, 2, 0.1)
    _, params, state = numpy_init(model, (-1, seq_len), seed=1)   # no init program to compile
    decoder = ex["build_model"](seq_len, 8, 1, 2, 0.1, decode=True)
    key = jax.random.PRNGKey(2)
    got = ex["sample"](decoder, params, prompt, seq_len - len(prompt), seq_len, key)
    # jitted (one compile per length): eagerly each pass dispatched op by op (~450 compiles)
    full_window = jax.jit(lambda ids: model.apply(params, state, ids))
    codes = list(prompt.encode())
    while len(codes) < seq_len:
        logits, _ = full_window(jnp.asarray(codes, jnp.int32)[None])
        key, sub = jax.random.split(key)
        codes.append(int(jax.random.categorical(sub, logits[0, -1] / 0.8)))
    assert got == bytes(codes).decode("ascii", errors="replace")
    assert len(ex["sample"](decoder, params, prompt, 2 * seq_len, seq_len, key)) == 2 + 2 * seq_len
