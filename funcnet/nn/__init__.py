"""Layers as ``(init, apply)`` pairs over pytrees, initializers and ``serial``.

The protocol (see :mod:`funcnet.nn.base`)::

    output_shape, params, state = layer.init(key, input_shape)   # batch dim may be -1
    y, state = layer.apply(params, state, x, key=None, train=False)

Example, the book's CNN (note 003 §7)::

    from funcnet import nn
    model = nn.serial(nn.Conv2D(30, 5), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(),
                      nn.Dense(100), nn.ReLU(), nn.Dense(10))
    out_shape, params, state = model.init(jax.random.PRNGKey(0), (-1, 28, 28, 1))
    logits, state = model.apply(params, state, images)
"""
from funcnet.nn import initializers
from funcnet.nn.activations import ReLU, Sigmoid, Softmax, Tanh
from funcnet.nn.base import Layer, serial
from funcnet.nn.conv import AvgPool2D, Conv2D, Flatten, MaxPool2D
from funcnet.nn.dense import Dense
from funcnet.nn.dropout import Dropout
from funcnet.nn.memory import Remat, residual_bytes, saved_residuals
from funcnet.nn.normalization import BatchNorm
from funcnet.nn.recurrent import RNN
from funcnet.nn.summary import count_params, summary

__all__ = [
    "AvgPool2D", "BatchNorm", "Conv2D", "Dense", "Dropout", "Flatten", "Layer", "MaxPool2D",
    "RNN", "ReLU", "Remat", "Sigmoid", "Softmax", "Tanh", "count_params", "initializers",
    "residual_bytes", "saved_residuals", "serial", "summary",
]
