"""Per-example gradients with ``jax.vmap(jax.grad(...))``, and a DP-SGD clipped mean.

For a batch of digits, the gradient of the loss of EACH example with respect to the MLP's
parameters, in one vectorized call (through funcnet's custom backward rules), checked
against a Python loop of ``jax.grad`` on one example at a time. Then the DP-SGD
aggregate (Abadi et al. 2016): clip each example's gradient to norm ``C``, average, add
Gaussian noise of scale ``sigma C / B``.

    python examples/per_example_grads.py            # batch of 256
    python examples/per_example_grads.py --quick    # batch of 16 (CI)

Writes ``per_example_grads.png``: the histogram of per-example gradient norms and the
clip threshold.
"""
import jax
import jax.numpy as jnp
import numpy as np

from funcnet import nn, ops, optim
import _common

MODEL = nn.serial(nn.Dense(32), nn.ReLU(), nn.Dense(10))
STATE = ((), (), ())  # the MLP has no batch-norm state


def example_loss(params, x, y):
    """Loss of ONE example: ``x`` ``(D,)``, ``y`` a scalar label."""
    logits, _ = MODEL.apply(params, STATE, x[None])
    return ops.softmax_cross_entropy(logits, y[None])


per_example_grads = jax.jit(jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0)))


@jax.jit
def clipped_mean(grads, clip, noise_multiplier, key):
    """DP-SGD: mean of the per-example gradients clipped to norm ``clip``, plus noise."""
    norms = jax.vmap(optim.global_norm)(grads)                      # (B,)
    factor = jnp.minimum(1.0, clip / jnp.maximum(norms, 1e-12))
    batch = norms.shape[0]
    leaves, tree = jax.tree_util.tree_flatten(grads)
    keys = jax.random.split(key, len(leaves))
    out = [jnp.mean(g * factor.reshape((-1,) + (1,) * (g.ndim - 1)), axis=0)
           + noise_multiplier * clip / batch * jax.random.normal(k, g.shape[1:], g.dtype)
           for g, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(tree, out), norms


def main():
    p = _common.parser(__doc__)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--clip", type=float, default=1.0)
    args = p.parse_args()
    x_train, _, y_train, _ = _common.digits(flatten=True)
    batch = 16 if args.quick else args.batch
    x, y = x_train[:batch], y_train[:batch]
    k_init, k_noise = _common.keys(args.seed)
    _, params, _ = MODEL.init(k_init, (-1, 64))

    grads = per_example_grads(params, x, y)
    one = jax.jit(jax.grad(example_loss))
    flat = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(grads)]
    for i in range(batch):
        for a, b in zip(jax.tree_util.tree_leaves(one(params, x[i], y[i])), flat):
            np.testing.assert_allclose(b[i], np.asarray(a), rtol=1e-5, atol=1e-6)
    print(f"vmap(grad) equals a loop of grad on all {batch} examples")
    batch_grad = jax.jit(jax.grad(
        lambda p: ops.softmax_cross_entropy(MODEL.apply(p, STATE, x)[0], y)))(params)
    for a, b in zip(jax.tree_util.tree_leaves(batch_grad), flat):
        np.testing.assert_allclose(np.asarray(a), b.mean(axis=0), rtol=1e-4, atol=1e-6)
    print("their mean equals the batch gradient")

    dp_grad, norms = clipped_mean(grads, args.clip, 1.0, k_noise)  # weak floats: any dtype
    norms = np.asarray(norms)
    print(f"per-example gradient norms: min {norms.min():.3f}, median {np.median(norms):.3f}, "
          f"max {norms.max():.3f}; {np.mean(norms > args.clip):.0%} clipped at {args.clip}; "
          f"DP-SGD update norm {float(optim.global_norm(dp_grad)):.4f}")

    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.hist(norms, bins=30)
    ax.axvline(args.clip, color="C3", ls="--", label=f"clip C = {args.clip:g}")
    ax.set(xlabel="per-example gradient norm", ylabel="examples",
           title=f"{batch} digits, MLP at initialization")
    ax.legend()
    _common.savefig(fig, args.out, "per_example_grads.png")
    return norms


if __name__ == "__main__":
    main()
