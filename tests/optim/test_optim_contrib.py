"""Round 4's optimizers against optax (``optax`` and ``optax.contrib``): the call strings
of ``_contrib_calls.CALLS`` give optax's trajectory in float64 (1e-12), their states move
between the libraries in both directions, and a vmap over learning rates equals separate
runs. Muon's runs compile as ONE program, the others run eagerly (see ``_runs``).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import funcnet.optim as optim
from tests.optim._contrib_calls import CALLS, PARAMS, STEPS, loss, namespace, steps

optax = pytest.importorskip("optax")
import optax.contrib  # noqa: E402

VMAPPED = {  # name: (factory of a learning rate, learning rates)
    "muon": (lambda lr: optim.muon(lr, weight_decay=0.01), [0.01, 0.05, 0.1]),
    # the traced rate also sets the averaging weights (max_lr ** weight_lr_power)
    "schedule_free_adamw": (lambda lr: optim.schedule_free_adamw(lr, warmup_steps=2),
                            [0.01, 0.05, 0.1]),
}


def _build(lib_ns, call):
    return eval(call, lib_ns)  # noqa: S307 - the table's own strings


def _run(call, scan):
    """funcnet's and optax's trajectories of ``call``, and one update of each library
    from the other's final state."""
    f, o = _build(namespace(optim), call), _build(namespace(optax, optax.contrib), call)
    out = {"funcnet": steps(f, PARAMS, f.init(PARAMS), STEPS, scan)}   # strict promotion
    pf, sf = out["funcnet"]
    with jax.numpy_dtype_promotion("standard"):   # optax is not strict-clean
        out["optax"] = po, so = steps(o, PARAMS, o.init(PARAMS), STEPS, scan)
        out["funcnet->optax"] = o.update(jax.grad(loss)(pf), sf, pf)
    out["optax->funcnet"] = f.update(jax.grad(loss)(pf), so, pf)
    return out


@functools.lru_cache(maxsize=None)
def _runs():
    """Muon's calls and the vmaps in one jitted program (its Newton-Schulz steps are
    many small ops); the others eagerly: XLA's compile time of many small programs
    exceeds their op-by-op run time."""
    runs, errors = {}, {}

    def jitted():
        out = {}
        for call in CALLS:
            if "muon" in call:
                try:     # one failing case must not hide the others
                    out[call] = _run(call, scan=True)
                except Exception as err:  # noqa: BLE001 - re-raised by its test
                    errors[call] = err
        for name, (make, lrs) in VMAPPED.items():
            def one(lr, make=make):
                return steps(make(lr), PARAMS, make(lr).init(PARAMS), STEPS)[0]
            out[f"{name}, vmap"] = jax.vmap(one)(jnp.asarray(lrs))
            out[f"{name}, separate"] = [one(lr) for lr in lrs]
        return out

    runs.update(jax.jit(jitted)())
    for call in CALLS:
        if "muon" not in call:
            try:
                runs[call] = _run(call, scan=False)
            except Exception as err:  # noqa: BLE001 - re-raised by its test
                errors[call] = err
    return runs, errors


def _flat(tree):
    """The leaves as one float64 vector (a typed PRNG key by its bits)."""
    def real(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return x.astype(jnp.float64)
    return np.asarray(ravel_pytree(jax.tree_util.tree_map(real, tree))[0])


@pytest.mark.parametrize("call", CALLS)
def test_call_gives_optax_trajectory_and_state_moves_between_libraries(call):
    """The swap: one more update of each library from the other's final state (the two
    states equal to 1e-12): the updates and the next states agree, leaf by leaf."""
    runs, errors = _runs()
    if call in errors:
        raise errors[call]
    run = runs[call]
    (ours, _), (theirs, _) = run["funcnet"], run["optax"]
    assert not np.allclose(_flat(theirs), _flat(PARAMS))             # it moved
    assert all(x.dtype == jnp.float64 for x in jax.tree_util.tree_leaves(ours))
    rtol = 1e-6 if "warmup_steps=" in call else 1e-12     # optax's float32 schedule
    np.testing.assert_allclose(_flat(ours), _flat(theirs), rtol=rtol, atol=rtol / 10)
    (u1, s1), (u2, s2) = run["funcnet->optax"], run["optax->funcnet"]
    np.testing.assert_allclose(_flat(u1), _flat(u2), rtol=rtol, atol=rtol / 10)
    np.testing.assert_allclose(_flat(s1), _flat(s2), rtol=rtol, atol=rtol / 10)


@pytest.mark.parametrize("name", list(VMAPPED))
def test_vmap_over_learning_rates_equals_separate_runs(name):
    runs, _ = _runs()
    swept = runs[f"{name}, vmap"]
    for i, single in enumerate(runs[f"{name}, separate"]):
        np.testing.assert_allclose(_flat(jax.tree_util.tree_map(lambda x: x[i], swept)),
                                   _flat(single), rtol=1e-10, atol=1e-12)
    firsts = {round(float(x), 8) for x in swept["w"][:, 0, 0]}
    assert len(firsts) == len(VMAPPED[name][1])                      # really different
