"""Optimizers as pure state transitions, with optax's protocol, names and states.

::

    opt = funcnet.optim.adam(learning_rate=1e-3)     # float, array or schedule(step)
    opt_state = opt.init(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = funcnet.optim.apply_updates(params, updates)

Every name shared with optax takes optax's arguments (order, defaults, keywords), gives
optax's trajectory and uses optax's state classes and fields, so states move between the
two libraries. (optax's wrappers that compare two states' tree structures in a
``lax.cond``, ``MultiSteps``, ``apply_if_finite``, ``conditionally_transform``,
``conditionally_mask`` and ``lbfgs``'s line search, need optax's classes themselves: give
them ``jax.tree_util.tree_structure(optax_opt.init(params)).unflatten(
jax.tree_util.tree_leaves(state))``. funcnet takes optax's states as they are.)

Named optimizers (:mod:`.aliases`) are ``chain``-s of blocks
(:mod:`.transforms`, :mod:`.adaptive`, :mod:`.adaptive_more`, :mod:`.regularization`);
more named optimizers (Lion, AdaMax, AMSGrad, AdaBelief, RAdam, LAMB, LARS, Adafactor)
and Adan, Yogi, AdaDelta, NovoGrad in :mod:`.aliases_more` (their blocks in
:mod:`.adaptive_extra`), Adafactor's block in :mod:`.factorized`; Muon in
:mod:`.orthogonal`; schedule-free learning (and :func:`eval_params`, the params to
evaluate at) in :mod:`.schedule_free`; small blocks (zero_nans, adaptive_grad_clip,
centralize, scale_by_sign, add_noise) in :mod:`.transforms_more`; ADOPT, AdEMAMix,
simplified AdEMAMix and Prodigy (``optax.contrib``'s) in :mod:`.adaptive_contrib`; Rprop,
optimistic gradient descent and Adam, Polyak's step size, SM3 and Fromage in
:mod:`.classic`; combinators in :mod:`.combine`; wrappers in :mod:`.wrappers`,
:mod:`.accumulate` and :mod:`.wrappers_more` (reduce_on_plateau, lookahead, apply_every,
freeze, selective_transform, keep_params_nonnegative, scale_gradient); SAM and normalize
in :mod:`.sam`; schedules in :mod:`.schedules`. :func:`current_learning_rate` reads the
learning rate the next update will use. optax's remaining wrappers and protocol helpers
(conditionally_transform/mask, named_chain, flatten, tree_map_params, ...) are in
:mod:`.wrappers_extra`, its monitors and per-example clipping in :mod:`.transforms_extra`,
its tree helpers (bias_correction, update_moment, safe_norm, ...) in
:mod:`.transforms_extra_tree` and ``microbatch`` in ``microbatching``; ``optax.tree``'s
pytree helpers (``tree.norm``, ``tree.add_scale``, ``tree.get(state, "count")``, ...) in
:mod:`.tree`, with optax's older ``tree_utils.tree_*`` names in :mod:`.tree_utils`;
``optax.projections``' Euclidean projections (``projection_l2_ball``, ``projection_simplex``,
``projection_box``, ...) in :mod:`.projections` (``from funcnet.optim import projections``).
"""
from funcnet.optim import schedules
from funcnet._describe import describe
from funcnet.optim.accumulate import (
    AccumulateState, MultiSteps, MultiStepsState, accumulate, skip_large_updates,
    skip_not_finite)
from funcnet.optim.aliases import (
    adagrad, adam, adamw, momentum, nadam, nadamw, nesterov, rmsprop, sgd)
from funcnet.optim.aliases_more import (
    adabelief, adadelta, adafactor, adamax, adamaxw, adan, amsgrad, lamb, lars, lion, noisy_sgd,
    novograd, radam, sign_sgd, signum, yogi)
from funcnet.optim.transforms_more import (
    AdaptiveGradClipState, AddNoiseState, ZeroNansState, adaptive_grad_clip, add_noise,
    centralize, scale_by_sign, zero_nans)
from funcnet.optim.adaptive_extra import (
    ScaleByAdaDeltaState, ScaleByAdanState, ScaleByNovogradState, scale_by_adadelta,
    scale_by_adan, scale_by_novograd, scale_by_yogi)
from funcnet.optim.base import (
    EmptyState, Optimizer, StateMismatchError, apply_updates, current_learning_rate,
    incremental_update, OptState, Params, Schedule, Updates)
from funcnet.optim.combine import (
    MaskedNode, MaskedState, MultiTransformState, PartitionState, chain, masked,
    multi_transform, partition)
