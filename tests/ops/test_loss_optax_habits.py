"""optax / PyTorch loss habits: label smoothing, Huber, log-cosh, cosine, KL, focal loss.

Every funcnet loss is the MEAN over the batch (DESIGN.md): each op is compared with
``optax_fn(...).mean()`` (and PyTorch's ``reduction='mean'``/``'batchmean'`` where cheap),
checked against its twin (1e-10) and central differences, under ``jit``/``vmap``/second
order, at its kinks, and for its errors (eagerly, under ``jit`` and in reference mode).
"""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet import nn, optim, train
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as ref
from funcnet.ops.losses import _sce_index, _sce_probs
from tests.ops._cases import assert_raises_everywhere, labels, normal, probs, uniform

NEW = ("cosine_distance", "cosine_similarity", "generalized_kl_divergence", "huber_loss",
       "kl_divergence", "kl_divergence_with_log_targets", "log_cosh", "sigmoid_focal_loss")


def _lsm(x):
    return jax.nn.log_softmax(x, axis=-1)


MASK342 = np.random.default_rng(66).random((3, 4, 2)) > 0.3     # optax's where=


def _bind(name, **kw):
    """``(op, twin)`` of ``name`` with static keyword arguments bound."""
    return (functools.partial(getattr(ops, name), **kw),
            functools.partial(getattr(ref, name), **kw))


