"""Typical optax call strings, evaluated verbatim in ``optax`` and in ``funcnet.optim``.

Each string names only functions that exist in both namespaces; the drop-in test runs
each in both libraries from the same parameters and compares the trajectories. The
problem has two leaves (``a``: 2 values, ``b``: 1) so that masks and labels have a
structure to act on.
"""
import jax
import jax.numpy as jnp

CALLS = [
    # named optimizers, positional and keyword forms
    "sgd(0.1)",
    "sgd(learning_rate=0.1)",
    "sgd(0.05, momentum=0.9)",
    "sgd(0.05, 0.9, True)",
    "sgd(learning_rate=0.05, momentum=0.9, nesterov=True)",
    "sgd(0.05, momentum=0.9, accumulator_dtype=jnp.float32)",
    "adagrad(0.3)",
    "adagrad(0.3, 0.0, 1e-6)",
    "adagrad(learning_rate=0.3, initial_accumulator_value=1.0, eps=1e-5)",
    "rmsprop(1e-2)",
    "rmsprop(1e-2, 0.95, 1e-6, 1.0)",
    "rmsprop(1e-2, centered=True)",
    "rmsprop(1e-2, momentum=0.9, nesterov=True)",
    "rmsprop(1e-2, eps_in_sqrt=False, bias_correction=True)",
    "rmsprop(1e-2, eps=1e-2, centered=True, bias_correction=True, momentum=0.5)",
    "adam(1e-2)",
    "adam(learning_rate=1e-2)",
    "adam(1e-2, 0.8, 0.99, 1e-6, 1e-8)",
    "adam(1e-2, b1=0.95, nesterov=True)",
    "adam(1e-2, mu_dtype=jnp.float32)",
    "adamw(1e-2)",
    "adamw(1e-2, weight_decay=0.1)",
    "adamw(1e-2, 0.9, 0.999, 1e-8, 0.0, None, 0.05)",
    "adamw(1e-2, weight_decay=0.1, mask={'a': True, 'b': False})",
    "adamw(1e-2, weight_decay=0.1, mask=lambda p: {'a': False, 'b': True})",
    "nadam(1e-2)",
    "nadamw(1e-2, weight_decay=0.1)",
    "nadam(1e-2, nesterov=False)",
    "nadamw(1e-2, weight_decay=0.1, nesterov=False)",
    # lion, adamax(w), amsgrad, adabelief, radam, lamb, lars
    "lion(1e-2)",
    "lion(1e-2, 0.8, 0.95, weight_decay=0.1, mask={'a': True, 'b': False})",
    "lion(cosine_decay_schedule(1e-2, 30), mu_dtype=jnp.float32)",
    "adamax(1e-2)",
    "adamax(1e-2, 0.8, 0.99, 1e-3)",
    "adamaxw(1e-2, weight_decay=0.1, mask=lambda p: {'a': False, 'b': True})",
    "amsgrad(1e-2)",
    "amsgrad(1e-2, 0.8, 0.99, 1e-6, 1e-8, jnp.float32, False, False)",
    "amsgrad(1e-2, bias_correction_nu=False)",
    "adabelief(1e-2)",
    "adabelief(1e-2, 0.8, 0.99, 1e-8, 1e-10, nesterov=True)",
    "radam(1e-2)",
    "radam(1e-2, 0.8, 0.99, 1e-6, 1e-8, 6.0, nesterov=True)",
    "radam(warmup_cosine_decay_schedule(0.0, 0.05, 10, 40))",
    "lamb(1e-2)",
    "lamb(1e-2, 0.8, 0.99, 1e-8, 1e-8, weight_decay=0.1, mask={'a': True, 'b': False})",
    "lars(0.5)",
    "lars(0.5, 0.1, {'a': True, 'b': False}, 0.01, 1e-6, lambda p: {'a': False, 'b': True},"
    " 0.5, True)",
    "lars(linear_schedule(0.5, 0.1, 20), weight_decay=linear_schedule(0.1, 0.0, 20))",
    "adafactor(0.05)",
    "adafactor(0.05, momentum=0.9, weight_decay_rate=1e-3,"
    " weight_decay_mask={'a': True, 'b': False})",
    # schedules as learning rates
    "sgd(constant_schedule(0.1))",
    "sgd(linear_schedule(0.1, 0.01, 30))",
    "sgd(linear_schedule(init_value=0.1, end_value=0.0, transition_steps=20, transition_begin=5))",
    "sgd(polynomial_schedule(0.1, 0.01, 2, 30, 10))",
    "sgd(piecewise_constant_schedule(0.1, {10: 0.5, 25: 0.1}))",
    "adam(exponential_decay(0.05, 10, 0.5))",
    "adam(exponential_decay(0.05, 10, 0.5, transition_begin=5, staircase=True, end_value=0.01))",
    "adam(exponential_decay(init_value=0.01, transition_steps=5, decay_rate=1.2, end_value=0.02))",
    "sgd(cosine_decay_schedule(0.1, 30))",
    "sgd(cosine_decay_schedule(0.1, 30, alpha=0.1, exponent=2.0))",
    "adam(warmup_cosine_decay_schedule(0.0, 0.05, 10, 40))",
    "adam(warmup_cosine_decay_schedule(0.0, 0.05, 10, 40, end_value=0.001, exponent=2.0))",
    "adam(warmup_exponential_decay_schedule(0.0, 0.05, 10, 20, 0.5))",
    "sgd(join_schedules([constant_schedule(0.1), linear_schedule(0.1, 0.0, 30)], [20]))",
    "adamw(cosine_decay_schedule(1e-2, 50), weight_decay=cosine_decay_schedule(0.1, 50))",
    "sgd(piecewise_interpolate_schedule('cosine', 0.1, {10: 0.5, 20: 0.2}))",
    "sgd(linear_onecycle_schedule(30, 0.1, pct_start=0.2, pct_final=0.8))",
    "adam(cosine_onecycle_schedule(30, 0.05))",
    "adam(sgdr_schedule([dict(init_value=0.0, peak_value=0.05, warmup_steps=3, decay_steps=10)]"
    " * 3))",
    # chains of blocks
    "chain(clip_by_global_norm(1.0), adam(1e-2))",
    "chain(clip(0.5), sgd(0.1))",
    "chain(add_decayed_weights(1e-3), sgd(0.1, 0.9))",
    "chain(add_decayed_weights(linear_schedule(0.1, 0.0, 20)), sgd(0.1))",
    "chain(scale_by_adam(), scale(-0.01))",
    "chain(scale_by_adam(b1=0.5, nesterov=True), scale_by_learning_rate(0.01))",
    "chain(scale_by_rms(), scale_by_learning_rate(0.01))",
    "chain(scale_by_stddev(), scale(-0.01))",
    "chain(scale_by_rss(), scale(-0.1))",
    "chain(trace(0.9, nesterov=True), scale(-0.05))",
    "chain(ema(0.9), scale(-0.1))",
    "chain(ema(0.9, debias=False), scale(-0.1))",
    "chain(scale_by_schedule(linear_schedule(1.0, 0.1, 20)), scale(-0.1))",
    "chain(identity(), sgd(0.1))",
    "chain(scale_by_lion(mode='smooth', smooth_beta=2.0), scale(-0.01))",
    "chain(scale_by_lion(b1=0.5, mode='refined'), scale(-0.01))",
    "chain(scale_by_adamax(b1=0.5), scale_by_learning_rate(0.01))",
    "chain(scale_by_amsgrad(), scale(-0.01))",
    "chain(scale_by_belief(nesterov=True), scale(-0.01))",
    "chain(scale_by_radam(threshold=4.0), scale(-0.01))",
    "chain(scale_by_trust_ratio(0.1, 0.5, 1e-3), sgd(0.1))",
    "chain(scale_by_learning_rate(cosine_decay_schedule(0.1, 30), flip_sign=True))",
    # wrappers
    "masked(adam(1e-2), {'a': True, 'b': False})",
    "multi_transform({'x': adam(1e-2), 'y': sgd(0.1)}, {'a': 'x', 'b': 'y'})",
    "multi_transform({'x': adam(1e-2), 'y': set_to_zero()}, lambda p: {'a': 'x', 'b': 'y'})",
    "apply_if_finite(adam(1e-2), 3)",
    "inject_hyperparams(adam)(learning_rate=1e-2)",
    "inject_hyperparams(sgd)(learning_rate=cosine_decay_schedule(0.1, 30), momentum=0.9)",
    "inject_hyperparams(adamw)(learning_rate=1e-2, weight_decay=0.01)",
    "MultiSteps(adam(1e-2), 3)",
    "MultiSteps(sgd(0.1), every_k_schedule=2, use_grad_mean=False)",
]

A = jnp.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])  # SPD
PARAMS = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
STEPS = 30


def loss(p):
    w = jnp.concatenate([p["a"], p["b"]])
    return 0.5 * w @ A.astype(w.dtype) @ w - jnp.sum(w)


def run(opt, params, steps=STEPS):
    """``steps`` updates under ``lax.scan``; returns the final parameters."""

    def body(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(loss)(p), s, p)
        return (jax.tree_util.tree_map(lambda a, b: (a + b).astype(a.dtype), p, u), s), None

    return jax.lax.scan(body, (params, opt.init(params)), None, length=steps)[0][0]
