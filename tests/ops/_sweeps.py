"""Shared checks of an op hyperparameter given as a traced scalar (a ``jax.vmap`` sweep, a
jitted function's argument): the sweep equals the static calls one by one."""
import jax
import jax.numpy as jnp
import numpy as np

from funcnet.gradcheck import assert_close


def assert_sweep_equals_static(loss, x, values, what: str, rtol: float = 1e-13) -> None:
    """``loss(x, h)`` (a scalar loss, ``x`` an array or a pytree of them, ``h`` the
    hyperparameter): ``jax.vmap`` over ``values`` of its value and ``x``-gradient equals
    the calls with each ``float(h)`` (the static path); a jitted call with ``h`` as its
    argument equals the static call too; and the values differ across the sweep (the
    hyperparameter is not ignored)."""
    values = jnp.asarray(values)
    # the sweep compiled as one program (run eagerly under vmap, every primitive of a
    # blocked op compiles on its own); the static calls eager, as a user writes them
    got = jax.jit(jax.vmap(jax.value_and_grad(loss), (None, 0)))(x, values)
    want = [jax.value_and_grad(loss)(x, float(h)) for h in values]
    want = jax.tree_util.tree_map(lambda *w: jnp.stack(w), *want)
    assert_close(got, want, rtol, what)
    assert_close(jax.jit(loss)(x, values[1]), want[0][1], rtol, what + " jit")
    assert not np.allclose(want[0][0], want[0][-1]), what + ": the sweep changes nothing"
