"""make_fenchel_young_loss: the rule ``dtheta = grad max_fun - y``, ``dy = -theta``
against its twin and central differences (float64), against optax's loss (value and
gradient), the identities FY(logsumexp) = softmax cross-entropy and FY(sparsemax's max)
= the multiclass sparsemax loss, extra arguments of max_fun, reference mode, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.special import logsumexp

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as R
from tests.ops._cases import probs, rand

S = rand((5, 7), 0)
Y = np.asarray(probs(1, (5, 7)))


def tempered(s, temperature=1.0):
    return temperature * logsumexp(s / temperature)


def sparsemax_max(s):
    """The max function of sparsemax: <p, s> - ||p||^2 / 2 + 1/2 at p = sparsemax(s)."""
    p = jax.lax.stop_gradient(ops.sparsemax(s))
    return jnp.dot(p, s) - 0.5 * jnp.dot(p, p) + 0.5


@pytest.mark.parametrize("max_fun", [logsumexp, tempered, jnp.max],
                         ids=["logsumexp", "tempered", "max"])
def test_vjp_matches_reference_and_central_differences(max_fun):
    ours, twin = ops.make_fenchel_young_loss(max_fun), R.make_fenchel_young_loss(max_fun)
    check_vjp(ours, twin, (S, Y), seed=2)


def test_equals_optax_and_the_known_losses():
    fy = ops.make_fenchel_young_loss(logsumexp)
    with jax.numpy_dtype_promotion("standard"):
        want = jax.value_and_grad(
            lambda s, y: optax.losses.make_fenchel_young_loss(logsumexp)(s, y).mean(),
            (0, 1))(S, Y)
    assert_close(jax.value_and_grad(fy, (0, 1))(S, Y), want, 1e-12, "optax")
    # logsumexp: softmax cross-entropy, for targets on the simplex
    assert_close(jax.value_and_grad(fy)(S, Y),
                 jax.value_and_grad(ops.softmax_cross_entropy)(S, Y), 1e-12, "CE")
    # sparsemax's max with one-hot targets: the multiclass sparsemax loss, gradient p - e_y
    labels = jnp.asarray([0, 3, 6, 2, 2])
    onehot = jax.nn.one_hot(labels, 7, dtype=jnp.float64)
    sp = ops.make_fenchel_young_loss(sparsemax_max)
    assert_close(jax.value_and_grad(sp)(S, onehot),
                 jax.value_and_grad(ops.multiclass_sparsemax_loss)(S, labels), 1e-12,
                 "sparsemax loss")


def test_extra_arguments_and_batch_axes():
    fy = ops.make_fenchel_young_loss(tempered)
    s3, y3 = S.reshape(5, 1, 7), Y.reshape(5, 1, 7)
    np.testing.assert_allclose(fy(s3, y3, temperature=0.5), fy(S, Y, 0.5), rtol=1e-14)
    np.testing.assert_allclose(fy(S, Y, 1.0), ops.make_fenchel_young_loss(logsumexp)(S, Y),
                               rtol=1e-14)
    g = jax.jit(jax.grad(lambda s, t: fy(s, Y, t)))(S, 0.5)     # a traced extra argument
    assert_close(g, jax.grad(R.make_fenchel_young_loss(tempered))(S, Y, 0.5), 1e-12, "jit")


def test_reference_mode_gives_forward_mode():
    fy = ops.make_fenchel_young_loss(logsumexp)
    direction = jnp.asarray(rand((5, 7), 3))
    with ops.reference_mode():
        _, tangent = jax.jvp(lambda s: fy(s, Y), (jnp.asarray(S),), (direction,))
    np.testing.assert_allclose(tangent, jnp.sum(jax.grad(fy)(S, Y) * direction), rtol=1e-12)


def test_errors():
    with pytest.raises(TypeError, match=r"make_fenchel_young_loss: max_fun must be "
                                        r"callable"):
        ops.make_fenchel_young_loss("logsumexp")
    fy = ops.make_fenchel_young_loss(logsumexp)
    with pytest.raises(ValueError, match=r"fenchel_young_loss: targets has shape \(5, 3\) "
                                         r"but scores has shape \(5, 7\)"):
        fy(S, Y[:, :3])
    with pytest.raises(TypeError, match=r"fenchel_young_loss: scores must have a floating"):
        jax.jit(fy)(jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3)))