# (id, op name, args factory, static keyword arguments)
CASES = [
    ("sce_smooth_index", "softmax_cross_entropy",
     lambda: (normal(1, (5, 4), 2.0), labels(2, (5,), 4)), dict(label_smoothing=0.1)),
    ("sce_smooth_probs", "softmax_cross_entropy",
     lambda: (normal(3, (5, 4), 2.0), uniform(4, (5, 4), 0.0, 1.0)), dict(label_smoothing=0.2)),
    ("huber_rank3", "huber_loss", lambda: (normal(9, (2, 3, 2)), normal(10, (2, 3, 2))),
     dict(delta=0.3)),
    ("log_cosh", "log_cosh", lambda: (normal(25, (3, 4), 3.0), normal(26, (3, 4))), {}),
    ("cosine_sim", "cosine_similarity", lambda: (normal(27, (2, 3, 4)), normal(28, (2, 3, 4))),
     {}),
    ("cosine_dist_guarded", "cosine_distance",   # row 0 of predictions below the guard
     lambda: (normal(29, (3, 4)) * jnp.array([[1e-3], [1.0], [1.0]]), normal(80, (3, 4))),
     dict(epsilon=1e-4)),
    ("kl", "kl_divergence", lambda: (_lsm(normal(11, (4, 5))), probs(12, (4, 5))), {}),
    ("kl_rank3_unnormalised", "kl_divergence",
     lambda: (_lsm(normal(13, (2, 2, 3))), uniform(14, (2, 2, 3), 0.1, 2.0)), {}),
    ("kl_log", "kl_divergence_with_log_targets",
     lambda: (_lsm(normal(15, (4, 5))), _lsm(normal(16, (4, 5)))), {}),
    # optax's axis= and where= (rows along axis 1 / axes (0, 2), a mask of elements)
    ("kl_axis_where", "kl_divergence",
     lambda: (jax.nn.log_softmax(normal(60, (3, 4, 2)), axis=1), probs(61, (3, 4, 2))),
     dict(axis=1, where=MASK342)),
    # unnormalized measures (rows need not sum to 1); masked elements leave exp(lp) too
    ("gkl", "generalized_kl_divergence",
     lambda: (normal(67, (3, 4)), uniform(68, (3, 4), 0.1, 2.0)), {}),
    ("gkl_axis_where", "generalized_kl_divergence",
     lambda: (normal(69, (3, 4, 2)), uniform(70, (3, 4, 2), 0.1, 2.0)),
     dict(axis=1, where=MASK342)),
    ("kl_log_axes", "kl_divergence_with_log_targets",
     lambda: (_lsm(normal(62, (3, 4, 2))), _lsm(normal(63, (3, 4, 2)))), dict(axis=(0, 2))),
    ("cosine_axis_where", "cosine_similarity",
     lambda: (normal(64, (3, 4, 2)), normal(65, (3, 4, 2))), dict(axis=(0, 2), where=MASK342)),
    # optax's targets=None: the loss of the predictions themselves
    ("huber_no_targets", "huber_loss", lambda: (normal(25, (4, 3), 2.0),), dict(delta=0.7)),
    ("squared_error", "squared_error", lambda: (normal(27, (4, 3)), normal(28, (4, 3))), {}),
    ("l2_loss_no_targets", "l2_loss", lambda: (normal(29, (2, 3, 2)),), {}),
    ("log_cosh_no_targets", "log_cosh", lambda: (normal(26, (4, 3), 2.0),), {}),
    ("focal", "sigmoid_focal_loss", lambda: (normal(17, (4, 3), 3.0),
                                             uniform(18, (4, 3), 0.1, 0.9)), {}),
    ("focal_alpha_gamma_half", "sigmoid_focal_loss",
     lambda: (normal(19, (4, 3), 3.0), uniform(20, (4, 3), 0.1, 0.9)),
     dict(alpha=0.25, gamma=0.5)),
    ("focal_gamma_0", "sigmoid_focal_loss",
     lambda: (normal(23, (6,), 2.0), uniform(24, (6,), 0.1, 0.9)), dict(alpha=0.6, gamma=0.0)),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("case_id, name, make, kw", CASES, ids=IDS)
def test_vjp_matches_reference_and_central_differences(case_id, name, make, kw):
    op, twin = _bind(name, **kw)
    check_vjp(op, twin, make(), rtol=1e-10, fd_rtol=1e-6)


def _optax_cases():
    """(id, funcnet call, optax/torch-style reference) on the same float64 inputs."""
    import optax
    x, t = normal(30, (6, 4), 3.0), normal(31, (6, 4))
    y = labels(32, (6,), 4)
    onehot = jax.nn.one_hot(y, 4, dtype=x.dtype)
    p = probs(33, (6, 4)).at[0, 1].set(0.0)     # a zero target: 0 log 0 = 0 in both
    lt = _lsm(normal(34, (6, 4)))
    soft_and_hard = jnp.concatenate([uniform(35, (3, 4), 0.0, 1.0),    # rows 0-2 soft,
                                     (uniform(36, (3, 4), 0.0, 1.0) > 0.5).astype(x.dtype)])
    out = []
    for a, lab in ((0.1, y), (0.45, onehot)):
        out.append((f"sce_{a}",
                    lambda x, a=a, lab=lab: ops.softmax_cross_entropy(x, lab, label_smoothing=a),
                    lambda x, a=a: optax.softmax_cross_entropy(x, optax.smooth_labels(onehot,
                                                                                      a))))
    out.append(("sce_probs_0.2", lambda x: ops.softmax_cross_entropy(x, p, label_smoothing=0.2),
                lambda x: optax.softmax_cross_entropy(x, optax.smooth_labels(p, 0.2))))
    for d in (1.0, 2.5):
        out.append((f"huber_{d}", lambda x, d=d: ops.huber_loss(x, t, d),
                    lambda x, d=d: optax.huber_loss(x, t, delta=d)))
    out.append(("log_cosh", lambda x: ops.log_cosh(x, t), lambda x: optax.log_cosh(x, t)))
    out.append(("log_cosh_no_targets", ops.log_cosh, optax.log_cosh))
    out.append(("squared_error", lambda x: ops.squared_error(x, t),
                lambda x: optax.squared_error(x, t)))
    out.append(("l2_loss", lambda x: ops.l2_loss(x, t), lambda x: optax.l2_loss(x, t)))
    out.append(("l2_loss_no_targets", ops.l2_loss, optax.l2_loss))
    out.append(("huber_no_targets", lambda x: ops.huber_loss(x, delta=0.5),
                lambda x: optax.huber_loss(x, delta=0.5)))
    small = t * jnp.array([[1e-3], [1.0], [1.0], [1.0], [1e-5], [1.0]])   # under the guard
    for name, e in (("cosine_similarity", 0.0), ("cosine_distance", 1e-4)):
        out.append((name, lambda x, n=name, e=e: getattr(ops, n)(x, small, e),
                    lambda x, n=name, e=e: getattr(optax, n)(x, small, epsilon=e)))
    out.append(("kl", lambda x: ops.kl_divergence(_lsm(x), p),
                lambda x: optax.kl_divergence(_lsm(x), p)))
    out.append(("gkl", lambda x: ops.generalized_kl_divergence(x, 2 * p),
                lambda x: optax.losses.generalized_kl_divergence(x, 2 * p)))
    out.append(("gkl_where", lambda x: ops.generalized_kl_divergence(x, 2 * p, where=p > 0.2),
                lambda x: optax.losses.generalized_kl_divergence(x, 2 * p, where=p > 0.2)))
    out.append(("kl_log", lambda x: ops.kl_divergence_with_log_targets(_lsm(x), lt),
                lambda x: optax.losses.kl_divergence_with_log_targets(_lsm(x), lt)))
    lab = soft_and_hard                          # rows 3-5 hard labels
    for alpha, gamma in [(None, 2.0), (0.25, 1.0), (0.9, 0.0)]:
        out.append((f"focal_{alpha}_{gamma}",
                    lambda x, a=alpha, g=gamma: ops.sigmoid_focal_loss(x, lab, a, g),
                    lambda x, a=alpha, g=gamma: optax.sigmoid_focal_loss(x, lab, alpha=a,
                                                                         gamma=g)))
    return x, out


def test_values_and_gradients_equal_optax_mean():
    optax = pytest.importorskip("optax")  # noqa: F841 - used in _optax_cases
    x, cases = _optax_cases()

    @jax.jit
    def all_cases(x):
        return {cid: (jax.value_and_grad(f)(x),
                      jax.value_and_grad(lambda x, w=want: jnp.mean(w(x)))(x))
                for cid, f, want in cases}

    for cid, ((v, g), (wv, wg)) in all_cases(x).items():
        assert_close(v, wv, 1e-12, f"{cid} value")
        assert_close(g, wg, 1e-10, f"{cid} gradient")


def test_values_and_gradients_equal_pytorch():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    x, t = normal(40, (5, 4), 2.0), normal(41, (5, 4))
    y, lt = labels(42, (5,), 4), _lsm(normal(43, (5, 4)))
    tx = torch.tensor(np.asarray(x), requires_grad=True)
    tt = torch.tensor(np.asarray(t), requires_grad=True)
    ty, tlt = torch.tensor(np.asarray(y), dtype=torch.long), torch.tensor(np.asarray(lt))
    ours = {
        "ce_smooth": jax.value_and_grad(
            lambda x: ops.softmax_cross_entropy(x, y, label_smoothing=0.15)),
        "huber": jax.value_and_grad(lambda x: ops.huber_loss(x, t, 0.8)),
        "kl": jax.value_and_grad(lambda x: ops.kl_divergence(_lsm(x), jnp.exp(lt))),
        "kl_log": jax.value_and_grad(lambda x: ops.kl_divergence_with_log_targets(_lsm(x), lt)),
    }
    theirs = {
        "ce_smooth": lambda: F.cross_entropy(tx, ty, label_smoothing=0.15),
        "huber": lambda: F.huber_loss(tx, tt, delta=0.8),
        "kl": lambda: F.kl_div(F.log_softmax(tx, -1), tlt.exp(), reduction="batchmean"),
        "kl_log": lambda: F.kl_div(F.log_softmax(tx, -1), tlt, reduction="batchmean",
                                   log_target=True),
    }
    got = jax.jit(lambda x: {k: f(x) for k, f in ours.items()})(x)
    for k, f in theirs.items():
        tx.grad = None
        loss = f()
        loss.backward()
        assert_close(got[k][0], loss.detach().numpy(), 1e-12, f"{k} value")
        assert_close(got[k][1], tx.grad.numpy(), 1e-10, f"{k} gradient")


def test_label_smoothing_zero_compiles_the_unsmoothed_program():
    """label_smoothing=0.0 (the default) lowers to the very program of the unsmoothed
    custom_vjp (same text; measured equal to the op before the keyword was added)."""
    x, y, p = normal(50, (3, 4)), labels(51, (3,), 4), probs(52, (3, 4))

    def text(f, t):
        return re.sub(r"module @\S+", "module", jax.jit(jax.value_and_grad(f)).lower(x, t)
                      .as_text())

    for t, private in ((y, _sce_index), (p, _sce_probs)):
        want = text(private, t)
        assert text(ops.softmax_cross_entropy, t) == want
        assert text(lambda a, b: ops.softmax_cross_entropy(a, b, label_smoothing=0.0), t) == want
        assert text(lambda a, b: ops.softmax_cross_entropy(a, b, label_smoothing=0.1), t) != want


def test_label_smoothing_masked_logits_and_out_of_range_labels():
    """Smoothing gives every class a target: a -inf logit makes the loss +inf (as optax
    on smoothed labels) with a finite gradient; an out-of-range label under jit still
    gives NaN and a zero gradient row."""
    x = jnp.array([[0.0, -jnp.inf, 1.0], [2.0, 0.5, 1.0]])
    y = jnp.array([0, 5])
    f = jax.jit(jax.value_and_grad(
        lambda x, y: ops.softmax_cross_entropy(x, y, label_smoothing=0.1)))
    v, g = f(x, y)
    assert np.isnan(float(v)) and np.all(np.asarray(g[1]) == 0)
    v, g = f(x, jnp.array([0, 1]))
    assert float(v) == np.inf and np.all(np.isfinite(np.asarray(g)))
    soft = jax.nn.softmax(jnp.where(jnp.isinf(x), -1e300, x))
    want = (soft - (0.9 * np.eye(3)[[0, 1]] + 0.1 / 3)) / 2
    assert_close(g, want, 1e-12, "softmax - smoothed targets")


def test_generalized_kl_at_zero_targets():
    """A ``t = 0`` term is ``exp(lp)`` and ``dL/dt = -1/n`` there (the ``t log t`` part's
    derivative taken as 0, as kl_divergence's), where optax's autodiff is NaN."""
    optax = pytest.importorskip("optax")
    lp = jnp.array([[0.3, -0.5, -1.0], [-1.0, 0.2, -0.5]])
    t = jnp.array([[0.0, 1.6, 0.4], [0.7, 0.0, 2.0]])
    f = jax.jit(jax.value_and_grad(ops.generalized_kl_divergence, (0, 1)))
    v, (glp, gt) = f(lp, t)
    _, (_, twin_gt) = jax.value_and_grad(ref.generalized_kl_divergence, (0, 1))(lp, t)
    with jax.numpy_dtype_promotion("standard"):
        theirs = jax.grad(lambda t: jnp.mean(optax.losses.generalized_kl_divergence(lp, t)))(t)
    assert np.isnan(float(theirs[0, 0]))
    assert_close(gt, twin_gt, 1e-12, "dL/dt op vs twin")
    np.testing.assert_allclose(np.asarray(gt)[[0, 1], [0, 1]], [-0.5, -0.5], rtol=1e-12)
    kept = np.asarray(t) > 0
    want = np.sum(np.where(kept, np.asarray(t) * (np.log(np.where(kept, t, 1.0)) - lp), 0.0)
                  - np.asarray(t) + np.exp(lp)) / 2
    np.testing.assert_allclose(float(v), want, rtol=1e-12)
    assert_close(glp, (np.exp(lp) - t) / 2, 1e-12, "dL/dlp")


def test_kinks_and_zero_targets():
    """Huber at |x| = delta: gradient +-delta, second derivative 1 (the quadratic piece),
    0 outside, as the twin; KL at t = 0 (also with log p = -inf): term 0, dL/dt = 0 and
    dL/dlp = 0 where optax's value or gradient is NaN; same for lt = -inf."""
    optax = pytest.importorskip("optax")
    d = 0.5
    p = jnp.array([0.5, -0.5, 0.0, 0.7, -3.0, 0.2])
    t = jnp.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.2])

    def derivs(mod):
        f = lambda p: mod.huber_loss(p, t, d) * p.size   # noqa: E731
        return f(p), jax.grad(f)(p), jax.vmap(jax.grad(jax.grad(
            lambda a: mod.huber_loss(a[None], jnp.zeros(1), d))))(p)
    got, twin = jax.jit(lambda: (derivs(ops), derivs(ref)))()
    assert_close(got, twin, 1e-12, "huber op vs twin")
    np.testing.assert_array_equal(got[1], [0.5, -0.5, 0.0, 0.5, -0.5, 0.0])
    np.testing.assert_array_equal(got[2], [1.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    assert float(got[0]) == 2 * 0.125 + 0.5 * (0.7 - 0.25) + 0.5 * (3.0 - 0.25)

    lp = jnp.array([[-jnp.inf, -0.5, -1.0], [-1.0, -2.0, -0.5]])
    q = jnp.array([[0.0, 0.6, 0.4], [0.0, 0.5, 0.5]])
    lq = jnp.log(q)

    def kl(mod):
        return (jax.value_and_grad(mod.kl_divergence, (0, 1))(lp, q),
                jax.value_and_grad(mod.kl_divergence_with_log_targets, (0, 1))(lp, lq))
    got, twin, theirs = jax.jit(lambda: (kl(ops), kl(ref), jax.value_and_grad(
        lambda t: jnp.mean(optax.kl_divergence(lp[1:], t)))(q[1:])))()
    assert_close(got, twin, 1e-12, "kl op vs twin")
    assert np.isnan(float(optax.kl_divergence(lp, q)[0]))       # optax: 0 * inf
    assert np.all(np.isnan(np.asarray(theirs[1])[:, 0]))          # optax: d/dt NaN at t = 0
    (v, (glp, gq)), (vl, (glp2, glq)) = got
    want = float(np.sum(q[:, 1:] * (np.log(q[:, 1:]) - lp[:, 1:])) / 2)
    assert abs(float(v) - want) < 1e-14 and abs(float(vl) - want) < 1e-14
    for a in (glp, gq, glp2, glq):
        assert np.all(np.asarray(a)[:, 0] == 0.0) and np.all(np.isfinite(np.asarray(a)))
    assert_close(gq[:, 1:], (np.log(q[:, 1:]) - lp[:, 1:] + 1) / 2, 1e-12, "dL/dt")
    with pytest.raises(ValueError, match=r"kl_divergence: log_predictions has shape \(\), "
                                         r"expected rank >= 1"):
        ops.kl_divergence(jnp.float64(0.0), jnp.float64(1.0))


def test_a_minus_inf_logit_is_a_ruled_out_class_where_optax_gives_nan():
    """multiclass hinge / perceptron and CTC with a -inf logit off the label equal optax at
    a -1e9 logit (value and gradients; 0 at the -inf logit), where optax's own value at
    -inf is NaN."""
    optax = pytest.importorskip("optax")
    losses = optax.losses
    x = jnp.array([[-jnp.inf, 0.3, 1.0], [0.2, -jnp.inf, -0.5]])
    y = jnp.array([1, 0])
    finite = jnp.where(jnp.isinf(x), -1e9, x)
    for name in ("multiclass_hinge_loss", "multiclass_perceptron_loss"):
        ours = jax.value_and_grad(getattr(ops, name))(x, y)
        theirs = jax.value_and_grad(lambda a: getattr(losses, name)(a, y).mean())(finite)
        assert np.isnan(float(getattr(losses, name)(x, y).mean())), name
        assert_close(ours, theirs, 1e-12, name)
        assert np.all(np.asarray(ours[1])[np.isinf(np.asarray(x))] == 0.0), name
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 4)))
    logits = logits.at[0, 1, 3].set(-jnp.inf).at[1, 2, 2].set(-jnp.inf)
    pad, labels, label_pad = jnp.zeros((2, 5)), jnp.array([[1, 2], [1, 3]]), jnp.zeros((2, 2))
    ours = jax.jit(jax.value_and_grad(ops.ctc_loss))(logits, pad, labels, label_pad)
    with jax.numpy_dtype_promotion("standard"):                  # optax is not strict-clean
        theirs = jax.jit(lambda a: (jax.value_and_grad(lambda b: losses.ctc_loss(
            b, pad, labels, label_pad).mean())(jnp.where(jnp.isinf(a), -1e9, a)),
            losses.ctc_loss(a, pad, labels, label_pad).mean()))(logits)
    theirs, at_inf = theirs
    assert np.isnan(float(at_inf))
    assert_close(ours, theirs, 1e-9, "ctc_loss")
    assert float(ours[1][0, 1, 3]) == 0.0 and float(ours[1][1, 2, 2]) == 0.0