from funcnet.optim.regularization import (
    ScaleByTrustRatioState, WeightDecaySchedule, add_decayed_weights, clip,
    clip_by_block_rms, clip_by_global_norm, global_norm, scale_by_param_block_rms,
    scale_by_trust_ratio)
from funcnet.optim.factorized import FactoredState, scale_by_factored_rms
from funcnet.optim.schedules import (
    constant, constant_schedule, cosine_decay, cosine_decay_schedule, exponential_decay,
    join_schedules, linear_schedule, piecewise_constant, piecewise_constant_schedule,
    polynomial_schedule)
from funcnet.optim.schedules_compound import (
    cosine_onecycle_schedule, linear_onecycle_schedule, piecewise_interpolate_schedule,
    sgdr_schedule, warmup_constant_schedule, warmup_cosine_decay,
    warmup_cosine_decay_schedule, warmup_exponential_decay_schedule)
from funcnet.optim.adaptive import (
    ScaleByAdagradState, ScaleByAdamState, ScaleByRmsState, ScaleByRmsWithCountState,
    ScaleByRssState, ScaleByRStdDevState, ScaleByRStdDevWithCountState, scale_by_adagrad,
    scale_by_adam, scale_by_rms, scale_by_rss, scale_by_stddev)
from funcnet.optim.adaptive_more import (
    ScaleByAmsgradState, ScaleByBeliefState, ScaleByLionState, scale_by_adamax,
    scale_by_amsgrad, scale_by_belief, scale_by_lion, scale_by_radam)
from funcnet.optim.orthogonal import MuonDimensionNumbers, MuonState, muon, scale_by_muon
from funcnet.optim.schedule_free import (
    ScheduleFreeState, eval_params, schedule_free, schedule_free_adamw,
    schedule_free_eval_params, schedule_free_sgd)
from funcnet.optim.transforms import (
    EmaState, ScaleByScheduleState, TraceState, ema, identity, scale, scale_by_learning_rate,
    scale_by_schedule, set_to_zero, trace)
from funcnet.optim.wrappers import (
    ApplyIfFiniteState, InjectHyperparamsState, InjectStatefulHyperparamsState,
    WrappedScheduleState, apply_if_finite, inject_hyperparams)
from funcnet.optim.wrappers_more import (
    ApplyEvery, LookaheadParams, LookaheadState, NonNegativeParamsState,
    ReduceLROnPlateauState, apply_every, freeze, keep_params_nonnegative, lookahead,
    reduce_on_plateau, scale_gradient, selective_transform)
from funcnet.optim.adaptive_contrib import (
    ProdigyState, ScaleByAdemamixState, ScaleBySimplifiedAdEMAMixState, ademamix, adopt,
    prodigy, scale_by_ademamix, scale_by_adopt, scale_by_simplified_ademamix,
    simplified_ademamix)
from funcnet.optim.classic import (
    ScaleByOptimisticGradientState, ScaleByRpropState, ScaleBySM3State, fromage,
    optimistic_adam, optimistic_adam_v2, optimistic_gradient_descent, polyak_sgd, rprop,
    scale_by_optimistic_gradient, scale_by_polyak, scale_by_rprop, scale_by_sm3, sm3)
from funcnet.optim.sam import NormalizeState, SAMState, normalize, sam
from funcnet.optim.transforms_extra import (
    MonitorState, SnapshotState, measure_with_ema, monitor, normalize_by_update_norm,
    per_example_global_norm_clip, per_example_layer_norm_clip, scale_by_param_block_norm,
    snapshot)
from funcnet.optim.transforms_extra_tree import (
    bias_correction, safe_increment, safe_int32_increment, safe_norm, safe_root_mean_squares,
    update_infinity_moment, update_moment, update_moment_per_elem_norm)
from funcnet.optim.wrappers_extra import (
    AddDecayedWeightsState, ClipByGlobalNormState, ClipState, ConditionallyMaskState,
    ConditionallyTransformState, GradientTransformation, GradientTransformationExtraArgs,
    MaskOrFn, ScalarOrSchedule, ScaleState, ShouldSkipUpdateFunction, TransformInitFn,
    TransformUpdateExtraArgsFn, TransformUpdateFn, WrappedSchedule, conditionally_mask,
    conditionally_transform, flatten, init_empty_state,
    inject_stateful_hyperparams, named_chain, periodic_update, stateless,
    stateless_with_tree_map, tree_map_params, with_extra_args_support)
