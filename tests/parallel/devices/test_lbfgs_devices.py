"""L-BFGS on 8 devices equals L-BFGS on one: the step passes ``grad=`` (averaged) and
``value_fn=`` (the batch loss as a function of the params, averaged over the devices) to
the optimizer, so the line search's trial losses, and with them its accepted step, are
the global batch's on every device. A device-local ``value_fn`` would make each replica
accept its own step and the "replicated" params would silently differ."""
import jax
import numpy as np

from funcnet import nn, optim, parallel, train
from funcnet.gradcheck import assert_close
from tests.parallel._helpers import GLOBAL_BATCH, digits, init

MODEL = nn.serial(nn.Flatten(), nn.Dense(10))
OPT = optim.lbfgs()
STEPS = 3


def test_lbfgs_under_pmap_and_shard_map_equals_one_device():
    params, state = init(MODEL)
    batches = [digits(GLOBAL_BATCH, offset=GLOBAL_BATCH * t) for t in range(STEPS)]
    step = jax.jit(train.train_step(MODEL, OPT))
    ref, losses = (params, state, OPT.init(params)), []
    for x, y in batches:
        *ref, m = step(*ref, x, y)
        losses.append(float(m["loss"]))
    assert losses[-1] < losses[0]

    mesh = parallel.make_mesh()
    mapped = {
        "pmap": (parallel.pmap_train_step(MODEL, OPT), parallel.replicate,
                 parallel.shard_batch, parallel.unreplicate),
        "shard_map": (parallel.shard_map_train_step(MODEL, OPT, mesh=mesh),
                      lambda t: parallel.put_replicated(t, mesh),
                      lambda b: parallel.global_batch(b, mesh), parallel.to_host),
    }
    for name, (mapped_step, put, shard, get) in mapped.items():
        carry = put((params, state, OPT.init(params)))
        for t, (x, y) in enumerate(batches):
            *carry, m = mapped_step(*carry, *shard((x, y)))
            np.testing.assert_allclose(np.asarray(m["loss"]).reshape(-1)[0], losses[t],
                                       rtol=1e-10, err_msg=name)
        if name == "pmap":                       # the replicas stay bitwise equal
            for leaf in jax.tree_util.tree_leaves(carry):
                np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0], leaf.shape))
        assert_close(get(tuple(carry)), tuple(ref), 1e-10, name)