def test_focal_loss_is_stable_for_large_logits():
    """|x| up to 1e3 (float64) and 80 (float32), hard labels: finite values and
    gradients equal to optax's (its autodiff) and the twin's; alpha weights the positives."""
    optax = pytest.importorskip("optax")
    x = jnp.array([1e3, -1e3, 50.0, -50.0, 1e3, -1e3, 0.0, 3.0])
    t = jnp.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0])

    setups = ((jnp.float64, 1.0, 2.0, 1e-12), (jnp.float32, 0.08, 0.5, 1e-5))

    @jax.jit
    def run(x, t):
        res = {}
        for dtype, scale, gamma, _ in setups:
            for key, fn in (("op", ops.sigmoid_focal_loss), ("twin", ref.sigmoid_focal_loss),
                            ("optax", lambda x, t, a, g: jnp.mean(optax.sigmoid_focal_loss(
                                x, t, alpha=a, gamma=g)))):
                res[key, gamma] = jax.value_and_grad(fn)(x.astype(dtype) * scale,
                                                         t.astype(dtype), 0.25, gamma)
        return res

    res = run(x, t)
    for dtype, _, gamma, tol in setups:
        v, g = res["op", gamma]
        assert v.dtype == g.dtype == dtype
        assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))
        for other in ("twin", "optax"):
            assert_close(res[other, gamma], (v, g), tol, f"{other} gamma={gamma}")


