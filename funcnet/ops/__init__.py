"""Primitives with hand-written ``jax.custom_vjp`` backward rules.

Every public function here is a ``jax.custom_vjp`` whose backward rule implements the
formula from the notes (see ``docs/formulas.md``), and has a plain-JAX twin of the same
name and signature in :mod:`funcnet.ops.reference` (use the twin for forward-mode
autodiff, ``jax.jvp``/``jax.jacfwd``, which ``custom_vjp`` does not support).
"""
from funcnet.ops.activations import log_softmax, relu, sigmoid, softmax, tanh
from funcnet.ops.conv import conv2d
from funcnet.ops.dropout import dropout
from funcnet.ops.linear import affine, matmul
from funcnet.ops.losses import cross_entropy, multiclass_hinge, softmax_cross_entropy
from funcnet.ops.losses_elementwise import (binary_cross_entropy, mean_squared_error,
                                            sigmoid_binary_cross_entropy)
from funcnet.ops.normalization import batch_norm
from funcnet.ops.regularization import l2_penalty
from funcnet.ops.pool import avg_pool2d, max_pool2d
from funcnet.ops.rnn import rnn
from funcnet.ops import reference
from funcnet.ops._mode import reference_mode

__all__ = [
    "affine", "batch_norm", "binary_cross_entropy", "cross_entropy", "l2_penalty",
    "log_softmax", "matmul", "mean_squared_error", "multiclass_hinge", "reference", "relu",
    "sigmoid", "sigmoid_binary_cross_entropy", "softmax", "softmax_cross_entropy", "tanh",
    "avg_pool2d", "conv2d", "dropout", "max_pool2d", "reference_mode", "rnn",
]
