"""Multi-host data-parallel training of the book CNN on the digits (TPU pod slices, or CPU).

Run the SAME command on every host (worker) of a TPU pod slice::

    gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all \\
        --command "cd funcnet && python tpu/pod_train.py --steps 200"

Every process: (1) joins JAX's distributed runtime (:func:`funcnet.parallel.initialize`,
auto-detected on Cloud TPU; pass ``--coordinator-address/--num-processes/--process-id``
elsewhere); (2) builds a mesh over ALL devices of all hosts; (3) initialises the same
params from the same seed; (4) each step, draws the same global batch indices, takes ITS
contiguous block of rows (:func:`funcnet.parallel.process_batch`) and assembles the
global sharded batch (:func:`funcnet.parallel.global_batch`); (5) runs the sharded train
step (``--style jit``: ``jax.jit`` with ``NamedSharding``; ``--style shard_map``:
``jax.shard_map`` with ``lax.pmean``). ``--style fit`` replaces (4)-(5) by
``funcnet.train.fit(..., mesh=mesh)`` for ``--epochs`` epochs over the whole training set
(every process passes the same arrays; ``fit`` checkpoints every epoch from process 0).
Process 0 alone writes the checkpoint (``<checkpoint-dir>/ckpt_000200.npz`` after 200
steps; ``--checkpoint-dir`` defaults to ``pod_checkpoints/<style>``) and
evaluates; every process prints the SHA-256 of its final parameters, identical on all
processes.

On one CPU machine, two processes with two fake devices each (what the tests run)::

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tpu/pod_train.py \\
        --coordinator-address 127.0.0.1:12345 --num-processes 2 --process-id 0 &
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tpu/pod_train.py \\
        --coordinator-address 127.0.0.1:12345 --num-processes 2 --process-id 1
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time

import jax
import numpy as np

from funcnet import checkpoint, data, nn, ops, optim, parallel, train


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--coordinator-address", default=None,
                   help="host:port of process 0 (auto-detected on Cloud TPU)")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--process-id", type=int, default=None)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=256,
                   help="GLOBAL batch size (a multiple of the number of devices)")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--style", choices=("jit", "shard_map", "fit"), default="jit")
    p.add_argument("--epochs", type=int, default=1, help="epochs of --style fit")
    p.add_argument("--checkpoint-dir", default=None,
                   help="default: pod_checkpoints/<style> (fit refuses a directory that "
                        "holds another run's checkpoints, e.g. a jit run's)")
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    args = p.parse_args(argv)
    if args.checkpoint_dir is None:
        args.checkpoint_dir = f"pod_checkpoints/{args.style}"
    return args


def book_cnn() -> nn.Layer:
    """Conv2D(30, 5) -> ReLU -> MaxPool2D(2) -> Flatten -> Dense(100) -> ReLU -> Dense(10)."""
    return nn.serial(nn.Conv2D(30, 5), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(),
                     nn.Dense(100), nn.ReLU(), nn.Dense(10))


def batch_indices(num_examples: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """``(steps, batch_size)`` example indices, reshuffled each epoch; same on every process."""
    rng = np.random.default_rng(seed)
    per_epoch = num_examples // batch_size
    epochs = [rng.permutation(num_examples)[:per_epoch * batch_size]
              for _ in range(-(-steps // per_epoch))]
    return np.concatenate(epochs).reshape(-1, batch_size)[:steps]


def fingerprint(tree) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()


def main(argv=None) -> int:
    args = parse_args(argv)
    parallel.initialize(args.coordinator_address, args.num_processes, args.process_id)
    pi, pc = jax.process_index(), jax.process_count()

    def log(msg: str, all_processes: bool = False) -> None:
        if pi == 0 or all_processes:
            print(f"[process {pi}/{pc}] {msg}", flush=True)

    mesh = parallel.make_mesh()
    log(f"{jax.device_count()} devices ({jax.local_device_count()} local, "
        f"{jax.devices()[0].platform}), style {args.style}")

    x, y = data.load_digits()                       # (1797, 8, 8, 1) float32, (1797,) int32
    x_train, y_train, x_test, y_test = x[:1500], y[:1500], x[1500:], y[1500:]
    model, opt = book_cnn(), optim.adam(args.learning_rate)
    _, params, state = model.init(jax.random.PRNGKey(args.seed), (-1,) + x.shape[1:])
    start = time.perf_counter()
    manager = checkpoint.CheckpointManager(args.checkpoint_dir, keep=None)
    if args.style == "fit":
        def log_epoch(epoch, logs):
            log(f"epoch {epoch}: loss {logs['loss']:.4f} ({time.perf_counter() - start:.1f} s)")
            return False

        params, state, _, _ = train.fit(
            model, params, state, opt, (x_train, y_train), args.epochs,
            batch_size=args.batch_size, key=args.seed, mesh=mesh, checkpoint=manager,
            progress=False, callbacks=[log_epoch], eval_batch_size=args.batch_size)
    else:
        params, state, opt_state = parallel.put_replicated((params, state, opt.init(params)),
                                                           mesh)
        make_step = (parallel.sharded_train_step if args.style == "jit"
                     else parallel.shard_map_train_step)
        step = make_step(model, opt, ops.softmax_cross_entropy, mesh)
        for t, idx in enumerate(batch_indices(len(x_train), args.batch_size, args.steps,
                                              args.seed)):
            xb, yb = parallel.process_batch(x_train[idx], y_train[idx])  # this process's rows
            xg, yg = parallel.global_batch((xb, yb), mesh)              # global batch
            params, state, opt_state, metrics = step(params, state, opt_state, xg, yg)
            if (t + 1) % args.log_every == 0 or t + 1 == args.steps:
                log(f"step {t + 1}: loss {float(parallel.to_host(metrics['loss'])):.4f} "
                    f"({time.perf_counter() - start:.1f} s)")

    host_params, host_state = parallel.to_host((params, state))
    log(f"params sha256 {fingerprint(host_params)}", all_processes=True)
    if pi == 0:
        if args.style != "fit":            # fit checkpointed every epoch itself
            manager.save(args.steps, {"params": host_params, "state": host_state})
        log(f"checkpoint written to {manager.directory}")
        if not args.no_eval:
            logits, _ = jax.jit(model.apply)(host_params, host_state, x_test)
            acc = float(np.mean(np.argmax(np.asarray(logits), -1) == y_test))
            log(f"test accuracy {acc:.3f} on {len(y_test)} held-out digits")
    if pc > 1:
        jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