def test_jit_vmap_per_example_and_second_order():
    """Per-example gradients by vmap = n x the rows of the batch gradient (each loss is a
    mean of independent rows); hessian-vector products of the custom rules = the twins'."""
    x = normal(60, (4, 3), 2.0)
    soft = uniform(62, (4, 3), 0.1, 0.9)
    targets = normal(64, (4, 3))
    losses = {
        "huber": lambda m, x, i: m.huber_loss(x, targets[i], 0.7),
        "log_cosh": lambda m, x, i: m.log_cosh(x, targets[i]),
        "cosine": lambda m, x, i: m.cosine_distance(x, targets[i], 1e-6),
        "kl": lambda m, x, i: m.kl_divergence(_lsm(x), soft[i] / 2),
        "focal": lambda m, x, i: m.sigmoid_focal_loss(x, soft[i], 0.3, 2.0),
    }
    rows = jnp.arange(4)
    tangent = jnp.cos(x)

    @jax.jit
    def run(x):
        out = {}
        for k, f in losses.items():
            batch = jax.grad(lambda x: f(ops, x, rows))(x)
            per = jax.vmap(jax.grad(lambda xi, i: f(ops, xi[None], i[None])))(x, rows)
            hvp = {m.__name__: jax.jvp(jax.grad(lambda x: f(m, x, rows)), (x,), (tangent,))[1]
                   for m in (ops, ref)}
            out[k] = batch, per, hvp
        return out

    for k, (batch, per, hvp) in run(x).items():
        assert_close(per, 4 * batch, 1e-12, f"{k} per-example")
        assert_close(hvp[ops.__name__], hvp[ref.__name__], 1e-10, f"{k} hvp")
        assert np.any(np.asarray(hvp[ops.__name__]) != 0), k


