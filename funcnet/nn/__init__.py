"""Layers as ``(init, apply)`` pairs over pytrees, initializers and combinators.

The protocol (see :mod:`funcnet.nn.base`)::

    output_shape, params, state = layer.init(key, input_shape)   # one size may be -1
    y, state = layer.apply(params, state, x, key=None, train=False)

Example, the book's CNN (note 003 §7)::

    from funcnet import nn
    model = nn.serial(nn.Conv2D(30, 5), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(),
                      nn.Dense(100), nn.ReLU(), nn.Dense(10))
    out_shape, params, state = model.init(jax.random.PRNGKey(0), (-1, 28, 28, 1))
    logits, state = model.apply(params, state, images)

Branching (stax's combinators; :mod:`funcnet.nn.combinators`), a residual block and one
with a projection shortcut::

    block = nn.serial(nn.Conv2D(16, 3, padding="SAME", use_bias=False), nn.BatchNorm())
    nn.serial(nn.Residual(block), nn.ReLU())
    nn.serial(nn.FanOut(2), nn.parallel(block, nn.Conv2D(16, 1)), nn.FanInSum, nn.ReLU())

Precision: a layer's ``dtype`` is the dtype of its PARAMS (and state), Flax's
``param_dtype``; it computes in the common dtype of its input and params (Flax's
``dtype=None``). There is no separate compute dtype, so Flax's spelling of bfloat16
compute, ``Dense(k, dtype=jnp.bfloat16)``, here makes bfloat16 params (and bfloat16
optimizer moments, and bfloat16 batch-norm running statistics), and bfloat16 params lose
small updates to rounding: one ``adamw(1e-4)`` step left 90% of a bfloat16 ``Dense``
kernel unchanged (4% at ``1e-3``). For bfloat16 compute with float32 master weights,
cast at the call (what ``train.fit(compute_dtype=)`` does); the gradients come back in
float32 through the cast::

    cast = lambda t: jax.tree.map(lambda a: a.astype(jnp.bfloat16), t)
    logits, state = model.apply(cast(params), state, x.astype(jnp.bfloat16), ...)

Inside the ops, the reductions of bfloat16 inputs (norm statistics, softmax and
attention sums, losses) accumulate in float32.
"""
from funcnet._describe import describe
from funcnet.nn import initializers
from funcnet.nn.activations import (CELU, ELU, GELU, GLU, SELU, HardSigmoid, HardSiLU,
                                    HardSwish, HardTanh, LeakyReLU, LogSigmoid, LogSoftmax, Mish,
                                    ReLU, ReLU6, Sigmoid, SiLU, Softmax, Softplus, SoftSign,
                                    SoftCap, SparsePlus, SparseSigmoid, Squareplus, Tanh)
from funcnet.nn.attention import CrossAttention, MultiHeadAttention
from funcnet.nn.side_inputs import DropRest, KeepRest, OnFirst, Select
from funcnet.nn.base import Layer
from funcnet.nn.combinators import (FanInConcat, FanInSum, FanOut, Identity, Residual,
                                    parallel, serial)
from funcnet.nn.conv import Conv1D, Conv2D, Flatten
from funcnet.nn.conv_transpose import ConvTranspose1D, ConvTranspose2D
from funcnet.nn.dense import Dense
from funcnet.nn.dropout import DropPath, Dropout
from funcnet.nn.embedding import Embedding
from funcnet.nn.gated import GRU, LSTM
from funcnet.nn.layer_norm import LayerNorm, RMSNorm
from funcnet.nn.group_norm import GroupNorm, InstanceNorm
from funcnet.nn.memory import Remat, residual_bytes, saved_residuals
from funcnet.nn.normalization import BatchNorm
from funcnet.nn.pooling import (AvgPool1D, AvgPool2D, GlobalAvgPool2D, GlobalMaxPool2D,
                                MaxPool1D, MaxPool2D)
from funcnet.nn.upsample import Resize2D, Upsample2D
from funcnet.nn.recurrent import RNN
from funcnet.nn.sequences import Bidirectional, flip_sequences
from funcnet.nn.packing import segment_positions
from funcnet.nn.positions import PositionEmbedding, SinusoidalPositions
from funcnet.nn.shapes import Reshape, SwapAxes
from funcnet.nn.stack import Repeat
from funcnet.nn.tied import TiedEmbedding
from funcnet.nn.summary import count_params, summary

__all__ = [
    "AvgPool1D", "AvgPool2D", "BatchNorm", "Bidirectional", "Conv1D", "Conv2D", "Dense",
    "DropPath", "Dropout", "Embedding",
    "FanInConcat", "FanInSum", "FanOut", "Flatten", "GELU", "GRU", "GlobalAvgPool2D",
    "GlobalMaxPool2D",
    "Identity", "LSTM", "Layer", "LayerNorm", "LeakyReLU", "LogSoftmax", "MaxPool1D",
    "MaxPool2D", "MultiHeadAttention",
    "CrossAttention", "OnFirst", "KeepRest", "DropRest", "Select",
    "RMSNorm", "RNN", "ReLU", "Remat", "Residual", "SiLU", "Sigmoid", "Softmax", "Softplus",
    "Tanh", "count_params", "initializers", "parallel", "residual_bytes", "saved_residuals",
    "flip_sequences", "serial", "summary", "describe",
    "PositionEmbedding", "Repeat", "Reshape", "SwapAxes", "TiedEmbedding",
]
__all__ += ["GroupNorm", "InstanceNorm"]
__all__ += ["SinusoidalPositions", "segment_positions"]
__all__ += ["CELU", "ELU", "GLU", "HardSigmoid", "HardSiLU", "HardSwish", "HardTanh",
            "LogSigmoid", "Mish", "ReLU6", "SELU", "SoftSign", "SparsePlus", "SparseSigmoid",
            "Squareplus"]
__all__ += ["SoftCap"]
__all__ += ["ConvTranspose1D", "ConvTranspose2D"]
__all__ += ["Resize2D", "Upsample2D"]
