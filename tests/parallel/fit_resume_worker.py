"""One process of a two-process fit(mesh=...) run with a checkpoint directory (used by
test_multihost.py): ``python fit_resume_worker.py PROCESS_ID PORT CHECKPOINT_DIR EPOCHS
[fsdp]``.

Prints ``params sha256 <hex>`` of the final params (the same on every process after a
synchronised run). ``fsdp``: the first weight is split over the 4 devices of both
processes; fit with the checkpoint directory must refuse it (printed), then fit trains
without one.
"""
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402

from funcnet import parallel  # noqa: E402


def main(pid: int, port: str, directory: str, epochs: int, fsdp: bool) -> None:
    parallel.initialize(f"127.0.0.1:{port}", 2, pid)
    import numpy as np
    from funcnet import checkpoint, data, nn, optim, train
    x, y = data.load_digits(flatten=True)
    model = nn.serial(nn.Dense(16), nn.ReLU(), nn.Dense(10))
    _, params, state = model.init(jax.random.PRNGKey(0), (-1, 64))
    mesh = parallel.make_mesh()
    manager = checkpoint.CheckpointManager(directory)
    if fsdp:
        from jax.experimental import multihost_utils
        from jax.sharding import NamedSharding, PartitionSpec
        w = params[0]["w"]
        params[0]["w"] = jax.make_array_from_callback(
            w.shape, NamedSharding(mesh, PartitionSpec("data")), lambda i: np.asarray(w)[i])
        try:
            train.fit(model, params, state, optim.adam(1e-2), (x[:64], y[:64]), epochs,
                      batch_size=16, key=0, mesh=mesh, checkpoint=manager)
        except ValueError as e:
            print(f"refused: {e}", flush=True)
        manager = None
    out = train.fit(model, params, state, optim.adam(1e-2), (x[:64], y[:64]), epochs,
                    batch_size=16, key=0, mesh=mesh, checkpoint=manager)
    if fsdp:
        print(f"kept {out[0][0]['w'].sharding.spec}", flush=True)
        out = (multihost_utils.process_allgather(out[0], tiled=True),)
    leaves = jax.tree_util.tree_leaves(parallel.to_host(out[0]))
    digest = hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in leaves)).hexdigest()
    print(f"params sha256 {digest}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:] == ["fsdp"])
