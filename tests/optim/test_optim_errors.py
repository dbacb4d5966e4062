"""Bad input, as a table, eager and under jit: hyperparameters (NaN, inf, negative, a
schedule where a number is needed), integer parameters, states of another optimizer,
mismatched trees. Traced hyperparameters are not validated (vmapped sweeps keep working).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.optim as optim

NAN, INF = float("nan"), float("inf")
SCHED = optim.constant_schedule(0.1)
NEG = jnp.asarray(-0.5)  # concrete (built inside jit it would be traced, hence unchecked)

BAD_VALUES = [  # (constructor, message): ValueError at construction
    (lambda: optim.sgd(-0.1),
     r"sgd: scale_by_learning_rate: learning_rate must be in \[0, inf\), got -0\.1"),
    (lambda: optim.adam(INF),
     r"adam: scale_by_learning_rate: learning_rate must be finite, got inf"),
    (lambda: optim.adam(np.float64(NAN)),
     r"adam: scale_by_learning_rate: learning_rate must be finite, got nan"),
    (lambda: optim.adam(NEG),
     r"adam: scale_by_learning_rate: learning_rate must be in \[0, inf\), got -0\.5"),
    (lambda: optim.adam(1e-3, b1=1.2), r"adam: scale_by_adam: b1 must be in \[0, 1\), got 1\.2"),
    (lambda: optim.adam(1e-3, b2=1.0), r"adam: scale_by_adam: b2 must be in \[0, 1\), got 1"),
    (lambda: optim.adam(1e-3, b1=NAN), r"adam: scale_by_adam: b1 must be finite, got nan"),
    (lambda: optim.adam(1e-3, eps=-1e-8),
     r"adam: scale_by_adam: eps must be in \[0, inf\), got -1e-08"),
    (lambda: optim.adam(1e-3, eps=INF), r"adam: scale_by_adam: eps must be finite, got inf"),
    (lambda: optim.adam(1e-3, eps_root=-1.0),
     r"adam: scale_by_adam: eps_root must be in \[0, inf\)"),
    (lambda: optim.adam(1e-3, form="modified"),
     r"adam: scale_by_adam: form must be one of 'standard', 'folded'"),
    (lambda: optim.adam(1e-3, nesterov=True, form="folded"),
     r"adam: scale_by_adam: form='folded' is defined for nesterov=False only"),
    (lambda: optim.adamw(1e-3, weight_decay=-0.1),
     r"adamw: add_decayed_weights: weight_decay must be in \[0, inf\)"),
    (lambda: optim.adamw(1e-3, weight_decay=NAN),
     r"adamw: add_decayed_weights: weight_decay must be finite"),
    (lambda: optim.adamw(1e-3, b2=2.0), r"adamw: scale_by_adam: b2 must be in \[0, 1\), got 2"),
    (lambda: optim.sgd(0.1, momentum=1.5), r"sgd: trace: decay must be in \[0, 1\], got 1\.5"),
    (lambda: optim.momentum(0.1, beta=-0.5),
     r"momentum: trace: decay must be in \[0, 1\], got -0\.5"),
    (lambda: optim.momentum(0.1, form="heavy"), r"momentum: form must be one of 'classic', 'ema'"),
    (lambda: optim.nesterov(0.1, beta=NAN), r"nesterov: trace: decay must be finite, got nan"),
    (lambda: optim.rmsprop(0.1, decay=1.5),
     r"rmsprop: scale_by_rms: decay must be in \[0, 1\), got 1\.5"),
    (lambda: optim.rmsprop(0.1, centered=True, eps=-1.0),
     r"rmsprop: scale_by_stddev: eps must be in \[0, inf\)"),
    (lambda: optim.rmsprop(0.1, initial_scale=INF),
     r"rmsprop: scale_by_rms: initial_scale must be finite"),
    (lambda: optim.adagrad(0.1, eps=-1.0),
     r"adagrad: scale_by_rss: eps must be in \[0, inf\), got -1"),
    (lambda: optim.ema(1.0), r"ema: decay must be in \[0, 1\), got 1"),
    (lambda: optim.lion(-1e-3),
     r"lion: scale_by_learning_rate: learning_rate must be in \[0, inf\), got -0\.001"),
    (lambda: optim.lion(1e-3, b1=1.0), r"lion: scale_by_lion: b1 must be in \[0, 1\), got 1"),
    (lambda: optim.lion(1e-3, b2=NAN), r"lion: scale_by_lion: b2 must be finite, got nan"),
    (lambda: optim.lion(1e-3, weight_decay=-0.1),
     r"lion: add_decayed_weights: weight_decay must be in \[0, inf\)"),
    (lambda: optim.scale_by_lion(mode="soft"),
     r"scale_by_lion: mode must be one of 'hard', 'smooth', 'refined', got 'soft'"),
    (lambda: optim.scale_by_lion(mode="smooth", smooth_beta=0.0),
     r"scale_by_lion: smooth_beta must be in \(0, inf\), got 0"),
    (lambda: optim.adamax(1e-3, b2=1.5),
     r"adamax: scale_by_adamax: b2 must be in \[0, 1\), got 1\.5"),
    (lambda: optim.adamaxw(1e-3, eps=-1.0),
     r"adamaxw: scale_by_adamax: eps must be in \[0, inf\), got -1"),
    (lambda: optim.amsgrad(1e-3, eps_root=INF),
     r"amsgrad: scale_by_amsgrad: eps_root must be finite, got inf"),
    (lambda: optim.adabelief(1e-3, b1=-0.1),
     r"adabelief: scale_by_belief: b1 must be in \[0, 1\), got -0\.1"),
    (lambda: optim.radam(1e-3, threshold=3.0),
     r"radam: scale_by_radam: threshold must be in \[4, inf\), got 3"),
    (lambda: optim.radam(NEG), r"radam: scale_by_learning_rate: learning_rate must be in"),
    (lambda: optim.lamb(1e-3, b2=1.0), r"lamb: scale_by_adam: b2 must be in \[0, 1\), got 1"),
    (lambda: optim.lars(1.0, trust_coefficient=-1e-3),
     r"lars: scale_by_trust_ratio: trust_coefficient must be in \[0, inf\)"),
    (lambda: optim.lars(1.0, momentum=1.1), r"lars: trace: decay must be in \[0, 1\], got 1\.1"),
    (lambda: optim.adafactor(-0.1),
     r"adafactor: scale_by_learning_rate: learning_rate must be in \[0, inf\)"),
    (lambda: optim.adafactor(decay_rate=-0.8),
     r"adafactor: scale_by_factored_rms: decay_rate must be in \[0, inf\), got -0\.8"),
    (lambda: optim.adafactor(min_dim_size_to_factor=-1),
     r"adafactor: scale_by_factored_rms: min_dim_size_to_factor must be >= 0, got -1"),
    (lambda: optim.adafactor(eps=NAN), r"adafactor: scale_by_factored_rms: epsilon must be finite"),
    (lambda: optim.adafactor(clipping_threshold=0.0),
     r"adafactor: clip_by_block_rms: threshold must be in \(0, inf\), got 0"),
    (lambda: optim.adafactor(momentum=1.0), r"adafactor: ema: decay must be in \[0, 1\), got 1"),
    (lambda: optim.adafactor(weight_decay_rate=-1e-3),
     r"adafactor: add_decayed_weights: weight_decay must be in \[0, inf\)"),
    (lambda: optim.muon(-0.1),
     r"muon: scale_by_learning_rate: learning_rate must be in \[0, inf\), got -0\.1"),
    (lambda: optim.muon(0.1, beta=1.0), r"muon: scale_by_muon: beta must be in \[0, 1\), got 1"),
    (lambda: optim.muon(0.1, ns_coeffs="muon"),
     r"muon: ns_coeffs must be one of 'standard', 'dion', got 'muon'"),
    (lambda: optim.muon(0.1, ns_coeffs=(1.0, 2.0)),
     r"muon: scale_by_muon: ns_coeffs must have shape \(3,\) or \(n, 3\), got \(2,\)"),
    (lambda: optim.muon(0.1, ns_coeffs="dion", ns_steps=3),
     r"muon: scale_by_muon: ns_coeffs has 5 rows, more than ns_steps=3"),
    (lambda: optim.muon(0.1, ns_steps=-1), r"muon: scale_by_muon: ns_steps must be >= 0"),
    (lambda: optim.muon(0.1, preconditioning="polar"),
     r"muon: scale_by_muon: preconditioning must be one of 'frobenius', 'spectral', 'aol', "
     r"'schatten', got 'polar'"),
    (lambda: optim.muon(0.1, eps=-1.0), r"muon: scale_by_muon: eps must be in \[0, inf\)"),
    (lambda: optim.muon(0.1, weight_decay=-1.0),
     r"muon: add_decayed_weights: weight_decay must be in \[0, inf\)"),
    (lambda: optim.muon(0.1, adam_b2=1.0), r"muon: adamw: scale_by_adam: b2 must be in \[0, 1\)"),
    (lambda: optim.muon(0.1, adam_learning_rate=NEG),
     r"muon: adamw: scale_by_learning_rate: learning_rate must be in \[0, inf\)"),
    (lambda: optim.muon(0.1, consistent_rms=NAN), r"muon: consistent_rms must be finite"),
    (lambda: optim.schedule_free(optim.sgd(0.1), 0.1, b1=0.0),
     r"schedule_free: b1 must be in \(0, 1\], got 0"),
    (lambda: optim.schedule_free_adamw(b1=1.5),
     r"schedule_free_adamw: schedule_free: b1 must be in \(0, 1\], got 1\.5"),
    (lambda: optim.schedule_free_sgd(weight_lr_power=-1.0),
     r"schedule_free_sgd: schedule_free: weight_lr_power must be in \[0, inf\)"),
    (lambda: optim.schedule_free_sgd(-1.0),
     r"schedule_free_sgd: sgd: scale_by_learning_rate: learning_rate must be in \[0, inf\)"),
    (lambda: optim.schedule_free_adamw(b2=1.0),
     r"schedule_free_adamw: scale_by_rms: decay must be in \[0, 1\), got 1"),
    (lambda: optim.schedule_free_sgd(weight_decay=NAN),
     r"schedule_free_sgd: add_decayed_weights: weight_decay must be finite"),
    (lambda: optim.adan(0.1, b3=1.0), r"adan: scale_by_adan: b3 must be in \[0, 1\), got 1"),
    (lambda: optim.adan(0.1, weight_decay=-1.0),
     r"adan: add_decayed_weights: weight_decay must be in \[0, inf\)"),
    (lambda: optim.yogi(0.1, eps=-1.0), r"yogi: scale_by_yogi: eps must be in \[0, inf\)"),
    (lambda: optim.scale_by_yogi(initial_accumulator_value=NAN),
     r"scale_by_yogi: initial_accumulator_value must be finite"),
    (lambda: optim.adadelta(rho=1.0), r"adadelta: scale_by_adadelta: rho must be in \[0, 1\)"),
    (lambda: optim.adadelta(-1.0),
     r"adadelta: scale_by_learning_rate: learning_rate must be in \[0, inf\)"),
    (lambda: optim.novograd(0.1, b2=1.5),
     r"novograd: scale_by_novograd: b2 must be in \[0, 1\), got 1\.5"),
    (lambda: optim.novograd(0.1, weight_decay=-0.1),
     r"novograd: scale_by_novograd: weight_decay must be in \[0, inf\)"),
    (lambda: optim.adaptive_grad_clip(-1.0),
     r"adaptive_grad_clip: clipping must be in \[0, inf\), got -1"),
    (lambda: optim.noisy_sgd(0.1, eta=-0.01, key=0),
     r"noisy_sgd: add_noise: eta must be in \[0, inf\)"),
    (lambda: optim.signum(0.1, beta=1.0), r"signum: ema: decay must be in \[0, 1\), got 1"),
    (lambda: optim.sign_sgd(NEG),
     r"sign_sgd: scale_by_learning_rate: learning_rate must be in \[0, inf\)"),
    (lambda: optim.scale_by_param_block_rms(-1.0),
     r"scale_by_param_block_rms: min_scale must be in \[0, inf\), got -1"),
    (lambda: optim.scale_by_trust_ratio(min_norm=NAN),
     r"scale_by_trust_ratio: min_norm must be finite, got nan"),
    (lambda: optim.scale(NAN), r"scale: step_size must be finite, got nan"),
    (lambda: optim.clip(-1.0), r"clip: max_delta must be in \[0, inf\), got -1"),
    (lambda: optim.clip_by_global_norm(0.0),
     r"clip_by_global_norm: max_norm must be in \(0, inf\), got 0"),
    (lambda: optim.clip_by_global_norm(INF),
     r"clip_by_global_norm: max_norm must be finite, got inf"),
    (lambda: optim.accumulate(optim.sgd(0.1), 0), r"accumulate: every_k must be >= 1, got 0"),
    (lambda: optim.apply_if_finite(optim.sgd(0.1), -1),
     r"apply_if_finite: max_consecutive_errors must be >= 0"),
    (lambda: optim.adam(jnp.ones(2)),
     r"adam: scale_by_learning_rate: learning_rate must be a scalar, got shape \(2,\)"),
    (lambda: optim.inject_hyperparams(optim.adam, static_args="lr"),
     r"inject_hyperparams: static_args \['lr'\]"),
    (lambda: optim.incremental_update(jnp.ones(1), jnp.ones(1), 1.5),
     r"incremental_update: step_size must be in \[0, 1\]"),
    # round 5
    (lambda: optim.reduce_on_plateau(factor=1.0),
     r"reduce_on_plateau: factor must be in \(0, 1\), got 1"),
    (lambda: optim.reduce_on_plateau(rtol=0.0, atol=0.0),
     r"reduce_on_plateau: rtol and atol are both 0: one must be positive"),
    (lambda: optim.reduce_on_plateau(rtol=1.5), r"reduce_on_plateau: rtol must be in \[0, 1\]"),
    (lambda: optim.reduce_on_plateau(atol=-1.0),
     r"reduce_on_plateau: atol must be in \[0, inf\), got -1"),
    (lambda: optim.reduce_on_plateau(patience=0),
     r"reduce_on_plateau: patience must be >= 1, got 0"),
    (lambda: optim.reduce_on_plateau(cooldown=-1),
     r"reduce_on_plateau: cooldown must be >= 0, got -1"),
    (lambda: optim.reduce_on_plateau(accumulation_size=0),
     r"reduce_on_plateau: accumulation_size must be >= 1, got 0"),
    (lambda: optim.reduce_on_plateau(min_scale=NAN), r"reduce_on_plateau: min_scale must be finite"),
    (lambda: optim.lookahead(optim.sgd(0.1), 0, 0.5), r"lookahead: sync_period must be >= 1, got 0"),
    (lambda: optim.lookahead(optim.sgd(0.1), 2, 1.5),
     r"lookahead: slow_step_size must be in \[0, 1\], got 1\.5"),
    (lambda: optim.apply_every(0), r"apply_every: k must be >= 1, got 0"),
    (lambda: optim.adopt(-0.1),
     r"adopt: scale_by_learning_rate: learning_rate must be in \[0, inf\), got -0\.1"),
    (lambda: optim.adopt(0.1, b2=1.0), r"adopt: scale_by_adopt: b2 must be in \[0, 1\), got 1"),
    (lambda: optim.ademamix(0.1, b3=1.0),
     r"ademamix: scale_by_ademamix: b3 must be in \[0, 1\), got 1"),
    (lambda: optim.ademamix(0.1, alpha=-1.0),
     r"ademamix: scale_by_ademamix: alpha must be in \[0, inf\), got -1"),
    (lambda: optim.simplified_ademamix(0.1, b1=1.0),
     r"simplified_ademamix: scale_by_simplified_ademamix: b1 must be in \[0, 1\)"),
    (lambda: optim.prodigy(estim_lr0=0.0), r"prodigy: estim_lr0 must be in \(0, inf\), got 0"),
    (lambda: optim.prodigy(beta3=1.0), r"prodigy: beta3 must be in \[0, 1\), got 1"),
    (lambda: optim.prodigy(-1.0), r"prodigy: learning_rate must be in \[0, inf\), got -1"),
    (lambda: optim.rprop(0.1, eta_minus=1.5),
     r"rprop: scale_by_rprop: eta_minus must be in \[0, 1\], got 1\.5"),
    (lambda: optim.rprop(0.1, eta_plus=0.5),
     r"rprop: scale_by_rprop: eta_plus must be in \[1, inf\), got 0\.5"),
    (lambda: optim.rprop(0.1, min_step_size=1.0, max_step_size=0.5),
     r"rprop: scale_by_rprop: min_step_size 1 is above max_step_size 0\.5"),
    (lambda: optim.rprop(-0.1), r"rprop: scale_by_rprop: learning_rate must be in \[0, inf\)"),
    (lambda: optim.optimistic_gradient_descent(NEG),
     r"optimistic_gradient_descent: scale_by_learning_rate: learning_rate must be in"),
    (lambda: optim.optimistic_adam(0.1, b1=1.0),
     r"optimistic_adam: scale_by_adam: b1 must be in \[0, 1\), got 1"),
    (lambda: optim.optimistic_adam_v2(0.1, beta=NAN),
     r"optimistic_adam_v2: scale_by_optimistic_gradient: beta must be finite, got nan"),
    (lambda: optim.polyak_sgd(variant="sps++"),
     r"polyak_sgd: scale_by_polyak: variant must be one of 'sps', 'sps\+', got 'sps\+\+'"),
    (lambda: optim.polyak_sgd(max_learning_rate=-1.0),
     r"polyak_sgd: scale_by_polyak: max_learning_rate must be in \[0, inf\)"),
    (lambda: optim.sm3(0.1, momentum=1.0), r"sm3: scale_by_sm3: b1 must be in \[0, 1\), got 1"),
    (lambda: optim.scale_by_sm3(b2=1.5), r"scale_by_sm3: b2 must be in \[0, 1\], got 1\.5"),
    (lambda: optim.fromage(-0.1), r"fromage: learning_rate must be in \[0, inf\), got -0\.1"),
    (lambda: optim.fromage(0.1, min_norm=-1.0),
     r"fromage: scale_by_trust_ratio: min_norm must be in \[0, inf\)"),
    (lambda: optim.sam(optim.sgd(0.1), optim.sgd(0.1), sync_period=0),
     r"sam: sync_period must be >= 1, got 0"),
]

BAD_TYPES = [  # (constructor, message): TypeError at construction
    (lambda: optim.adam("0.1"),
     r"adam: scale_by_learning_rate: learning_rate must be a number or a scalar array, got str"),
    (lambda: optim.adam(None),
     r"adam: learning_rate must be a number, a scalar array or a schedule, got None"),
    (lambda: optim.sgd(True),
     r"sgd: scale_by_learning_rate: learning_rate must be a number or a scalar array, got bool"),
    (lambda: optim.adam(1e-3, b1=SCHED),
     r"adam: scale_by_adam: b1 must be a number or a scalar array, got a function \(a "
     r"schedule\?\).*inject_hyperparams"),
    (lambda: optim.sgd(0.1, momentum=SCHED),
     r"sgd: trace: decay must be a number .* got a function"),
    (lambda: optim.clip_by_global_norm(SCHED),
     r"clip_by_global_norm: max_norm must be a number .* got a function"),
    (lambda: optim.adam(jnp.asarray(1e-3 + 0j)),
     r"adam: scale_by_learning_rate: learning_rate must have a real numeric dtype, got complex"),
    (lambda: optim.sgd(0.1, momentum=0.9, nesterov="yes"),
     r"sgd: nesterov must be a bool, got str"),
    (lambda: optim.sgd(0.1, nesterov="yes"),  # without momentum too (ignored, but a typo)
     r"sgd: nesterov must be a bool, got str"),
    (lambda: optim.rmsprop(0.1, centered=1), r"rmsprop: centered must be a bool, got int"),
    (lambda: optim.adam(1e-3, mu_dtype=jnp.int32),
     r"adam: scale_by_adam: mu_dtype must be a inexact dtype, got int32"),
    (lambda: optim.accumulate(optim.sgd(0.1), 1.5),
     r"accumulate: every_k must be an int, got float"),
    (lambda: optim.accumulate(optim.sgd(0.1), 4.0),
     r"accumulate: every_k must be an int, got float"),
    (lambda: optim.accumulate(3, 2),
     r"accumulate: opt must be an optimizer \(init, update\), got int"),
    (lambda: optim.chain(optim.sgd(0.1), 3),
     r"chain: argument 1 must be an optimizer \(init, update\), got int"),
    (lambda: optim.masked("adam", {}), r"masked: inner must be an optimizer"),
    (lambda: optim.multi_transform([optim.sgd(0.1)], {}),
     r"multi_transform: transforms must be a dict"),
    (lambda: optim.scale_by_schedule(0.1), r"scale_by_schedule: step_size_fn must be callable"),
    (lambda: optim.lion("1e-3"),
     r"lion: scale_by_learning_rate: learning_rate must be a number or a scalar array"),
    (lambda: optim.lion(None), r"lion: learning_rate must be a number, a scalar array or a "
                               r"schedule, got None"),
    (lambda: optim.lion(1e-3, mu_dtype=jnp.int32),
     r"lion: scale_by_lion: mu_dtype must be a inexact dtype, got int32"),
    (lambda: optim.amsgrad(1e-3, bias_correction_mu=1),
     r"amsgrad: scale_by_amsgrad: bias_correction_mu must be a bool, got int"),
    (lambda: optim.adabelief(1e-3, nesterov="no"),
     r"adabelief: scale_by_belief: nesterov must be a bool, got str"),
    (lambda: optim.radam(1e-3, threshold=SCHED),
     r"radam: scale_by_radam: threshold must be a number .* got a function"),
    (lambda: optim.lars(1.0, nesterov=None), r"lars: trace: nesterov must be a bool"),
    (lambda: optim.adafactor(min_dim_size_to_factor=1.5),
     r"adafactor: scale_by_factored_rms: min_dim_size_to_factor must be an int, got float"),
    (lambda: optim.adafactor(factored=1), r"adafactor: scale_by_factored_rms: factored must be "
                                          r"a bool, got int"),
    (lambda: optim.adafactor(multiply_by_parameter_scale="yes"),
     r"adafactor: multiply_by_parameter_scale must be a bool, got str"),
    (lambda: optim.adafactor(dtype_momentum=jnp.int32, momentum=0.9),
     r"adafactor: ema: accumulator_dtype must be a inexact dtype, got int32"),
    (lambda: optim.muon(0.1, ns_steps=2.0), r"muon: scale_by_muon: ns_steps must be an int"),
    (lambda: optim.muon(0.1, nesterov=1), r"muon: scale_by_muon: nesterov must be a bool"),
    (lambda: optim.muon(0.1, adaptive=None), r"muon: scale_by_muon: adaptive must be a bool"),
    (lambda: optim.muon(0.1, beta=SCHED),
     r"muon: scale_by_muon: beta must be a number .* got a function"),
    (lambda: optim.muon(0.1, mu_dtype=jnp.int8),
     r"muon: scale_by_muon: mu_dtype must be a inexact dtype, got int8"),
    (lambda: optim.schedule_free("sgd", 0.1),
     r"schedule_free: base_optimizer must be an optimizer \(init, update\), got str"),
    (lambda: optim.schedule_free(optim.sgd(0.1), None),
     r"schedule_free: learning_rate must be a number, a scalar array or a schedule .*None"),
    (lambda: optim.schedule_free_adamw(state_dtype=jnp.int32),
     r"schedule_free_adamw: schedule_free: state_dtype must be a inexact dtype, got int32"),
    (lambda: optim.schedule_free_sgd(warmup_steps=2.5),
     r"schedule_free_sgd: warmup_constant_schedule: .*must be an int"),
    (lambda: optim.novograd(0.1, weight_decay=SCHED),
     r"novograd: scale_by_novograd: weight_decay must be a number .* got a function"),
    (lambda: optim.scale_by_novograd(mu_dtype=jnp.int32),
     r"scale_by_novograd: mu_dtype must be a inexact dtype, got int32"),
    (lambda: optim.yogi("0.1"), r"yogi: scale_by_learning_rate: learning_rate must be a number"),
    (lambda: optim.adaptive_grad_clip(0.1, axis=(0, 1.5)),
     r"adaptive_grad_clip: axis must be an int, got float"),
    (lambda: optim.noisy_sgd(0.1, key="k"), r"noisy_sgd: add_noise: key must be"),
    (lambda: optim.signum(0.1, accumulator_dtype=jnp.int32),
     r"signum: ema: accumulator_dtype must be a inexact dtype, got int32"),
    (lambda: optim.scale_by_factored_rms(decay_rate_fn=0.8),
     r"scale_by_factored_rms: decay_rate_fn must be callable"),
    (lambda: optim.adafactor(decay_offset=SCHED),
     r"adafactor: scale_by_factored_rms: step_offset must be a number .* got a function"),
    # round 5
    (lambda: optim.reduce_on_plateau(patience=2.0),
     r"reduce_on_plateau: patience must be an int or an integer scalar array, got float"),
    (lambda: optim.lookahead("sgd", 2, 0.5),
     r"lookahead: fast_optimizer must be an optimizer \(init, update\), got str"),
    (lambda: optim.lookahead(optim.sgd(0.1), 2, 0.5, reset_state=1),
     r"lookahead: reset_state must be a bool, got int"),
    (lambda: optim.apply_every(2.5), r"apply_every: k must be an int or an integer scalar"),
    (lambda: optim.freeze({"a": "yes"}), r"freeze: mask\['a'\] must be a bool, got str"),
    (lambda: optim.selective_transform(optim.sgd(0.1), freeze_mask=lambda p: p),
     r"selective_transform: freeze_mask must be a bool, got function"),
    (lambda: optim.scale_gradient(jnp.ones(2), "x"),
     r"scale_gradient: scale must be a number or a scalar array, got str"),
    (lambda: optim.adopt(0.1, clip_value_fn=0.25),
     r"adopt: scale_by_adopt: clip_value_fn must be callable"),
    (lambda: optim.adopt(0.1, nesterov=1), r"adopt: scale_by_adopt: nesterov must be a bool"),
    (lambda: optim.ademamix(0.1, mu_dtype=jnp.int32),
     r"ademamix: scale_by_ademamix: mu_dtype must be a inexact dtype, got int32"),
    (lambda: optim.prodigy(betas=(0.9,)), r"prodigy: betas must be a pair \(b1, b2\)"),
    (lambda: optim.prodigy(safeguard_warmup=None), r"prodigy: safeguard_warmup must be a bool"),
    (lambda: optim.rprop(SCHED),
     r"rprop: scale_by_rprop: learning_rate must be a number .* got a function"),
    (lambda: optim.optimistic_gradient_descent(0.1, alpha=SCHED),
     r"optimistic_gradient_descent: scale_by_optimistic_gradient: alpha must be a number .* "
     r"got a function"),
    (lambda: optim.optimistic_adam(SCHED),
     r"optimistic_adam: learning_rate must be a number, got a schedule; optimistic_adam_v2"),
    (lambda: optim.sam(optim.sgd(0.1), "adam"),
     r"sam: adv_optimizer must be an optimizer \(init, update\), got str"),
    (lambda: optim.sam(optim.sgd(0.1), optim.sgd(0.1), batch_axis_name=3),
     r"sam: batch_axis_name must be a str or None, got int"),
]


@pytest.mark.parametrize("under_jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("exc,make,match", [(ValueError, *b) for b in BAD_VALUES]
                         + [(TypeError, *b) for b in BAD_TYPES],
                         ids=[m[:70] for _, m in BAD_VALUES + BAD_TYPES])
def test_bad_hyperparameters_raise_at_construction(exc, make, match, under_jit):
    with pytest.raises(exc, match=match):
        jax.jit(make)() if under_jit else make()


_ROW = lambda count: jnp.array([0.1, 0.2, 0.3])  # noqa: E731  (not a scalar)


@pytest.mark.parametrize("under_jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("make, match", [
    (lambda: optim.sgd(_ROW), r"^sgd: scale_by_learning_rate: learning_rate must be a scalar "
                              r"or a schedule of scalars, got a schedule that returns shape "
                              r"\(3,\)"),
    (lambda: optim.adamw(0.1, weight_decay=_ROW),
     r"^adamw: add_decayed_weights: weight_decay must be a scalar or a schedule"),
    (lambda: optim.scale_by_schedule(_ROW), r"^scale_by_schedule: step_size_fn must be a"),
    (lambda: optim.schedule_free_sgd(_ROW), r"schedule_free: learning_rate must be a scalar"),
    (lambda: optim.prodigy(_ROW), r"^prodigy: learning_rate must be a scalar"),
    (lambda: optim.ademamix(0.1, alpha=_ROW), r"^ademamix: scale_by_ademamix: alpha must be"),
    (lambda: optim.momo(_ROW), r"^momo: learning_rate must be a scalar"),
    (lambda: optim.dadapt_adamw(_ROW), r"^dadapt_adamw: learning_rate must be a scalar"),
], ids=["sgd", "adamw-weight_decay", "scale_by_schedule", "schedule_free_sgd", "prodigy",
        "ademamix-alpha", "momo", "dadapt_adamw"])
def test_a_schedule_that_returns_an_array_is_refused_at_the_update(make, match, under_jit):
    """A schedule's value must be a scalar, as a constant must: a (3,) learning rate would
    scale the columns of a (2, 3) update differently (and turn a (3,) leaf's update into
    shape (2, 3) for a (2, 3) rate). Checked on shapes at trace time."""
    params = {"w": jnp.ones((2, 3))}
    opt = make()
    update = jax.jit(opt.update) if under_jit else opt.update
    with pytest.raises(ValueError, match=match):
        update(params, opt.init(params), params, value=jnp.array(1.0))


def test_adafactor_traced_min_dim_size_names_static_args():
    """An int *array* is the caller's choice to keep it in the state: adafactor then
    works eagerly (a concrete array) and says what to do under jit."""
    opt = optim.inject_hyperparams(optim.adafactor)(
        learning_rate=0.1, min_dim_size_to_factor=jnp.array(128))
    params = jnp.ones((2, 3))
    u, _ = opt.update(params, opt.init(params), params)  # eager: a concrete int array
    assert np.all(np.isfinite(u))
    with pytest.raises(TypeError, match=r"adafactor: scale_by_factored_rms: "
                                        r"min_dim_size_to_factor must be a static int "
                                        r"\(it fixes the shapes of the state\), got a "
                                        r"traced array\n  inject_hyperparams: .* "
                                        r"static_args=\('min_dim_size_to_factor',\)"):
        jax.jit(opt.update)(params, opt.init(params), params)


@pytest.mark.parametrize("under_jit", [False, True], ids=["eager", "jit"])
def test_inject_names_static_args_for_an_int_array_the_optimizer_needs_as_an_int(under_jit):
    """L-BFGS's memory_size fixes its state's shapes: given as an integer array, it is
    kept in inject_hyperparams' state and cannot rebuild the optimizer; the error says
    to name it in static_args, which works."""
    params = jnp.ones((2, 3))
    opt = optim.inject_hyperparams(optim.scale_by_lbfgs)(memory_size=jnp.array(4))
    update = jax.jit(opt.update) if under_jit else opt.update
    with pytest.raises(TypeError, match=r"scale_by_lbfgs: memory_size must be an int, got "
                                        r".*\n  inject_hyperparams: memory_size is kept in the "
                                        r"state as an integer array \(as optax keeps it\); "
                                        r"pass static_args=\('memory_size',\)"):
        update(params, opt.init(params), params)
    fixed = optim.inject_hyperparams(optim.scale_by_lbfgs, static_args=("memory_size",))(
        memory_size=4)
    update = jax.jit(fixed.update) if under_jit else fixed.update
    u, _ = update(params, fixed.init(params), params)
    assert np.all(np.isfinite(u))


def test_traced_hyperparameters_are_not_validated():
    """Negative or out-of-range *traced* values are the caller's business: a vmapped
    sweep builds the optimizer with tracers and must not raise."""
    def f(lr, b1):
        opt = optim.adam(lr, b1)
        return opt.update(jnp.ones(2), opt.init(jnp.ones(2)))[0]

    assert jax.jit(f)(-0.1, 0.5).shape == (2,)
    out = jax.vmap(f)(jnp.array([0.1, 0.2]), jnp.array([0.5, 0.9]))
    np.testing.assert_allclose(out, [[-0.1, -0.1], [-0.2, -0.2]], rtol=1e-6)


PARAMS = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
INT_PARAMS = {"w": jnp.ones((2, 3)), "n": jnp.array([1, 1], jnp.int32)}


@pytest.mark.parametrize("under_jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("make", [lambda: optim.adam(0.1), lambda: optim.sgd(0.1),
                                  lambda: optim.accumulate(optim.adam(0.1), 2)],
                         ids=["adam", "sgd", "accumulate"])
def test_integer_params_are_refused(make, under_jit):
    """optax truncates: an Adam step turns [1, 1] into [0, 0]. funcnet names the leaf."""
    opt = make()
    wrap = jax.jit if under_jit else (lambda f: f)
    with pytest.raises(TypeError, match=r"params\['n'\] must have a floating or complex "
                                         r"dtype, got int32 with shape \(2,\)"):
        wrap(opt.init)(INT_PARAMS)
    state = opt.init(PARAMS)
    grads = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
    with pytest.raises(TypeError, match=r"params\['b'\] must have a floating or complex"):
        wrap(opt.update)(grads, state, {"w": PARAMS["w"], "b": jnp.zeros(3, jnp.int32)})
    with pytest.raises(TypeError, match=r"apply_updates: params\['n'\] must have a floating"):
        wrap(optim.apply_updates)(INT_PARAMS, jax.tree_util.tree_map(jnp.zeros_like, INT_PARAMS))


def test_integer_grads_raise_type_error():
    opt = optim.sgd(0.1)
    with pytest.raises(TypeError, match=r"sgd: grads\['b'\] must have a floating or complex "
                                         r"dtype, got int32"):
        opt.update({"w": jnp.ones((2, 3)), "b": jnp.zeros(3, jnp.int32)}, opt.init(PARAMS))


# --------------------------------------------------------- states of another optimizer

OTHER_STATES = [
    ("adam <- sgd", lambda: optim.adam(0.1), lambda: optim.sgd(0.1),
     r"adam: scale_by_adam: opt_state is EmptyState\(\), expected ScaleByAdamState\(count, "
     r"mu, nu\)(.|\n)*opt_state given: PyTreeDef(.|\n)*this optimizer's: PyTreeDef"),
    ("sgd <- adam", lambda: optim.sgd(0.1), lambda: optim.adam(0.1),
     r"sgd: identity: opt_state is ScaleByAdamState\(count, mu, nu\) with arrays, expected "
     r"EmptyState\(\)"),
    ("momentum <- rmsprop", lambda: optim.sgd(0.1, momentum=0.9), lambda: optim.rmsprop(0.1),
     r"sgd: opt_state must be a tuple of 2 states(.|\n)*given: PyTreeDef\(\(CustomNode"),
    ("adamw <- adam", lambda: optim.adamw(0.1), lambda: optim.adam(0.1),
     r"adamw: opt_state must be a tuple of 3 states"),
    ("accumulate <- adam", lambda: optim.accumulate(optim.adam(0.1), 2),
     lambda: optim.adam(0.1),
     r"accumulate: opt_state is tuple (.|\n)*expected MultiStepsState\(mini_step, "
     r"gradient_step, inner_opt_state, acc_grads, skip_state\)"),
    ("amsgrad <- adam", lambda: optim.amsgrad(0.1), lambda: optim.adam(0.1),
     r"amsgrad: scale_by_amsgrad: opt_state is ScaleByAdamState\(count, mu, nu\), expected "
     r"ScaleByAmsgradState\(count, mu, nu, nu_max\)"),
    ("radam <- amsgrad", lambda: optim.radam(0.1), lambda: optim.amsgrad(0.1),
     r"radam: scale_by_radam: opt_state is ScaleByAmsgradState\(count, mu, nu, nu_max\), "
     r"expected ScaleByAdamState\(count, mu, nu\)"),
    ("lion <- adamw", lambda: optim.lion(0.1), lambda: optim.adamw(0.1),
     r"lion: scale_by_lion: opt_state is ScaleByAdamState\(count, mu, nu\), expected "
     r"ScaleByLionState\(count, mu\)"),
    ("inject <- adam", lambda: optim.inject_hyperparams(optim.adam)(0.1),
     lambda: optim.adam(0.1), r"inject_hyperparams: opt_state is tuple"),
]


@pytest.mark.parametrize("under_jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name,make,make_other,match", OTHER_STATES,
                         ids=[o[0] for o in OTHER_STATES])
def test_state_of_another_optimizer_names_both(name, make, make_other, match, under_jit):
    opt, other = make(), make_other()
    grads = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
    update = jax.jit(opt.update) if under_jit else opt.update
    with pytest.raises(ValueError, match=match) as info:
        update(grads, other.init(PARAMS), PARAMS)
    assert isinstance(info.value, optim.StateMismatchError)


def test_optax_state_of_another_optimizer_names_both():
    optax = pytest.importorskip("optax")
    with pytest.raises(ValueError, match=r"adam: scale_by_adam: opt_state is TraceState\(trace\)"):
        optim.adam(0.1).update(PARAMS, optax.sgd(0.1, 0.9).init(PARAMS))


# ------------------------------------------------------------------- tree mismatches


@pytest.mark.parametrize("make", [optim.adam, optim.sgd, optim.momentum, optim.rmsprop,
                                  optim.adagrad, optim.adamw])
def test_grads_tree_mismatch_with_params_shows_both_structures(make):
    opt = make(0.1)
    with pytest.raises(ValueError, match=r"grads tree structure does not match params:\n"
                                         r"  grads: PyTreeDef\(\{'c': \*, 'w': \*\}\)\n"
                                         r"  params: PyTreeDef\(\{'b': \*, 'w': \*\}\)"):
        opt.update({"w": jnp.ones((2, 3)), "c": jnp.zeros(3)}, opt.init(PARAMS), PARAMS)


@pytest.mark.parametrize("make,state_name", [
    (optim.adam, "state.mu"), (optim.momentum, "state.trace"), (optim.rmsprop, "state.nu"),
    (optim.adagrad, "state.sum_of_squares"),
])
def test_grads_tree_mismatch_with_state_without_params(make, state_name):
    opt = make(0.1)
    with pytest.raises(ValueError, match=rf"grads tree structure does not match {state_name}"
                                         r":\n  grads: PyTreeDef\(\[\*, \*\]\)"):
        jax.jit(opt.update)([jnp.ones((2, 3)), jnp.zeros(3)], opt.init(PARAMS))


def test_leaf_shape_mismatch_is_caught():
    opt = optim.adam(0.1)
    with pytest.raises(ValueError, match=r"adam: grads\['b'\] has shape \(1,\), expected \(3,\)"):
        opt.update({"w": jnp.ones((2, 3)), "b": jnp.zeros(1)}, opt.init(PARAMS), PARAMS)
    with pytest.raises(ValueError, match=r"adam: scale_by_adam: grads\['b'\] has shape \(1,\)"):
        opt.update({"w": jnp.ones((2, 3)), "b": jnp.zeros(1)}, opt.init(PARAMS))


def test_accumulate_and_apply_updates_mismatch():
    acc = optim.accumulate(optim.sgd(0.1), 2)
    with pytest.raises(ValueError, match=r"accumulate: grads tree structure does not match "
                                         r"state\.acc_grads"):
        acc.update({"w": jnp.ones((2, 3))}, acc.init(PARAMS))
    with pytest.raises(ValueError, match=r"apply_updates: updates tree structure does not "
                                         r"match params:\n  updates: PyTreeDef"):
        optim.apply_updates(PARAMS, {"w": jnp.ones((2, 3))})


def test_add_decayed_weights_needs_params_and_matching_mask():
    wd = optim.add_decayed_weights(0.1)
    with pytest.raises(ValueError, match=r"add_decayed_weights: update needs params"):
        wd.update(PARAMS, optim.EmptyState())
    masked = optim.add_decayed_weights(0.1, mask={"w": True})
    with pytest.raises(ValueError, match=r"masked: mask tree structure is not a prefix of "
                                         r"params:\n  mask: PyTreeDef\(\{'w': \*\}\)"):
        masked.init(PARAMS)


def test_extra_args_are_accepted_everywhere():
    for opt in (optim.adam(0.1), optim.masked(optim.sgd(0.1), {"w": True, "b": False}),
                optim.accumulate(optim.adam(0.1), 1), optim.apply_if_finite(optim.sgd(0.1), 1),
                optim.inject_hyperparams(optim.sgd)(0.1), optim.scale(2.0), optim.trace(0.5)):
        opt.update(PARAMS, opt.init(PARAMS), PARAMS, loss=jnp.ones(()), unused=1)


@pytest.mark.parametrize("under_jit", [False, True], ids=["eager", "jit"])
def test_trust_ratio_needs_params_and_matching_trees(under_jit):
    wrap = jax.jit if under_jit else (lambda f: f)
    for opt, name in ((optim.scale_by_trust_ratio(), "scale_by_trust_ratio"),
                      (optim.lamb(0.1), "lamb: scale_by_trust_ratio")):
        state = opt.init(PARAMS)
        with pytest.raises(ValueError, match=rf"{name}: update needs params \(got params=None\)"):
            wrap(opt.update)(PARAMS, state)
    opt = optim.scale_by_trust_ratio()
    with pytest.raises(ValueError, match=r"scale_by_trust_ratio: grads tree structure does not "
                                         r"match params"):
        wrap(opt.update)({"w": jnp.ones((2, 3))}, opt.init(PARAMS), PARAMS)