from funcnet.optim import wrappers_extra_microbatch as microbatching
from funcnet.optim.wrappers_extra_microbatch import microbatch
from funcnet.optim.lbfgs import ScaleByLBFGSState, lbfgs, scale_by_lbfgs
from funcnet.optim.linesearch import (
    BacktrackingLinesearchInfo, ScaleByBacktrackingLinesearchState,
    scale_by_backtracking_linesearch, value_and_grad_from_state)
from funcnet.optim.linesearch_zoom import (
    ScaleByZoomLinesearchState, ZoomLinesearchInfo, scale_by_zoom_linesearch)
from funcnet.optim.contrib_acprop import acprop, scale_by_acprop
from funcnet.optim.contrib_betting import (
    COCOBState, MechanicState, cocob, mechanize, scale_by_cocob)
from funcnet.optim.contrib_distance import (
    DoGState, DoWGState, ScaleByDistanceOverGradientsState, dog, dowg, scale_by_dog,
    scale_by_distance_over_gradients, scale_by_dowg)
from funcnet.optim.contrib_dual import (
    DAdaptAdamWState, MadgradState, dadapt_adamw, madgrad, scale_by_madgrad)
from funcnet.optim.contrib_momo import MomoAdamState, MomoState, momo, momo_adam
from funcnet.optim.complex_valued import (
    SplitRealAndImaginaryArrays, SplitRealAndImaginaryState, split_real_and_imaginary)
from funcnet.optim.contrib_galore import (
    GaLoreDimensionNumbers, GaLoreState, galore, scale_by_galore)
from funcnet.optim.contrib_privacy import (
    DifferentiallyPrivateAggregateState, differentially_private_aggregate, dpsgd)
from funcnet.optim.contrib_sophia import (
    HutchinsonState, SophiaState, hutchinson_estimator_diag_hessian, scale_by_sophia, sophia)
from funcnet.optim import projections, tree, tree_utils

