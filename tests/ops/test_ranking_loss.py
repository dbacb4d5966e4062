"""ranking_softmax_loss: the rule (softmax_cross_entropy's, with the weights and the
reduction) against its twin and central differences (float64; scores, relevance labels
and weights differentiated), values and gradients equal to optax's, optax's own test
cases (a single list, extreme scores, zero labels, masks, batch dimensions), errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as R
from tests.ops._cases import assert_raises_everywhere, rand

RNG = np.random.default_rng(0)
S = rand((5, 6), 1)
Y = RNG.integers(0, 3, (5, 6)).astype(np.float64)
WT = RNG.random((5, 6))
WHERE = RNG.random((5, 6)) > 0.4
WHERE[2] = False                            # a list without a valid item
CASES = [("plain", {}), ("where", {"where": WHERE}), ("sum", {"reduce_fn": jnp.sum}),
         ("none", {"reduce_fn": None, "where": WHERE})]


@pytest.mark.parametrize("case_id, kw", CASES, ids=[c[0] for c in CASES])
def test_vjp_matches_reference_and_central_differences(case_id, kw):
    check_vjp(lambda s, y, w: ops.ranking_softmax_loss(s, y, weights=w, **kw),
              lambda s, y, w: R.ranking_softmax_loss(s, y, weights=w, **kw), (S, Y, WT),
              seed=2)


@pytest.mark.parametrize("case_id, kw", CASES, ids=[c[0] for c in CASES])
def test_values_and_gradients_equal_optax(case_id, kw):
    def theirs(s, y, w):
        with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
            return jnp.mean(optax.losses.ranking_softmax_loss(s, y, weights=w, **kw))

    want = jax.value_and_grad(theirs, (0, 1, 2))(S, Y, WT)
    got = jax.value_and_grad(lambda s, y, w: ops.ranking_softmax_loss(s, y, weights=w, **kw),
                             (0, 1, 2))(S, Y, WT)
    # optax's weight gradient is NaN at the masked items (0 * log 0 of the -inf logit);
    # here it is 0, as the labels' gradient is in both
    assert np.isfinite(got[1][2]).all()
    assert np.array_equal(np.isnan(want[1][2]), ~WHERE if "where" in kw else
                          np.zeros_like(WHERE))
    want = (want[0], (*want[1][:2], jnp.nan_to_num(want[1][2], nan=0.0)))
    assert_close(got, want, 1e-12, case_id)


def test_optax_cases():
    exp, log = math.exp, math.log
    scores, labels = jnp.asarray([0.0, 3.0, 1.0, 2.0]), jnp.asarray([0.0, 0.0, 1.0, 1.0])
    z = exp(0.0) + exp(3.0) + exp(1.0) + exp(2.0)
    np.testing.assert_allclose(ops.ranking_softmax_loss(scores, labels, reduce_fn=jnp.sum),
                               -(log(exp(2.0) / z) + log(exp(1.0) / z)), rtol=1e-6)
    big = jnp.asarray([0.0, -2.1e26, 3.4e37, 42.0])
    np.testing.assert_allclose(
        ops.ranking_softmax_loss(big, jnp.asarray([0.0, 1.0, 1.0, 0.0]), reduce_fn=jnp.sum),
        -((-2.1e26 - 3.4e37) + (3.4e37 - 3.4e37)), rtol=1e-3)
    zero = jnp.zeros(4)
    assert float(ops.ranking_softmax_loss(scores, zero)) == 0.0
    assert not jnp.isnan(jax.grad(ops.ranking_softmax_loss)(scores, zero)).any()
    where = jnp.asarray([True, True, True, False])
    np.testing.assert_allclose(
        ops.ranking_softmax_loss(scores, jnp.asarray([0.0, 0.0, 2.0, 1.0]), where=where),
        ops.ranking_softmax_loss(scores[:3], jnp.asarray([0.0, 0.0, 2.0])), rtol=1e-12)
    none = jnp.zeros(4, bool)
    assert float(ops.ranking_softmax_loss(scores, labels, where=none)) == 0.0
    assert not jnp.isnan(jax.grad(ops.ranking_softmax_loss)(scores, labels,
                                                           where=none)).any()
    s3, y3, w3 = (jnp.asarray(a) for a in ([2.0, 3.0, 1.0], [0.0, 0.0, 1.0],
                                             [False, True, True]))
    np.testing.assert_allclose(
        ops.ranking_softmax_loss(s3, y3, where=w3),
        ops.ranking_softmax_loss(s3[None, None, None], y3[None, None, None],
                                 where=w3[None, None, None]), rtol=1e-12)
    weighted = ops.ranking_softmax_loss(jnp.asarray([0.0, 3.0, 2.0, 1.0]), labels,
                                        weights=jnp.asarray([1.0, 1.0, 2.0, 1.0]),
                                        reduce_fn=jnp.sum)
    z = exp(0.0) + exp(3.0) + exp(2.0) + exp(1.0)
    np.testing.assert_allclose(weighted, -(2 * log(exp(2.0) / z) + log(exp(1.0) / z)),
                               rtol=1e-6)


def test_integer_labels_are_cast_as_optax_casts_them():
    np.testing.assert_allclose(ops.ranking_softmax_loss(S, Y.astype(np.int32)),
                               ops.ranking_softmax_loss(S, Y), rtol=1e-15)


@pytest.mark.parametrize("call, exc, match", [
    (lambda s, y: ops.ranking_softmax_loss(s, y[:, :3]), ValueError,
     r"ranking_softmax_loss: labels has shape \(5, 3\) but logits has shape \(5, 6\)"),
    (lambda s, y: ops.ranking_softmax_loss(s.astype(jnp.int32), y), TypeError,
     r"ranking_softmax_loss: logits must have a floating dtype"),
    (lambda s, y: ops.ranking_softmax_loss(s, y, where=y), TypeError,
     r"ranking_softmax_loss: where must be a bool array"),
    (lambda s, y: ops.ranking_softmax_loss(s, y, reduce_fn=jnp.max), TypeError,
     r"ranking_softmax_loss: reduce_fn must be jnp.mean, jnp.sum or None"),
    (lambda s, y: ops.ranking_softmax_loss(s, y, weights=y[:1]), ValueError,
     r"ranking_softmax_loss: weights has shape \(1, 6\)"),
])
def test_bad_input_raises_eagerly_and_under_jit(call, exc, match):
    assert_raises_everywhere(call, (jnp.asarray(S), jnp.asarray(Y)), exc, match)
