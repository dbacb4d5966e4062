"""Call strings of round 6's ports of ``optax.contrib`` (DoG, DoWG, layer-wise DoG,
COCOB, D-Adaptation AdamW, Mechanic, MoMo, MoMo-Adam, MADGRAD, ACProp), evaluated
verbatim in ``funcnet.optim`` and in optax (``optax`` and ``optax.contrib`` merged), on
round 4's parameters and loss (``_contrib_calls``). MoMo's updates get ``value=`` the
loss (:func:`needs_value`).
"""
MASK = "{'w': True, 'b': False, 't': True}"

CALLS = [
    # distance over gradients
    "dog()",
    "dog(0.5, ('distance', 0.1), 1e-6, 0.01)",
    f"dog(SCHED, ('learning_rate', 0.05), 1e-8, SCHED, {MASK})",
    "dowg()",
    f"dowg(0.5, 0.01, 1e-3, 0.1, {MASK})",
    "chain(scale_by_distance_over_gradients(1e-2), scale(-1.0))",
    "scale_by_distance_over_gradients(1e-2, 1e-6, None, -0.5)",
    # coin betting
    "cocob()",
    f"cocob(SCHED, 50.0, 1e-6, 0.01, {MASK})",
    "mechanize(adam(1.0))",
    "mechanize(sgd(SCHED, 0.9), 0.0, 1e-6, 1e-4, 3)",
    "mechanize(chain(clip_by_global_norm(1.0), lion(0.1)), 0.1)",
    # dual averaging
    "dadapt_adamw()",
    "dadapt_adamw(SCHED, (0.8, 0.99), 1e-6, 1e-3, 0.01)",
    "madgrad(0.05)",
    "madgrad(SCHED, 0.5, 0.01, 1e-4)",
    "chain(scale_by_madgrad(0.01, 0.0))",
    # Polyak-type steps (value=)
    "momo()",
    "momo(0.05, 0.5)",
    "momo(SCHED, 0.8, -1.0, 0.01, True)",
    "momo(0.5, 0.9, 0.5, 0.0, True)",
    "momo_adam()",
    "momo_adam(0.1, 0.8, 0.99, 1e-6, -0.5, 0.01, True)",
    "momo_adam(SCHED, weight_decay=0.1)",
    # ACProp
    "acprop(0.05)",
    f"acprop(SCHED, 0.8, 0.99, 1e-8, 1e-10, 0.01, {MASK})",
    "chain(scale_by_acprop(), scale(-0.02))",
]


def rtol(call: str) -> float:
    """MADGRAD's ``sqrt(count + 1)`` is float32 in optax (the sqrt of an int32), float64
    here: 1e-6; every other call 1e-12."""
    return 1e-6 if "madgrad" in call else 1e-12


def needs_value(call: str) -> bool:
    return "momo" in call