def test_reference_mode_swaps_every_new_op_and_exports():
    pair = (normal(70, (2, 3)), normal(71, (2, 3)))
    args = {"huber_loss": pair, "log_cosh": pair, "cosine_similarity": pair,
            "cosine_distance": pair,
            "kl_divergence": (_lsm(normal(72, (2, 3))), probs(73, (2, 3))),
            "generalized_kl_divergence": (normal(80, (2, 3)), uniform(81, (2, 3), 0.1, 2.0)),
            "kl_divergence_with_log_targets": (_lsm(normal(74, (2, 3))), _lsm(normal(75, (2, 3)))),
            "sigmoid_focal_loss": (normal(76, (2, 3)), uniform(77, (2, 3), 0.0, 1.0))}
    assert set(NEW) <= set(ops.__all__) and set(args) == set(NEW)
    for name in NEW:
        op = getattr(ops, name)
        assert op.__wrapped__.__name__ == name and "reference_mode" in op.__doc__
        assert "custom_vjp_call" in str(jax.make_jaxpr(op)(*args[name]))
        with ops.reference_mode():
            assert "custom_vjp_call" not in str(jax.make_jaxpr(op)(*args[name]))
    sce = functools.partial(ops.softmax_cross_entropy, label_smoothing=0.1)
    x, y = normal(78, (2, 3)), labels(79, (2,), 3)
    assert "custom_vjp_call" in str(jax.make_jaxpr(sce)(x, y))
    with ops.reference_mode():
        assert "custom_vjp_call" not in str(jax.make_jaxpr(sce)(x, y))