__all__ = [
    # protocol and helpers
    "Optimizer", "EmptyState", "StateMismatchError", "apply_updates", "incremental_update",
    "current_learning_rate", "global_norm", "describe",
    # named optimizers
    "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "nadam", "nadamw",
    "lion", "adamax", "adamaxw", "amsgrad", "adabelief", "radam", "lamb", "lars",
    "adafactor", "muon", "schedule_free_sgd", "schedule_free_adamw", "adan", "yogi",
    "adadelta", "novograd", "sign_sgd", "signum", "noisy_sgd", "adopt", "ademamix",
    "simplified_ademamix", "prodigy", "rprop", "optimistic_gradient_descent",
    "optimistic_adam", "optimistic_adam_v2", "polyak_sgd", "sm3", "fromage",
    "lbfgs", "scale_by_lbfgs", "scale_by_zoom_linesearch",
    "scale_by_backtracking_linesearch", "value_and_grad_from_state",
    # blocks
    "identity", "set_to_zero", "scale", "scale_by_learning_rate", "scale_by_schedule",
    "trace", "ema", "scale_by_adam", "scale_by_rms", "scale_by_stddev", "scale_by_rss",
    "scale_by_adagrad", "clip", "clip_by_global_norm", "add_decayed_weights",
    "scale_by_lion", "scale_by_adamax", "scale_by_amsgrad", "scale_by_belief",
    "scale_by_radam", "scale_by_trust_ratio", "scale_by_factored_rms",
    "scale_by_param_block_rms", "clip_by_block_rms", "scale_by_muon",
    "scale_by_adan", "scale_by_yogi", "scale_by_adadelta", "scale_by_novograd",
    "zero_nans", "adaptive_grad_clip", "centralize", "scale_by_sign", "add_noise",
    "scale_by_adopt", "scale_by_ademamix", "scale_by_simplified_ademamix",
    "scale_by_rprop", "scale_by_optimistic_gradient", "scale_by_polyak", "scale_by_sm3",
    "apply_every", "freeze", "keep_params_nonnegative", "normalize", "scale_gradient",
    # combinators and wrappers
    "chain", "masked", "multi_transform", "partition", "apply_if_finite",
    "inject_hyperparams", "accumulate", "MultiSteps", "skip_not_finite",
    "skip_large_updates", "schedule_free", "schedule_free_eval_params", "eval_params",
    "reduce_on_plateau", "lookahead", "selective_transform", "sam",
    # states
    "TraceState", "EmaState", "ScaleByAdamState", "ScaleByRmsState",
    "ScaleByRmsWithCountState", "ScaleByRStdDevState", "ScaleByRStdDevWithCountState",
    "ScaleByRssState", "ScaleByAdagradState", "ScaleByLionState", "ScaleByAmsgradState",
    "ScaleByBeliefState", "ScaleByTrustRatioState", "FactoredState", "ScaleByScheduleState",
    "WeightDecaySchedule", "MuonState", "MuonDimensionNumbers",
    "ScheduleFreeState", "ScaleByAdanState", "ScaleByAdaDeltaState", "ScaleByNovogradState",
    "ZeroNansState", "AdaptiveGradClipState", "AddNoiseState",
    "ReduceLROnPlateauState", "LookaheadState", "LookaheadParams", "ApplyEvery",
    "NonNegativeParamsState", "ScaleByAdemamixState", "ScaleBySimplifiedAdEMAMixState",
    "ProdigyState", "ScaleByRpropState", "ScaleByOptimisticGradientState",
    "ScaleBySM3State", "NormalizeState", "SAMState",
    "MaskedState", "MaskedNode", "MultiTransformState", "PartitionState",
    "ApplyIfFiniteState", "InjectStatefulHyperparamsState", "InjectHyperparamsState",
    "WrappedScheduleState", "MultiStepsState", "AccumulateState",
    "ScaleByLBFGSState", "ScaleByZoomLinesearchState", "ZoomLinesearchInfo",
    "ScaleByBacktrackingLinesearchState", "BacktrackingLinesearchInfo",
    # schedules
    "schedules", "constant_schedule", "linear_schedule", "polynomial_schedule",
    "piecewise_constant_schedule", "exponential_decay", "cosine_decay_schedule",
    "warmup_constant_schedule", "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule", "join_schedules", "piecewise_interpolate_schedule",
    "linear_onecycle_schedule", "cosine_onecycle_schedule", "sgdr_schedule",
    "constant", "cosine_decay", "warmup_cosine_decay", "piecewise_constant",
]
__all__ += [  # round 6: optax's remaining wrappers, monitors and tree helpers
    "inject_stateful_hyperparams", "periodic_update", "conditionally_mask",
    "conditionally_transform", "named_chain", "with_extra_args_support", "stateless",
    "stateless_with_tree_map", "init_empty_state", "tree_map_params", "flatten",
    "per_example_global_norm_clip", "per_example_layer_norm_clip",
    "normalize_by_update_norm", "scale_by_param_block_norm", "snapshot", "measure_with_ema",
    "monitor", "bias_correction", "update_moment", "update_moment_per_elem_norm",
    "update_infinity_moment", "safe_norm", "safe_root_mean_squares", "safe_increment",
    "safe_int32_increment", "ConditionallyMaskState", "ConditionallyTransformState",
    "SnapshotState", "MonitorState", "GradientTransformation",
    "GradientTransformationExtraArgs", "ScaleState", "ClipState", "ClipByGlobalNormState",
    "AddDecayedWeightsState", "microbatch", "microbatching", "WrappedSchedule",
    "ScalarOrSchedule", "MaskOrFn", "TransformInitFn", "TransformUpdateFn",
    "TransformUpdateExtraArgsFn", "ShouldSkipUpdateFunction",
]
__all__ += [  # round 6: optax.contrib's parameter-free and Polyak-type optimizers
    "dog", "dowg", "cocob", "dadapt_adamw", "mechanize", "momo", "momo_adam", "madgrad",
    "acprop", "scale_by_dog", "scale_by_dowg", "scale_by_distance_over_gradients",
    "scale_by_cocob", "scale_by_madgrad", "scale_by_acprop", "DoGState", "DoWGState",
    "ScaleByDistanceOverGradientsState", "COCOBState", "DAdaptAdamWState",
    "MechanicState", "MomoState", "MomoAdamState", "MadgradState", "sophia",
    "scale_by_sophia", "hutchinson_estimator_diag_hessian", "SophiaState", "HutchinsonState",
]
__all__ += ["tree", "tree_utils"]  # round 6b: optax.tree and optax.tree_utils
__all__ += [  # round 7: optax.contrib's DP-SGD, complex-valued wrapper and GaLore
    "dpsgd", "differentially_private_aggregate", "DifferentiallyPrivateAggregateState",
    "split_real_and_imaginary", "SplitRealAndImaginaryArrays", "SplitRealAndImaginaryState",
    "galore", "scale_by_galore", "GaLoreDimensionNumbers", "GaLoreState",
]
__all__ += ["projections"]  # optax.projections, as a submodule (its names stay there)
