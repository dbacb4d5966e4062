"""Plain-JAX twins of every op in :mod:`funcnet.ops` (same names and signatures).

They are differentiated by ``jax.grad``/``jax.jvp`` rather than by a hand-written rule:
the test suite proves each custom backward rule equal to autodiff of its twin, and users
can call them wherever forward-mode autodiff is needed.
"""
from funcnet.ops.reference.core import (affine, batch_norm, binary_cross_entropy,
                                        cross_entropy, l2_penalty, log_softmax, matmul,
                                        mean_squared_error, multiclass_hinge, relu,
                                        safe_softmax_cross_entropy, sigmoid,
                                        sigmoid_binary_cross_entropy, softmax,
                                        softmax_cross_entropy,
                                        softmax_cross_entropy_with_integer_labels, tanh)
from funcnet.ops.reference.attention import dot_product_attention, same_segment
from funcnet.ops.reference.conv import conv2d
from funcnet.ops.reference.conv_transpose import conv_transpose2d
from funcnet.ops.reference.dropout import dropout
from funcnet.ops.reference.pool import avg_pool2d, max_pool2d
from funcnet.ops.reference.resize import resize2d
from funcnet.ops.reference.rnn import rnn
from funcnet.ops.reference.activations_smooth import (gelu, leaky_relu, silu, softplus,
                                                    swish)
from funcnet.ops.reference.activations_more import (celu, elu, glu, hard_sigmoid,
                                                    hard_silu, hard_swish, hard_tanh,
                                                    log_sigmoid, mish, relu6, selu,
                                                    soft_sign, sparse_plus, sparse_sigmoid,
                                                    squareplus)
from funcnet.ops.reference.sparsemax import (multiclass_sparsemax_loss, sparsemax,
                                             sparsemax_loss)
from funcnet.ops.reference.losses_dice import (binary_dice_loss, dice_loss,
                                               multiclass_generalized_dice_loss)
from funcnet.ops.reference.smoothing import smooth_labels
from funcnet.ops.reference.losses_ranking import ranking_softmax_loss
from funcnet.ops.reference.sinusoidal import sinusoidal_embedding
from funcnet.ops.reference.losses_fenchel_young import make_fenchel_young_loss
from funcnet.ops.reference.embedding import embedding
from funcnet.ops.reference.gated_rnn import gru, lstm
from funcnet.ops.reference.layer_norm import layer_norm, rms_norm
from funcnet.ops.reference.group_norm import group_norm
from funcnet.ops.reference.rotary import rotary_embedding
from funcnet.ops.reference.losses import (cosine_distance, cosine_similarity, ctc_loss,
                                          generalized_kl_divergence, hinge_loss,
                                          huber_loss, kl_divergence, l2_loss,
                                          kl_divergence_with_log_targets, log_cosh,
                                          multiclass_hinge_loss, multiclass_perceptron_loss,
                                          ntxent, perceptron_loss, poly_loss_cross_entropy,
                                          sigmoid_focal_loss, squared_error,
                                          triplet_margin_loss)