def test_dtypes_promote_like_jax_and_half_precision_stays_finite():
    """float32 predictions with float64 targets: a float64 loss and each gradient in its
    argument's dtype (as the other funcnet losses and optax); bfloat16: finite, bfloat16."""
    a, b = np.asarray(normal(90, (3, 4))), np.asarray(uniform(91, (3, 4), 0.1, 0.9))
    calls = {
        "huber": lambda x, t: ops.huber_loss(x, t, 0.5),
        "log_cosh": ops.log_cosh,
        "cosine": lambda x, t: ops.cosine_distance(x, t, 1e-6),
        "kl": lambda x, t: ops.kl_divergence(jax.nn.log_softmax(x), t),
        "kl_log": lambda x, t: ops.kl_divergence_with_log_targets(jax.nn.log_softmax(x),
                                                                  jnp.log(t)),
        "focal": lambda x, t: ops.sigmoid_focal_loss(x, t, 0.25),
        "sce_smooth": lambda x, t: ops.softmax_cross_entropy(x, t, label_smoothing=0.1),
    }
    pairs = ((jnp.float32, jnp.float64, jnp.float64), (jnp.bfloat16, jnp.bfloat16, jnp.bfloat16))
    out = jax.jit(lambda: {(k, i): jax.value_and_grad(f, (0, 1))(
        jnp.asarray(a, da), jnp.asarray(b, db)) for k, f in calls.items()
        for i, (da, db, _) in enumerate(pairs)})()
    for (k, i), (v, (ga, gb)) in out.items():
        da, db, want = pairs[i]
        assert (v.dtype, ga.dtype, gb.dtype) == (want, da, db), k
        assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(ga, np.float64))), k
        assert np.all(np.isfinite(np.asarray(gb, np.float64))), k


