"""ctc_loss: the hand-written backward (the backward recursion, ``softmax - posterior``)
against autodiff of the twin and central differences in float64, values and gradients
against optax's ``ctc_loss`` (mean over the batch), padding of frames (anywhere) and of
labels, repeated labels, another blank, empty labels, float32, jit / vmap, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as R
from tests.ops._cases import assert_raises_everywhere, rand


def _case(seed, b, t, k, n, blank=0, frame_pad=(), label_lens=None):
    """logits (B, T, K), frame paddings, labels without the blank, label paddings."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k - 1, (b, n))
    labels = labels + (labels >= blank)                  # skip the blank's id
    lens = rng.integers(0, n + 1, b) if label_lens is None else np.asarray(label_lens)
    lpad = (np.arange(n)[None, :] >= lens[:, None]).astype(np.float64)
    xpad = np.zeros((b, t))
    for row, lo, hi in frame_pad:
        xpad[row, lo:hi] = 1.0
    return rand((b, t, k), seed + 1), xpad, labels.astype(np.int32), lpad


CASES = {
    "repeats-and-padding": (_case(0, 3, 9, 5, 4, frame_pad=[(1, 6, 9), (2, 8, 9)],
                                  label_lens=[4, 2, 3]), 0),
    "pad-in-the-middle": (_case(1, 2, 8, 4, 3, frame_pad=[(0, 2, 4)], label_lens=[3, 1]), 0),
    "blank-last-empty-label": (_case(2, 3, 7, 6, 3, blank=5, label_lens=[0, 3, 2]), 5),
    "one-frame": (_case(3, 2, 1, 3, 1, label_lens=[1, 0]), 0),
    "random-lengths": (_case(4, 4, 12, 6, 5), 0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_vjp_matches_twin_and_central_differences(name):
    (logits, xpad, labels, lpad), blank = CASES[name]
    check_vjp(lambda x: ops.ctc_loss(x, xpad, labels, lpad, blank_id=blank),
              lambda x: R.ctc_loss(x, xpad, labels, lpad, blank_id=blank), (logits,))


def test_values_and_gradients_equal_optax_mean():
    optax = pytest.importorskip("optax")

    def both():
        out = {}
        for name, ((logits, xpad, labels, lpad), blank) in CASES.items():
            out[name] = (jax.value_and_grad(lambda x: ops.ctc_loss(
                x, xpad, labels, lpad, blank_id=blank))(logits),
                jax.value_and_grad(lambda x: optax.ctc_loss(
                    x, xpad, labels, lpad, blank_id=blank).mean())(logits))
        return out

    with jax.numpy_dtype_promotion("standard"):          # optax mixes float32 and 64
        out = jax.jit(both)()                            # every case, one compilation
    for name, (ours, theirs) in out.items():
        assert_close(ours, theirs, 1e-12, f"ctc vs optax ({name})")


def test_a_padded_frame_gets_no_gradient_and_the_frames_sum_to_zero():
    (logits, xpad, labels, lpad), _ = CASES["repeats-and-padding"]
    g = np.asarray(jax.jit(jax.grad(lambda x: ops.ctc_loss(x, xpad, labels, lpad)))(logits))
    assert np.all(g[xpad > 0] == 0)
    # softmax - posterior: every frame's gradient sums to 0 over the classes
    np.testing.assert_allclose(g.sum(-1), 0.0, atol=1e-15)


def test_impossible_labelling_is_large_and_finite():
    """Three different labels need three frames; two give log p ~ log_epsilon."""
    logits, xpad = rand((1, 2, 4), 7), np.zeros((1, 2))
    loss = ops.ctc_loss(logits, xpad, np.array([[1, 2, 3]], np.int32), np.zeros((1, 3)))
    assert np.isfinite(loss) and loss > 1e4


def test_float32_jit_and_vmap_over_groups_of_batches():
    (logits, xpad, labels, lpad), _ = CASES["random-lengths"]
    f = jax.jit(jax.value_and_grad(lambda x, p, y, q: ops.ctc_loss(x, p, y, q)))
    v32, g32 = f(logits.astype(np.float32), xpad.astype(np.float32), labels, lpad)
    v64, g64 = f(logits, xpad, labels, lpad)
    assert v32.dtype == g32.dtype == jnp.float32
    np.testing.assert_allclose(v32, v64, rtol=1e-5)
    np.testing.assert_allclose(g32, g64, atol=1e-6)
    halves = [(a[:2], a[2:]) for a in (logits, xpad, labels, lpad)]
    stacked = [np.stack(h) for h in halves]
    vs, gs = jax.vmap(f)(*stacked)
    for i in range(2):
        vi, gi = f(*(h[i] for h in halves))
        np.testing.assert_allclose(vs[i], vi, rtol=1e-13)
        np.testing.assert_allclose(gs[i], gi, rtol=1e-12, atol=1e-15)


ERRORS = [
    ("rank", dict(logits=np.zeros((2, 3))), ValueError, r"logits has shape \(2, 3\)"),
    ("batch", dict(labels=np.zeros((3, 2), np.int32), label_paddings=np.zeros((3, 2))),
     ValueError, "labels has batch size 3, logits 2"),
    ("frame-pad-shape", dict(logit_paddings=np.zeros((2, 4))), ValueError, "logit_paddings"),
    ("label-pad-shape", dict(label_paddings=np.zeros((2, 3))), ValueError, "label_paddings"),
    ("float-labels", dict(labels=np.zeros((2, 2))), TypeError, "labels"),
    ("blank", dict(blank_id=4), ValueError, "blank_id"),
    ("log-eps", dict(log_epsilon=0.0), ValueError, "log_epsilon"),
]


@pytest.mark.parametrize("case_id, kw, exc, match", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_arguments_raise_naming_the_function(case_id, kw, exc, match):
    """Eagerly, under jit and in reference mode (the twin's checks)."""
    args = dict(logits=np.zeros((2, 3, 4)), logit_paddings=np.zeros((2, 3)),
                labels=np.ones((2, 2), np.int32), label_paddings=np.zeros((2, 2)))
    args.update(kw)
    arrays = {k: v for k, v in args.items() if k not in ("blank_id", "log_epsilon")}
    static = {k: v for k, v in args.items() if k in ("blank_id", "log_epsilon")}
    assert_raises_everywhere(lambda *a: ops.ctc_loss(*a, **static), tuple(arrays.values()),
                             exc, "ctc_loss: .*" + match)
