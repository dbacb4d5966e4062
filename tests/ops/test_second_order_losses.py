"""Second order (``jax.hessian``, jvp of grad) through the backward rules of the losses whose
forward rules used to call their own ``custom_vjp`` function, which forward mode cannot
enter ("can't apply forward-mode autodiff (jvp) to a custom_vjp function"): equal to the
twin's (``reference_mode``), as every other rule is (docs/reliability.md). And the margin
losses give NaN for a NaN input, as optax's do, where their mean used to hide it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close
from tests.ops._cases import labels, normal

_SIGNS = jnp.asarray([1.0, -1.0, 1.0, 1.0, -1.0, -1.0]).reshape(2, 3)
# name: (the loss of the differentiated arguments, those arguments)
CASES = {
    "cosine_similarity": (lambda a, b: ops.cosine_similarity(a, b),
                          (normal(1, (3, 4)), normal(2, (3, 4)))),
    "cosine_distance": (lambda a, b: ops.cosine_distance(a, b, 1e-3),
                        (normal(3, (3, 4)), normal(4, (3, 4)))),
    "generalized_kl_divergence": (
        lambda lp, t: ops.generalized_kl_divergence(lp, t),
        (normal(5, (2, 3)), jnp.abs(normal(6, (2, 3))))),
    "multiclass_hinge_loss": (lambda s: ops.multiclass_hinge_loss(s, labels(7, (3,), 4)),
                              (normal(8, (3, 4)),)),
    "multiclass_perceptron_loss": (
        lambda s: ops.multiclass_perceptron_loss(s, labels(9, (3,), 4)), (normal(10, (3, 4)),)),
    "triplet_margin_loss": (lambda a, p, n: ops.triplet_margin_loss(a, p, n),
                            (normal(11, (3, 4)), normal(12, (3, 4)), normal(13, (3, 4)))),
    "sparsemax_loss": (lambda x: ops.sparsemax_loss(x, jnp.asarray([[1, 0, 1], [0, 0, 1]])),
                       (normal(14, (2, 3)),)),
    "sinusoidal_embedding": (lambda t: ops.sinusoidal_embedding(t, 6), (normal(15, (2,)),)),
    "hinge_loss": (lambda s: ops.hinge_loss(s, _SIGNS), (normal(16, (2, 3)),)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hessian_through_the_rule_equals_the_twins(name):
    loss, args = CASES[name]

    def scalar(*d):
        return jnp.sum(jnp.sin(loss(*d)))

    def hessians(*d):
        return jax.hessian(scalar, tuple(range(len(d))))(*d)

    ours = jax.jit(hessians)(*args)
    with ops.reference_mode():
        twin = jax.jit(hessians)(*args)
    assert_close(ours, twin, 1e-9, f"{name}: hessian")


@pytest.mark.parametrize("name, loss", [
    ("hinge_loss", lambda x: ops.hinge_loss(x, _SIGNS)),
    ("perceptron_loss", lambda x: ops.perceptron_loss(x, _SIGNS)),
    ("triplet_margin_loss", lambda x: ops.triplet_margin_loss(x, x + 1.0, x - 0.5)),
], ids=["hinge", "perceptron", "triplet"])
def test_a_nan_input_gives_a_nan_loss(name, loss):
    x = normal(17, (2, 3)).at[0, 1].set(jnp.nan)
    for mode in (False, True):
        if mode:
            with ops.reference_mode():
                value = loss(x)
        else:
            value = loss(x)
        assert np.isnan(value), f"{name} (reference_mode={mode}): {value}"
    assert np.isfinite(loss(jnp.nan_to_num(x)))