Z23, Z24 = np.zeros((2, 3)), np.zeros((2, 4))
ERRORS = [
    ("sce_smoothing_1", lambda x, y: ops.softmax_cross_entropy(x, y, label_smoothing=1.0),
     (Z23, np.zeros(2, np.int32)), ValueError,
     r"softmax_cross_entropy: label_smoothing must be in \[0, 1\), got 1"),
    ("sce_smoothing_neg", lambda x, y: ops.softmax_cross_entropy(x, y, label_smoothing=-0.1),
     (Z23, np.zeros(2, np.int32)), ValueError, r"label_smoothing must be in \[0, 1\), got -0.1"),
    ("sce_smoothing_nan",
     lambda x, y: ops.softmax_cross_entropy(x, y, label_smoothing=float("nan")),
     (Z23, Z23), ValueError, "softmax_cross_entropy: label_smoothing must be finite, got nan"),
    ("sce_smoothing_str", lambda x, y: ops.softmax_cross_entropy(x, y, label_smoothing="0.1"),
     (Z23, Z23), TypeError, "softmax_cross_entropy: label_smoothing must be a Python float"),
    ("huber_shapes", ops.huber_loss, (Z23, np.zeros((3,))), ValueError,
     r"huber_loss: predictions has shape \(2, 3\) but targets has shape \(3,\); they must "
     r"match \(no broadcasting\)"),
    ("huber_delta_0", lambda p, t: ops.huber_loss(p, t, 0.0), (Z23, Z23), ValueError,
     r"huber_loss: delta must be in \(0, inf\), got 0"),
    ("huber_delta_inf", lambda p, t: ops.huber_loss(p, t, delta=np.inf), (Z23, Z23), ValueError,
     "huber_loss: delta must be finite"),
    ("huber_int", ops.huber_loss, (np.zeros(3, np.int32), np.zeros(3)), TypeError,
     "huber_loss: predictions must have a floating dtype, got int32"),
    ("huber_int_no_targets", ops.huber_loss, (np.zeros(3, np.int32),), TypeError,
     "huber_loss: predictions must have a floating dtype, got int32"),
    ("huber_empty", ops.huber_loss, (np.zeros((0, 3)), np.zeros((0, 3))), ValueError,
     r"huber_loss: predictions has shape \(0, 3\), expected at least one element"),
    ("log_cosh_shapes", ops.log_cosh, (np.zeros((3, 1)), np.zeros((3,))), ValueError,
     r"log_cosh: predictions has shape \(3, 1\) but targets has shape \(3,\)"),
    ("cosine_rank0", ops.cosine_similarity, (np.float64(1.0), np.float64(1.0)), ValueError,
     r"cosine_similarity: predictions has shape \(\), expected rank >= 1"),
    ("cosine_eps", lambda a, b: ops.cosine_distance(a, b, epsilon=-1e-8), (Z23, Z23),
     ValueError, r"cosine_distance: epsilon must be in \[0, inf\), got -1e-08"),
    ("cosine_shapes", ops.cosine_distance, (Z23, Z24), ValueError,
     r"cosine_distance: predictions has shape \(2, 3\) but targets has shape \(2, 4\)"),
    ("kl_shapes", ops.kl_divergence, (Z23, np.zeros((2, 1))), ValueError,
     r"kl_divergence: log_predictions has shape \(2, 3\) but targets has shape \(2, 1\)"),
    ("kl_list", ops.kl_divergence, (Z23, [[0.5, 0.5, 0.0]] * 2), TypeError,
     "kl_divergence: targets must be an array, got list"),
    ("kl_empty", ops.kl_divergence, (np.zeros((2, 0)), np.zeros((2, 0))), ValueError,
     r"kl_divergence: log_predictions has shape \(2, 0\), expected at least one element"),
    ("kl_log_shapes", ops.kl_divergence_with_log_targets, (Z23, Z24), ValueError,
     r"kl_divergence_with_log_targets: log_predictions has shape \(2, 3\) but log_targets "
     r"has shape \(2, 4\)"),
    ("kl_log_int", ops.kl_divergence_with_log_targets, (Z23, np.zeros((2, 3), np.int32)),
     TypeError, "kl_divergence_with_log_targets: log_targets must have a floating dtype"),
    ("kl_axis_range", lambda a, b: ops.kl_divergence(a, b, axis=2), (Z23, Z23), ValueError,
     "kl_divergence: axis 2 is out of range for an input of rank 2"),
    ("kl_axis_twice", lambda a, b: ops.kl_divergence(a, b, axis=(1, -1)), (Z23, Z23),
     ValueError, r"kl_divergence: axis must name distinct axes, got \(1, -1\)"),
    ("cosine_where_shape", lambda a, b: ops.cosine_similarity(a, b, where=np.ones(3, bool)),
     (Z23, Z23), ValueError, r"cosine_similarity: where has shape \(3,\)"),
    ("cosine_where_float", lambda a, b: ops.cosine_distance(a, b, where=np.ones((2, 3))),
     (Z23, Z23), TypeError, "cosine_distance: where must be a bool array, got float64"),
    ("focal_shapes", ops.sigmoid_focal_loss, (Z23, np.zeros((2, 3, 1))), ValueError,
     r"sigmoid_focal_loss: logits has shape \(2, 3\) but labels has shape \(2, 3, 1\)"),
    ("focal_int_labels", ops.sigmoid_focal_loss, (Z23, np.zeros((2, 3), np.int32)), TypeError,
     "sigmoid_focal_loss: labels must have a floating dtype, got int32"),
    ("focal_alpha", lambda x, t: ops.sigmoid_focal_loss(x, t, alpha=1.5), (Z23, Z23),
     ValueError, r"sigmoid_focal_loss: alpha must be in \[0, 1\], got 1.5"),
    ("focal_gamma", lambda x, t: ops.sigmoid_focal_loss(x, t, gamma=-1.0), (Z23, Z23),
     ValueError, r"sigmoid_focal_loss: gamma must be in \[0, inf\), got -1"),
    ("focal_gamma_none", lambda x, t: ops.sigmoid_focal_loss(x, t, None, None), (Z23, Z23),
     TypeError, "sigmoid_focal_loss: gamma must be a number or a scalar array, got NoneType"),
]


