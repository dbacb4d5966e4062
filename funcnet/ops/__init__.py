"""Primitives with hand-written ``jax.custom_vjp`` backward rules.

Every public function here is a ``jax.custom_vjp`` whose backward rule implements the
formula from the notes (see ``docs/formulas.md``), and has a plain-JAX twin of the same
name and signature in :mod:`funcnet.ops.reference`.

Transformations: reverse mode, ``jax.vmap``, ``jax.jit``, ``jax.hessian`` and ``jax.jvp``
of ``jax.grad`` work on the ops directly. Forward mode on the ops themselves
(``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``), which ``custom_vjp`` does not support,
works inside ``with funcnet.ops.reference_mode():``, where every op runs its twin (see
:mod:`funcnet.ops._mode`).

Validation: every op checks its arguments at trace time (types, dtypes, ranks, shapes,
static hyperparameters; ``TypeError`` / ``ValueError`` naming the op and the argument),
and on eager calls also the values it can see (class labels in range, finite array
hyperparameters); under ``jit`` such values are not checked (see each op's docstring).
"""
from funcnet.ops.activations import log_softmax, relu, sigmoid, softmax, tanh
from funcnet.ops.attention import dot_product_attention
from funcnet.ops._attention_block_fns import same_segment
from funcnet.ops.conv import conv2d
from funcnet.ops.conv_transpose import conv_transpose2d
from funcnet.ops.dropout import dropout
from funcnet.ops.linear import affine, matmul
from funcnet.ops.losses import (cross_entropy, multiclass_hinge, safe_softmax_cross_entropy,
                                softmax_cross_entropy,
                                softmax_cross_entropy_with_integer_labels)
from funcnet.ops.smoothing import smooth_labels
from funcnet.ops.losses_ranking import ranking_softmax_loss
from funcnet.ops.sinusoidal import sinusoidal_embedding
from funcnet.ops.losses_fenchel_young import make_fenchel_young_loss
from funcnet.ops.losses_divergence import (generalized_kl_divergence, kl_divergence,
                                           kl_divergence_with_log_targets)
from funcnet.ops.losses_elementwise import (binary_cross_entropy, mean_squared_error,
                                            sigmoid_binary_cross_entropy)
from funcnet.ops.losses_elementwise import sigmoid_focal_loss
from funcnet.ops.losses_regression import (cosine_distance, cosine_similarity, huber_loss,
                                           l2_loss, log_cosh, squared_error)
from funcnet.ops.losses_sequence import ctc_loss
from funcnet.ops.losses_poly import poly_loss_cross_entropy
from funcnet.ops.losses_contrastive import ntxent
from funcnet.ops.losses_margin import (hinge_loss, multiclass_hinge_loss,
                                       multiclass_perceptron_loss, perceptron_loss,
                                       triplet_margin_loss)
from funcnet.ops.normalization import batch_norm
from funcnet.ops.regularization import l2_penalty
from funcnet.ops.pool import avg_pool2d, max_pool2d
from funcnet.ops.resize import resize2d
from funcnet.ops.rnn import rnn
from funcnet.ops.activations_smooth import gelu, leaky_relu, silu, softplus, swish
from funcnet.ops.activations_piecewise import (celu, elu, hard_sigmoid, hard_silu,
                                               hard_swish, hard_tanh, relu6, selu,
                                               sparse_plus, sparse_sigmoid)
from funcnet.ops.activations_soft import glu, log_sigmoid, mish, soft_sign, squareplus
from funcnet.ops.sparsemax import multiclass_sparsemax_loss, sparsemax, sparsemax_loss
from funcnet.ops.losses_dice import (binary_dice_loss, dice_loss,
                                     multiclass_generalized_dice_loss)
from funcnet.ops.embedding import embedding
from funcnet.ops.gated_rnn import gru, lstm
from funcnet.ops.layer_norm import layer_norm, rms_norm
from funcnet.ops.group_norm import group_norm
from funcnet.ops.rotary import rotary_embedding
from funcnet.ops import reference
from funcnet.ops._mode import reference_mode

__all__ = [
    "affine", "batch_norm", "binary_cross_entropy", "cross_entropy", "l2_penalty",
    "log_softmax", "matmul", "mean_squared_error", "multiclass_hinge", "reference", "relu",
    "sigmoid", "sigmoid_binary_cross_entropy", "softmax", "softmax_cross_entropy", "tanh",
    "avg_pool2d", "conv2d", "dropout", "max_pool2d", "reference_mode", "rnn",
]
__all__ += ["dot_product_attention", "same_segment"]
__all__ += ["rotary_embedding"]
__all__ += ["embedding", "gelu", "gru", "layer_norm", "leaky_relu", "lstm",
            "rms_norm", "silu", "softplus", "swish"]
__all__ += ["group_norm"]
__all__ += ["conv_transpose2d"]
__all__ += ["resize2d"]
__all__ += ["cosine_distance", "cosine_similarity", "huber_loss", "kl_divergence",
            "kl_divergence_with_log_targets", "log_cosh", "sigmoid_focal_loss"]
__all__ += ["ctc_loss"]
__all__ += ["generalized_kl_divergence", "hinge_loss", "l2_loss", "multiclass_hinge_loss",
            "multiclass_perceptron_loss", "ntxent", "perceptron_loss", "poly_loss_cross_entropy",
            "softmax_cross_entropy_with_integer_labels", "squared_error",
            "triplet_margin_loss"]
__all__ += ["celu", "elu", "glu", "hard_sigmoid", "hard_silu", "hard_swish", "hard_tanh",
            "log_sigmoid", "mish", "relu6", "selu", "soft_sign", "sparse_plus",
            "sparse_sigmoid", "squareplus"]
__all__ += ["multiclass_sparsemax_loss", "sparsemax", "sparsemax_loss"]
__all__ += ["binary_dice_loss", "dice_loss", "multiclass_generalized_dice_loss"]
__all__ += ["safe_softmax_cross_entropy", "smooth_labels"]
__all__ += ["ranking_softmax_loss"]
__all__ += ["sinusoidal_embedding"]
__all__ += ["make_fenchel_young_loss"]
