"""Call strings of round 5's optimizers, evaluated verbatim in ``funcnet.optim`` and in
optax (``optax`` and ``optax.contrib`` merged), on round 4's parameters and loss
(``_contrib_calls``). Calls holding ``reduce_on_plateau`` or ``polyak`` get ``value=``
the loss at each update (:func:`needs_value`); lookahead's parameters are a pair and
have their own test.
"""
CALLS = [
    # reduce_on_plateau: rtol 0.05 makes a plateau within 8 steps
    "chain(sgd(0.02), reduce_on_plateau(0.5, 1, 0.05, 0.0, 0, 2, 0.1))",
    "chain(adam(0.05), reduce_on_plateau(factor=0.3, patience=2, rtol=0.0, atol=0.5,"
    " cooldown=1))",
    # small wrappers and blocks
    "chain(apply_every(3), sgd(0.05, 0.9))",
    "chain(adam(0.05), apply_every())",
    "chain(freeze({'w': True, 'b': False, 't': False}), adam(0.05))",
    "chain(freeze(False), sgd(0.05))",
    "selective_transform(adam(0.05), freeze_mask={'w': False, 'b': True, 't': False})",
    "selective_transform(sgd(0.05, 0.9), freeze_mask={'w': False, 'b': False, 't': True})",
    "chain(sgd(0.3), keep_params_nonnegative())",
    # optax.contrib's Adam relatives
    "adopt(0.05)",
    "adopt(SCHED, 0.8, 0.99, 1e-4, jnp.float32, nesterov=True,"
    " clip_value_fn=lambda c: 1.0 + c)",
    "adopt(0.05, use_clipping=False)",
    "ademamix(0.05)",
    "ademamix(SCHED, 0.8, 0.99, SCHED, SCHED, 1e-6, 1e-8, None, 0.01,"
    " {'w': True, 'b': False, 't': True})",
    "chain(scale_by_ademamix(), scale(-0.05))",
    "simplified_ademamix(0.05)",
    "simplified_ademamix(SCHED, 0.9, 0.9, SCHED, 1e-6, 0.0, 0.01)",
    "prodigy()",
    "prodigy(SCHED, (0.8, 0.99), 0.9, 1e-6, 1e-3, 2.0, 0.01, True)",
    # Rprop, optimistic methods, Polyak, SM3, Fromage
    "rprop(0.05)",
    "rprop(0.1, 0.3, 1.5, 1e-3, 0.2)",
    "optimistic_gradient_descent(0.05)",
    "optimistic_gradient_descent(SCHED, 0.7, 0.1)",
    "optimistic_adam(0.05)",
    "optimistic_adam(0.05, 0.01, 0.8, 0.99, 1e-6, 1e-8, jnp.float32, nesterov=False)",
    "optimistic_adam_v2(SCHED, alpha=0.5, beta=0.2)",
    "polyak_sgd()",
    "polyak_sgd(0.5, SCHED, 5.0, 1e-3, 'sps+')",
    "sm3(0.1)",
    "chain(scale_by_sm3(0.5, 0.9, 1e-6), scale(-0.1))",
    "fromage(0.05)",
    "fromage(SCHED, 1e-3)",
    # SAM (transparent mode: one call per ascent or outer step)
    "sam(sgd(0.05), chain(normalize(), sgd(0.1)))",
    "sam(adam(0.05), chain(normalize(), adam(0.1)), 3, False)",
]


def needs_value(call: str) -> bool:
    return "reduce_on_plateau" in call or "polyak" in call