@pytest.mark.parametrize("case_id, call, args, exc, match", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_arguments_raise_naming_the_function(case_id, call, args, exc, match):
    assert_raises_everywhere(call, args, exc, match)


def test_jit_takes_loss_hyperparameters_but_refuses_a_traced_axis():
    """label_smoothing and Huber's delta may be jit arguments (sweeps:
    tests/ops/test_label_smoothing_sweep.py, test_regression_poly_sweep.py); the class
    axis chooses the program and refuses a tracer."""
    x, t = jnp.zeros((2, 3)), jnp.zeros((2, 3))
    assert jax.jit(ops.huber_loss)(x, t + 2.0, 1.0) == pytest.approx(
        float(ops.huber_loss(x, t + 2.0, 1.0)), rel=1e-14)
    assert jax.jit(ops.softmax_cross_entropy)(x, t, label_smoothing=0.1) == pytest.approx(
        float(ops.softmax_cross_entropy(x, t, label_smoothing=0.1)), rel=1e-12)
    with pytest.raises(TypeError, match="axis must be an int or a tuple of ints, got .*Tracer"):
        jax.jit(ops.softmax_cross_entropy)(x, t, -1)


def test_fit_trains_a_regression_with_huber_loss():
    """The new losses are ``fit(loss_fn=...)`` losses (a batch mean of (logits, labels)):
    a linear regression with outliers trains, and no accuracy is reported."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = (x @ np.array([[3.0], [-2.0], [1.5]], np.float32) + 1.0).astype(np.float32)
    y[::16] += 20.0                       # outliers: on the linear piece of the loss
    model = nn.serial(nn.Dense(1, dtype=jnp.float32))
    _, params, state = model.init(jax.random.PRNGKey(0), (-1, 3))
    *_, hist = train.fit(model, params, state, optim.adam(0.3), (x, y), 4, batch_size=16,
                         key=0, loss_fn=ops.huber_loss, progress=False)
    assert "accuracy" not in hist           # measured 3.92 -> 1.40 (outliers alone ~1.2)
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]


@pytest.mark.parametrize("name", ["kl_divergence", "kl_divergence_with_log_targets",
                                  "cosine_similarity", "cosine_distance"])
def test_axis_and_where_equal_optax_mean(name):
    """optax's ``axis=`` (an int or a tuple) and ``where=``: values and gradients."""
    optax = pytest.importorskip("optax")
    a, b = normal(70, (3, 4, 2)), normal(71, (3, 4, 2))
    if name.startswith("kl"):
        a = jax.nn.log_softmax(a, axis=1)
        b = jax.nn.log_softmax(b, axis=1) if "log" in name else jax.nn.softmax(b, axis=1)
    for axis in (-1, 1, (0, 2)):
        for where in (None, MASK342):
            kw = dict(axis=axis, where=where)
            ours = jax.value_and_grad(getattr(ops, name), (0, 1))(a, b, **kw)
            theirs = jax.value_and_grad(lambda a, b: getattr(optax.losses, name)(
                a, b, **kw).mean(), (0, 1))(a, b)
            # a cosine row masked out entirely: 0, with a NaN gradient in optax, 0 here
            theirs = jax.tree_util.tree_map(lambda x: jnp.nan_to_num(x, nan=0.0), theirs)
            assert_close(ours, theirs, 1e-12, f"{name} axis={axis} where={where is not None}")



# the losses that funcnet ships under optax's names (docs/formulas.md, "Departures")
OPTAX_NAMED = (
    "softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels",
    "poly_loss_cross_entropy", "sigmoid_binary_cross_entropy", "sigmoid_focal_loss",
    "kl_divergence", "kl_divergence_with_log_targets", "generalized_kl_divergence",
    "cosine_similarity", "cosine_distance", "squared_error", "l2_loss", "huber_loss",
    "log_cosh", "hinge_loss", "perceptron_loss", "multiclass_hinge_loss",
    "multiclass_perceptron_loss", "triplet_margin_loss", "ntxent", "ctc_loss",
    "multiclass_sparsemax_loss", "sparsemax_loss", "dice_loss", "binary_dice_loss",
    "multiclass_generalized_dice_loss", "safe_softmax_cross_entropy", "smooth_labels",
    "ranking_softmax_loss", "make_fenchel_young_loss")


def test_optax_named_losses_take_optax_positional_arguments():
    """``optax.losses.X(a, b, c)`` and ``ops.X(a, b, c)`` bind the same parameters, with
    the same defaults, so a call moves over unchanged (``sigmoid_binary_cross_entropy``'s
    second argument is ``targets`` by the design, optax's ``labels``: positionally the
    same)."""
    import inspect
    optax = pytest.importorskip("optax")

    def positional(f):
        return [p.name for p in inspect.signature(f).parameters.values()
                if p.kind == p.POSITIONAL_OR_KEYWORD]
    for name in OPTAX_NAMED:
        ours, theirs = positional(getattr(ops, name)), positional(getattr(optax.losses, name))
        if name == "sigmoid_binary_cross_entropy":
            theirs = ["logits", "targets"]
        assert ours[:len(theirs)] == theirs, (name, ours, theirs)
        assert getattr(ops, name).__wrapped__.__name__ == name
        mine = inspect.signature(getattr(ops, name)).parameters
        for key, param in inspect.signature(getattr(optax.losses, name)).parameters.items():
            if param.default is not inspect.Parameter.empty:
                assert key in mine and mine[key].default == param.default, (name, key)
