"""``microbatching.micro_vmap`` and ``micro_grad``: optax's docstring examples, optax's
results (float64, to 1e-12) over accumulators, microbatch sizes, ``in_axes`` with
unmapped arguments, keyword arguments, ``has_aux`` and ``keep_batch_dim``; per-example
clipping through ``transform_fn`` equals ``per_example_global_norm_clip``."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim
from funcnet.optim import microbatching as M
from tests.optim._both_ways import close

optax = pytest.importorskip("optax")
OM = optax.microbatching
ACC = ["CONCAT", "SUM", "MEAN"]

_rng = np.random.default_rng(3)
X = jnp.asarray(_rng.standard_normal((8, 3)))
Y = jnp.asarray(_rng.standard_normal((8,)))
W = jnp.asarray(_rng.standard_normal((3,)))


def test_optax_docstring_examples():
    np.testing.assert_array_equal(M.micro_vmap(lambda x: x ** 2)(jnp.arange(8)),
                                  jnp.arange(8) ** 2)

    def mean_squared_loss(params, features, targets):
        return 0.5 * jnp.mean((features @ params - targets) ** 2)

    (grads, squared), aux = M.micro_grad(
        mean_squared_loss, argnums=0, batch_argnums=(1, 2),
        accumulator=M.AccumulationType.MEAN, transform_fn=lambda x: (x, x ** 2),
        metrics_fn=jnp.linalg.norm)(jnp.zeros(1), jnp.ones((4, 1)), jnp.array([0., 2, 4, 6]))
    np.testing.assert_allclose(grads, [-3.0])
    np.testing.assert_allclose(squared, [14.0])
    np.testing.assert_allclose(aux.values, [0.0, 2.0, 8.0, 18.0])
    np.testing.assert_allclose(aux.metrics, [0.0, 2.0, 4.0, 6.0])
    assert type(aux).__name__ == "Aux"


@pytest.mark.parametrize("acc", ACC)
@pytest.mark.parametrize("size", [None, 2, 8])
def test_micro_vmap_equals_optax(acc, size):
    def f(w, x, scale, *, shift):
        return {"y": jnp.tanh(x @ w) * scale + shift, "n": jnp.sum(x ** 2)}

    kw = dict(microbatch_size=size)
    ours = M.micro_vmap(f, (None, 0, None), microbatch_size=size,
                        accumulator=getattr(M.AccumulationType, acc))(W, X, 2.0, shift=Y)
    with jax.numpy_dtype_promotion("standard"):
        theirs = OM.micro_vmap(f, (None, 0, None), **kw,
                               accumulator=getattr(OM.AccumulationType, acc))(W, X, 2.0, shift=Y)
    close(ours, theirs)
    if acc == "CONCAT":
        close(ours, jax.vmap(f, (None, 0, None))(W, X, 2.0, shift=Y))


def _loss(w, x, y):
    """A batch loss (mean over its examples); micro_grad gives it batches of one."""
    return jnp.mean((jnp.tanh(x @ w) - y) ** 2)


def _loss_aux(w, x, y):
    return _loss(w, x, y), {"pred": jnp.tanh(x @ w)}


@pytest.mark.parametrize("acc", ["SUM", "MEAN"])
@pytest.mark.parametrize("size", [None, 4])
@pytest.mark.parametrize("has_aux", [False, True], ids=["plain", "aux"])
def test_micro_grad_equals_optax(acc, size, has_aux):
    def make(m):
        return dict(has_aux=has_aux, batch_argnums=(1, 2), microbatch_size=size,
                    accumulator=getattr(m.AccumulationType, acc),
                    transform_fn=lambda g: (g, g ** 2), metrics_fn=jnp.linalg.norm)
    fun = _loss_aux if has_aux else _loss
    ours = M.micro_grad(fun, **make(M))(W, X, Y)
    with jax.numpy_dtype_promotion("standard"):
        theirs = OM.micro_grad(fun, **make(OM))(W, X, Y)
    close(ours, theirs)
    per_example = jax.vmap(jax.grad(_loss), (None, 0, 0))(W, X[:, None], Y[:, None])
    want = per_example.sum(0) if acc == "SUM" else per_example.mean(0)
    close(ours[0][0], want)


def test_micro_grad_without_batch_dim_equals_optax():
    def single(w, x, y):                        # one example, no batch axis
        return (jnp.tanh(x @ w) - y) ** 2
    ours = M.micro_grad(single, batch_argnums=(1, 2), keep_batch_dim=False,
                        microbatch_size=2)(W, X, Y)
    with jax.numpy_dtype_promotion("standard"):
        theirs = OM.micro_grad(single, batch_argnums=(1, 2), keep_batch_dim=False,
                               microbatch_size=2)(W, X, Y)
    close(ours, theirs)


def test_per_example_clipping_in_transform_fn_is_per_example_global_norm_clip():
    """DP-SGD's clipped sum, one microbatch at a time."""
    def clip(g):
        return g * jnp.minimum(1.0, 0.3 / jnp.linalg.norm(g))
    summed, _ = M.micro_grad(_loss, batch_argnums=(1, 2), microbatch_size=2,
                             transform_fn=clip)(W, X, Y)
    per_example = jax.vmap(jax.grad(_loss), (None, 0, 0))(W, X[:, None], Y[:, None])
    want, _ = optim.per_example_global_norm_clip(per_example, 0.3)
    close(summed, want)


def test_bad_arguments_raise():
    with pytest.raises(NotImplementedError, match="micro_vmap: out_axes must be 0"):
        M.micro_vmap(jnp.sin, out_axes=1)
    with pytest.raises(TypeError, match="micro_grad: fun"):
        M.micro_grad(3)
    with pytest.raises(ValueError, match="microbatch_size 3 does not divide the batch size 8"):
        M.micro_vmap(jnp.sin, microbatch_size=3)(X)
