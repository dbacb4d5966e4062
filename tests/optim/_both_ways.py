"""Shared by the tables that run funcnet's and optax's optimizers side by side (rounds 5
and 6): each library's trajectory over ``STEPS`` steps from ``PARAMS``, then one update of
each from the other's state; and the check that a ``vmap`` over learning rates equals
separate runs."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import funcnet.optim as optim
from tests.optim._contrib_calls import PARAMS, loss

STEPS = 8


def flat(tree):
    """The leaves as one float64 vector (a typed PRNG key by its bits, a complex leaf by
    its real and imaginary parts)."""
    def real(x):
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if jnp.iscomplexobj(x):
            x = jnp.stack([jnp.real(x), jnp.imag(x)])
        return x.astype(jnp.float64)
    return np.asarray(ravel_pytree(jax.tree_util.tree_map(real, tree))[0])


def close(a, b, rtol=1e-12):
    np.testing.assert_allclose(flat(a), flat(b), rtol=rtol, atol=rtol / 10)


value_and_grad = jax.jit(jax.value_and_grad(loss))    # one compile for every run


def steps(opt, state, value, params=PARAMS, n=STEPS):
    for _ in range(n):
        v, g = value_and_grad(params)
        u, state = opt.update(g, state, params, **({"value": v} if value else {}))
        params = optim.apply_updates(params, u)
    return params, state


def both_ways(f, o, value: bool, convert_state: bool = True):
    """``(pf, sf), (po, so), to_optax, to_funcnet``: funcnet's optimizer ``f`` and
    optax's ``o`` each run ``STEPS`` steps (funcnet under the suite's strict promotion,
    optax under standard promotion and rank broadcasting, which it needs), then each
    makes the next update from the other's state. ``convert_state``: funcnet's state goes
    to optax leaf for leaf in optax's classes (optax rebuilds some states in its own
    classes inside a ``lax.cond``), else as it is. ``value``: ``update`` takes ``value=``."""
    pf, sf = steps(f, f.init(PARAMS), value)
    v, g = value_and_grad(pf)
    kw = {"value": v} if value else {}
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        po, so = steps(o, o.init(PARAMS), value)
        given = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(so),
                                             jax.tree_util.tree_leaves(sf)) \
            if convert_state else sf
        to_optax = o.update(g, given, pf, **kw)
    to_funcnet = f.update(g, so, pf, **kw)
    return (pf, sf), (po, so), to_optax, to_funcnet


def assert_sweep_equals_separate_runs(run, makers: dict, lrs, digits: int = 10):
    """``jax.vmap`` of ``run(make, lr)`` over ``lrs`` equals each ``lr`` run alone, for
    every optimizer factory in ``makers``; the swept results really differ."""
    swept = jax.jit(jax.vmap(lambda lr: {n: run(m, lr) for n, m in makers.items()}))(lrs)
    single = jax.jit(lambda lr: {n: run(m, lr) for n, m in makers.items()})
    for i, lr in enumerate(lrs):
        one = single(lr)
        for name in makers:
            for a, b in zip(jax.tree_util.tree_leaves(swept[name]),
                            jax.tree_util.tree_leaves(one[name])):
                np.testing.assert_allclose(a[i], b, rtol=1e-10, atol=1e-12)
    for name in makers:                            # the rates really differ
        assert len({round(float(x), digits) for x in swept[name]["b"][:, 0]}) == 3, name
